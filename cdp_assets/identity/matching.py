"""Probabilistic matching (Splink, DuckDB backend) of person records the deterministic graph left apart.

The matcher is data: each source's `person:` mapping (rules.yaml) says which of its columns hold which person
field (PERSON_FIELDS), and the `matching:` section holds the comparisons and blocking rules (comparisons.py builds
them over the fields the records hold), so nothing here names a source's column. `build_records` writes TEMP
`_match_records` (one row per person-level record, with its deterministic cluster); `train` fits a dedupe model on
whatever that table holds and saves it as JSON with what it was trained on; `score` loads it and scores pairs whose
clusters differ (or, for the chain check, pairs inside one cluster). Splink runs on the caller's connection, so no
data leaves DuckDB, and its working tables live in an in-memory catalog, so none lands in the warehouse file.

The chance that two random records match falls as the number of records grows, so the saved prior is for
REFERENCE_RECORDS records and `score` rescales it to the records of its basis (basis.py, with the term frequencies):
a name shared by two records is weaker evidence among four million records than among ten thousand.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
from splink import DuckDBAPI, Linker, SettingsCreator
from splink.blocking_rule_library import And, CustomRule

from cdp_assets.identity import basis, comparisons, normalise, rules

LOG = logging.getLogger(__name__)
MODEL_PATH = Path(__file__).with_name("splink_model.json")
RECORDS_SQL = Path(__file__).with_name("sql") / "match_records.sql"
NICKNAMES = Path(__file__).with_name("nicknames.csv")
RECORDS_TABLE = "_match_records"
SOURCE_TABLE = "_person_source"
SCRATCH = "_splink_scratch"
# The person fields a source may map (rules.yaml `person:`); email and phone come from identity.identifiers.
PERSON_FIELDS = (
    "first_name", "last_name", "full_name", "date_of_birth", "street_address", "postal_code", "city", "country",
    "company",
)
IDENTIFIER_FIELDS = ("email", "phone")
# The value of each other identifier type a comparison compares (a national id a person file carries), one per record.
COMPARED_IDENTIFIERS_SQL = """
CREATE OR REPLACE TEMP TABLE {records} AS
SELECT m.*, {columns} FROM {records} m LEFT JOIN (
    SELECT stream || ':' || record_id AS unique_id, {pivot}
    FROM identity.identifiers WHERE list_contains($types, id_type) GROUP BY ALL
) i USING (unique_id)
"""
TRAINED_ON = "trained_on"  # the model's record of its training data; Splink's loader never sees it
REFERENCE_RECORDS = 1_000_000
U_SAMPLE_PAIRS = 1e7
EM_MAX_PAIRS = 5e6  # per EM session: enough to estimate m, and memory stays flat as records grow
EM_PROBE_SHARE = 0.1  # of records, probed to size an EM session (Splink's 1% finds no pair in a small warehouse)
EM_MIN_PAIRS = 10  # an EM session on fewer pairs estimates nothing
MAX_PRIOR = 0.5  # before any evidence, a pair is no likelier one person than two, however few the records
# Two records of one person disagreeing on a field (a locale read as a country, a mistyped postcode, a move) is
# rarer than agreeing, never proof of two people: EM can drive that m towards 0 when training pairs never show it.
ELSE_M_FLOOR = 0.01
PRIOR_ROUNDS = 50
PRIOR_TOLERANCE = 1e-4
SEED = 42
SIGNIFICANT_DIGITS = 6  # of the saved probabilities


def person_source_sql(identity_rules: rules.Rules, within: str | None = None) -> tuple[str, dict[str, str]]:
    """TEMP `_person_source`: each person source's mapped fields (NULL where it maps none), as text; of the records
    in the relation `within` (stream, record_id) alone, when given."""
    selects, params = [], {}
    for i, source in enumerate(s for s in identity_rules.sources if s.person):
        if unknown := set(source.person) - set(PERSON_FIELDS):
            raise ValueError(f"{source.stream}: unknown person fields {sorted(unknown)}; known: {PERSON_FIELDS}")
        params[f"stream_{i}"] = source.stream
        fields = ", ".join(f"CAST(({source.person.get(name, 'NULL')}) AS VARCHAR) AS {name}" for name in PERSON_FIELDS)
        where = f" WHERE CAST({source.key} AS VARCHAR) IN (SELECT record_id FROM {within} WHERE stream = $stream_{i})"
        selects.append(f"SELECT $stream_{i} AS stream, CAST({source.key} AS VARCHAR) AS record_id, {fields} "
                       f"FROM {source.table}" + (where if within else ""))
    return f"CREATE OR REPLACE TEMP TABLE {SOURCE_TABLE} AS\n" + "\nUNION ALL\n".join(selects), params


def person_text_macro() -> str:
    """The SQL creating `person_text(x)`, the one normal form of a name, address, city or company (its comment in
    match_records.sql says what it does)."""
    return RECORDS_SQL.read_text().split(";\n\n")[0]


def compared_identifiers(identity_rules: rules.Rules) -> list[str]:
    """Identifier types beyond email and phone that a comparison of the matcher names and a source carries: the
    matcher's records hold them as they are normalised in identity.identifiers."""
    carried = {id_type for source in identity_rules.sources for id_type in source.identifiers} - set(IDENTIFIER_FIELDS)
    texts = [json.dumps(spec) for spec in identity_rules.matcher.comparisons]
    return sorted(set().union(*(comparisons.fields_in(text, carried) for text in texts)))


def build_records(conn: duckdb.DuckDBPyConnection, identity_rules: rules.Rules | None = None) -> int:
    """Write TEMP `_match_records` for the records in TEMP `_record_clusters`, from the person sources of
    `identity_rules` (default: rules.yaml's; a person file is one such source) and the identifiers the matcher
    compares (email, phone and `compared_identifiers`); returns its row count."""
    identity_rules = identity_rules or rules.load()
    source_sql, params = person_source_sql(identity_rules, "_record_clusters")
    conn.execute(source_sql, params)
    hints = conn.execute(f"SELECT DISTINCT trim(country) FROM {SOURCE_TABLE}").fetchall()
    codes = {hint: code for (hint,) in hints if hint and (code := normalise.region_hint(hint))}
    conn.execute(person_text_macro())
    params = {"country_hints": list(codes), "country_codes": list(codes.values()), "nicknames": str(NICKNAMES)}
    conn.execute(RECORDS_SQL.read_text().split(";\n\n")[1], params)
    conn.execute(f"DROP TABLE {SOURCE_TABLE}")
    if compared := compared_identifiers(identity_rules):
        types = {f"type_{i}": id_type for i, id_type in enumerate(compared)}
        pivot = ", ".join(f'min(value) FILTER (WHERE id_type = ${key}) AS "{t}"' for key, t in types.items())
        columns = ", ".join(f'i."{id_type}"' for id_type in compared)
        conn.execute(COMPARED_IDENTIFIERS_SQL.format(records=RECORDS_TABLE, columns=columns, pivot=pivot),
                     {"types": compared, **types})
    return record_count(conn)


def train_from_warehouse(
    conn: duckdb.DuckDBPyConnection, model_path: Path = MODEL_PATH, trained_on: dict[str, Any] | None = None,
    identity_rules: rules.Rules | None = None,
) -> int:
    """Retrain from the staging tables and identity.identifiers of `identity_rules`' sources (default: rules.yaml's;
    for `cdp identity train`, and `cdp identity link` on a person file).

    Training ignores clusters, so unless the graph made `_record_clusters` each record is its own.
    Returns the number of records trained on."""
    identity_rules = identity_rules or rules.load()
    conn.execute(
        "CREATE TEMP TABLE IF NOT EXISTS _record_clusters AS "
        "SELECT stream, record_id, row_number() OVER (ORDER BY stream, record_id)::BIGINT AS cluster_id "
        "FROM (SELECT DISTINCT stream, record_id FROM identity.identifiers WHERE list_contains($streams, stream))",
        {"streams": identity_rules.person_streams},
    )
    records = build_records(conn, identity_rules)
    train(conn, model_path, {"source": "warehouse", **(trained_on or {})})
    return records


def train(conn: duckdb.DuckDBPyConnection, model_path: Path = MODEL_PATH, trained_on: dict[str, Any] | None = None
          ) -> None:
    """Fit the model on `_match_records` and save it to `model_path`, with `trained_on` (where the records came
    from: source, seed, hardness...) completed by their count, the fields used, the date and the seconds taken.

    u comes from random pairs, m from EM sessions over several blocking rules (each learns the comparisons its rule
    does not use), and the prior from the model itself (`_prior`), so no shared identifier is needed. Term
    frequencies may only lower a level's weight: a common name counts for less than the average name, a rare one no
    more. Never raises for lack of pairs: what cannot be estimated keeps Splink's starting values. Train on the
    biggest data at hand: in a small set, random pairs hold true matches, which inflates u."""
    started = time.monotonic()
    records = record_count(conn)
    matcher = comparisons.build(conn, rules.load().matcher, RECORDS_TABLE)
    start = min(1 / max(records - 1, 1), MAX_PRIOR)  # each record matching about one other
    settings = SettingsCreator(link_type="dedupe_only", comparisons=matcher.comparisons,
                               blocking_rules_to_generate_predictions=matcher.blocking,
                               probability_two_random_records_match=start)
    with scratch(conn):
        linker = make_linker(conn, settings)
        if records >= 2 and matcher.comparisons:
            linker.training.estimate_u_using_random_sampling(max_pairs=U_SAMPLE_PAIRS, seed=SEED)
            for rule in matcher.training:
                if _pairs(conn, rule) >= EM_MIN_PAIRS and _learns(matcher, rule):
                    linker = _expectation_maximisation(conn, linker, rule)
        model = linker.misc.save_model_to_json()
        prior = _prior(linker, records, start) if records >= 2 and matcher.blocking and matcher.comparisons else None
    # Saved for REFERENCE_RECORDS records; with no pair to estimate it from, each record matching about one other.
    model["probability_two_random_records_match"] = (
        prior * (records - 1) / (REFERENCE_RECORDS - 1) if prior is not None else 1 / (REFERENCE_RECORDS - 1)
    )
    model.pop("linker_uid")  # random per run; Splink makes one when loading
    model["blocking_rules_to_generate_predictions"] = []  # `score` takes them from the rules
    for level in (level for comparison in model["comparisons"] for level in comparison["comparison_levels"]):
        if "tf_adjustment_column" in level and "u_probability" in level:  # a rare value is a small sample
            level["tf_minimum_u_value"] = level["u_probability"]
        if level["sql_condition"] == "ELSE" and "m_probability" in level:
            level["m_probability"] = max(level["m_probability"], ELSE_M_FLOOR)
        for key in ("m_probability", "u_probability", "tf_minimum_u_value"):
            if key in level:  # parallel sums differ in the last digits from run to run
                level[key] = float(f"{level[key]:.{SIGNIFICANT_DIGITS}g}")
    model[TRAINED_ON] = {
        **(trained_on or {}), "records": records, "fields": matcher.fields, "prior": prior,
        "date": time.strftime("%Y-%m-%d"), "seconds": round(time.monotonic() - started, 1),
    }
    model_path.write_text(json.dumps(model, indent=1) + "\n")


def _expectation_maximisation(conn: duckdb.DuckDBPyConnection, linker: Linker, rule: Any) -> Linker:
    """One EM session. One Splink cannot finish (a level whose m falls to exactly 0.0 in it, which Splink then
    refuses to store) is skipped: the model goes on from the values before it, on a linker of its own."""
    before = linker.misc.save_model_to_json()
    try:
        linker.training.estimate_parameters_using_expectation_maximisation(
            rule, max_pairs=EM_MAX_PAIRS, record_sample_proportion=EM_PROBE_SHARE
        )
    except ValueError as error:
        LOG.warning("EM session blocked on %s skipped: %s", rule.get_blocking_rule("duckdb").blocking_rule_sql, error)
        return make_linker(conn, before)
    return linker


def _pairs(conn: duckdb.DuckDBPyConnection, rule: Any) -> int:
    """How many pairs a blocking rule makes of `_match_records`."""
    condition = rule.get_blocking_rule("duckdb").blocking_rule_sql
    return conn.execute(
        f"SELECT count(*) FROM {RECORDS_TABLE} l JOIN {RECORDS_TABLE} r ON {condition} AND l.unique_id < r.unique_id"
    ).fetchall()[0][0]


def _learns(matcher: comparisons.Matcher, rule: Any) -> bool:
    """Whether an EM session on `rule` has a comparison to learn: one not over the fields the rule blocks on."""
    blocked = comparisons.fields_in(rule.get_blocking_rule("duckdb").blocking_rule_sql, set(matcher.fields))
    return any(
        not comparisons.fields_in(json.dumps(c.get_comparison("duckdb").as_dict()), set(matcher.fields)) & blocked
        for c in matcher.comparisons
    )


def _prior(linker: Linker, records: int, start: float) -> float:
    """The chance two random records match: the expected number of matches among the blocked pairs, under the
    trained m and u, over all pairs; repeated to a fixed point, as each pair's probability depends on the prior.

    A lower bound (true pairs no blocking rule finds are not counted), so the model errs cautious; it needs no
    shared identifier, where Splink's deterministic estimate needs rules that only true pairs meet and their
    recall, which no data of unknown shape tells."""
    weights = linker.inference.predict(warning_mode="never").as_duckdbpyrelation()
    bayes = weights.select(f"match_weight - log2({start} / (1 - {start})) AS log2_bf")
    all_pairs = records * (records - 1) / 2
    prior = start
    for _ in range(PRIOR_ROUNDS):
        odds = prior / (1 - prior)
        expected = bayes.aggregate(f"coalesce(sum(1 / (1 + pow(2, -log2_bf) / {odds})), 0)").fetchall()[0][0]
        updated = min(max(expected, 1e-9 * all_pairs) / all_pairs, MAX_PRIOR)
        if math.isclose(updated, prior, rel_tol=PRIOR_TOLERANCE):
            return updated
        prior = updated
    return prior


def score(conn: duckdb.DuckDBPyConnection, review_at: float, model_path: Path = MODEL_PATH,
          within_clusters: bool = False) -> pd.DataFrame:
    """Pairs of `_match_records` with probability >= `review_at`, most likely first: pairs in different clusters,
    or with `within_clusters` the pairs inside one cluster (clusters are small: every pair of each is scored), on the
    basis `basis.load` or `basis.count` left.

    Columns: unique_id_l, unique_id_r, probability, match_weight."""
    model = saved_model(conn, model_path, basis.records(conn))
    if within_clusters:
        model["blocking_rules_to_generate_predictions"] = [CustomRule("l.cluster_id = r.cluster_id")]
        # The identifiers chaining a cluster's records are the evidence a random pair lacks: its pairs start at
        # even odds, so the person fields alone decide, and the check does not grow stricter as records grow.
        model["probability_two_random_records_match"] = MAX_PRIOR
    else:
        matcher = comparisons.build(conn, rules.load().matcher, RECORDS_TABLE)
        cross = CustomRule("l.cluster_id <> r.cluster_id")
        model["blocking_rules_to_generate_predictions"] = [And(rule, cross) for rule in matcher.blocking]
    if not model["blocking_rules_to_generate_predictions"] or not model["comparisons"]:
        return pd.DataFrame(columns=["unique_id_l", "unique_id_r", "probability", "match_weight"])
    with scratch(conn):
        api = DuckDBAPI(connection=conn)
        # The settings are the saved model, less the comparisons over missing columns (saved_model): checking them
        # again on every call (Splink parses each SQL condition) was a fixed cost of each scoring, not a check.
        linker = Linker(api.register(RECORDS_TABLE), model, log_level=logging.WARNING, validate_settings=False)
        for column in {level["tf_adjustment_column"] for c in model["comparisons"] for level in c["comparison_levels"]
                       if "tf_adjustment_column" in level}:
            lookup = api.register(basis.frequencies(conn, column))
            linker.table_management.register_term_frequency_lookup(lookup, column)
        predictions = linker.inference.predict(threshold_match_probability=review_at, warning_mode="never")
        return (
            predictions.as_duckdbpyrelation()
            .select("unique_id_l, unique_id_r, match_probability AS probability, match_weight")
            .order("probability DESC, unique_id_l, unique_id_r")
            .df()
        )


def saved_model(conn: duckdb.DuckDBPyConnection, model_path: Path = MODEL_PATH, records: int | None = None
                ) -> dict[str, Any]:
    """The saved model as Splink loads it (without `trained_on`), its prior rescaled to `records` (by default the
    records in `_match_records`), and without comparisons over columns that table lacks."""
    model = json.loads(model_path.read_text())
    model.pop(TRAINED_ON, None)
    records = record_count(conn) if records is None else records
    rescaled = model["probability_two_random_records_match"] * (REFERENCE_RECORDS - 1) / max(records - 1, 1)
    model["probability_two_random_records_match"] = min(rescaled, MAX_PRIOR)
    columns, _ = comparisons.table_fields(conn, RECORDS_TABLE)
    model["comparisons"] = [
        c for c in model["comparisons"]
        if all(comparisons.pair_fields(level["sql_condition"].replace('"', "")) <= columns
               for level in c["comparison_levels"] if level["sql_condition"] != "ELSE")
    ]
    return model


def make_linker(
    conn: duckdb.DuckDBPyConnection, settings: SettingsCreator | dict[str, Any], table: str = RECORDS_TABLE
) -> Linker:
    return Linker(DuckDBAPI(connection=conn).register(table), settings, log_level=logging.WARNING)


def record_count(conn: duckdb.DuckDBPyConnection) -> int:
    return conn.execute(f"SELECT count(*) FROM {RECORDS_TABLE}").fetchall()[0][0]


@contextmanager
def scratch(conn: duckdb.DuckDBPyConnection) -> Iterator[None]:
    """Make an in-memory catalog the default while Splink runs, so its tables vanish with it."""
    database, schema = conn.execute("SELECT current_database(), current_schema()").fetchall()[0]
    conn.execute(f"ATTACH ':memory:' AS {SCRATCH} (READ_WRITE)")  # writable under a read-only warehouse too
    conn.execute(f"USE {SCRATCH}")
    try:
        yield
    finally:
        conn.execute(f'USE "{database}"."{schema}"')
        conn.execute(f"DETACH {SCRATCH}")

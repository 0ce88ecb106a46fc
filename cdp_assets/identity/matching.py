"""Probabilistic matching (Splink, DuckDB backend) of person records the deterministic graph left apart.

`build_records` writes TEMP `_match_records` (one row per person-level record, with its deterministic
cluster); `train` fits a dedupe model on it and saves it as JSON; `score` loads that model and scores
only pairs whose clusters differ. Splink runs on the caller's connection, so no data leaves DuckDB,
and its working tables live in an in-memory catalog, so none lands in the warehouse file.

The chance that two random records match falls as the number of records grows, so the saved prior
is for REFERENCE_RECORDS records and `score` rescales it to the records it scores: a name shared by
two records is weaker evidence among four million records than among ten thousand.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import splink.comparison_level_library as cll
import splink.comparison_library as cl
from splink import DuckDBAPI, Linker, SettingsCreator, block_on
from splink.blocking_rule_library import And, CustomRule

from cdp_assets.identity import normalise

MODEL_PATH = Path(__file__).with_name("splink_model.json")
RECORDS_SQL = Path(__file__).with_name("sql") / "match_records.sql"
RECORDS_TABLE = "_match_records"
SCRATCH = "_splink_scratch"
STREAMS = {
    "stripe": "stripe.customers",
    "hubspot": "hubspot.contacts",
    "zendesk": "zendesk.users",
    "klaviyo": "klaviyo.profiles",
}
# Per staging table, the expression holding a country as an ISO code, a locale or an English name.
COUNTRY_HINTS = {
    "staging.stripe__customers": "address_country",
    "staging.hubspot__contacts": "country",
    "staging.zendesk__users": "locale",
    "staging.klaviyo__profiles": "coalesce(country, locale)",
}
REFERENCE_RECORDS = 1_000_000
# Share of true matching pairs that share an email or a phone (0.76 in the sandbox world).
DETERMINISTIC_RECALL = 0.75
U_SAMPLE_PAIRS = 1e7
EM_MAX_PAIRS = 5e6  # per EM session: enough to estimate m, and memory stays flat as records grow
EM_PROBE_SHARE = 0.1  # of records, probed to size an EM session (Splink's 1% finds no pair in a small warehouse)
SEED = 42
SIGNIFICANT_DIGITS = 6  # of the saved probabilities
MIN_DOMAIN_SLUG = 4  # a shorter email domain name starts too many company names


def build_records(conn: duckdb.DuckDBPyConnection) -> int:
    """Write TEMP `_match_records` for the records in TEMP `_record_clusters`; returns its row count."""
    hints = conn.execute(
        " UNION ".join(f"SELECT DISTINCT trim({expr}) FROM {table}" for table, expr in COUNTRY_HINTS.items())
    ).fetchall()
    codes = {hint: code for (hint,) in hints if hint and (code := normalise.region_hint(hint))}
    conn.execute(
        RECORDS_SQL.read_text(), {**STREAMS, "country_hints": list(codes), "country_codes": list(codes.values())}
    )
    return record_count(conn)


def train_from_warehouse(conn: duckdb.DuckDBPyConnection, model_path: Path = MODEL_PATH) -> int:
    """Retrain from the warehouse's staging tables and identity.identifiers (for `cdp identity train`).

    Training ignores clusters, so unless the graph made `_record_clusters` each record is its own.
    Returns the number of records trained on."""
    conn.execute(
        "CREATE TEMP TABLE IF NOT EXISTS _record_clusters AS "
        "SELECT stream, record_id, row_number() OVER (ORDER BY stream, record_id)::BIGINT AS cluster_id "
        "FROM (SELECT DISTINCT stream, record_id FROM identity.identifiers WHERE list_contains($streams, stream))",
        {"streams": list(STREAMS.values())},
    )
    records = build_records(conn)
    train(conn, model_path)
    return records


def train(conn: duckdb.DuckDBPyConnection, model_path: Path = MODEL_PATH) -> None:
    """Fit the model on `_match_records` and save it to `model_path`.

    The prior comes from pairs sharing an email or a phone, u from random pairs, and m by EM on
    pairs sharing a name (for the identifiers' m) and on pairs sharing an identifier (for the rest).
    Term frequencies may only lower a level's weight: a common name counts for less than the
    average name, a rare one no more. Train on the biggest warehouse at hand: in a small one,
    random pairs hold true matches, which inflates u and makes the model cautious."""
    records = record_count(conn)
    with scratch(conn):
        linker = make_linker(conn, SettingsCreator(link_type="dedupe_only", comparisons=_comparisons()))
        linker.training.estimate_probability_two_random_records_match(
            [block_on("email"), block_on("phone")], recall=DETERMINISTIC_RECALL
        )
        linker.training.estimate_u_using_random_sampling(max_pairs=U_SAMPLE_PAIRS, seed=SEED)
        for rule in (block_on("full_name"), block_on("email"), block_on("phone")):
            linker.training.estimate_parameters_using_expectation_maximisation(
                rule, max_pairs=EM_MAX_PAIRS, record_sample_proportion=EM_PROBE_SHARE
            )
        model = linker.misc.save_model_to_json()
    model["probability_two_random_records_match"] *= (records - 1) / (REFERENCE_RECORDS - 1)
    model.pop("linker_uid")  # random per run; Splink makes one when loading
    for level in (level for comparison in model["comparisons"] for level in comparison["comparison_levels"]):
        if "tf_adjustment_column" in level:  # a value few records share is a small sample, not proof of rarity
            level["tf_minimum_u_value"] = level["u_probability"]
        for key in ("m_probability", "u_probability", "tf_minimum_u_value"):
            if key in level:  # parallel sums differ in the last digits from run to run
                level[key] = float(f"{level[key]:.{SIGNIFICANT_DIGITS}g}")
    model_path.write_text(json.dumps(model, indent=1) + "\n")


def score(conn: duckdb.DuckDBPyConnection, review_at: float, model_path: Path = MODEL_PATH) -> pd.DataFrame:
    """Pairs of `_match_records` in different clusters with probability >= `review_at`, most likely first.

    Columns: unique_id_l, unique_id_r, probability, match_weight."""
    model = saved_model(conn, model_path)
    model["blocking_rules_to_generate_predictions"] = list(BLOCKING_RULES)
    with scratch(conn):
        predictions = make_linker(conn, model).inference.predict(
            threshold_match_probability=review_at, warning_mode="never"
        )
        return (
            predictions.as_duckdbpyrelation()
            .select("unique_id_l, unique_id_r, match_probability AS probability, match_weight")
            .order("probability DESC, unique_id_l, unique_id_r")
            .df()
        )


def saved_model(conn: duckdb.DuckDBPyConnection, model_path: Path = MODEL_PATH) -> dict[str, Any]:
    """The saved model, its prior rescaled to the records in `_match_records`."""
    model = json.loads(model_path.read_text())
    model["probability_two_random_records_match"] *= (REFERENCE_RECORDS - 1) / max(record_count(conn) - 1, 1)
    return model


def _comparisons() -> list[cl.CustomComparison]:
    """Name, email, phone, place and employer; exact levels carry term frequencies where values repeat.

    Email local parts are left out: they repeat the name, so they would count it twice. The employer
    is known from a company name or a work email domain naming it."""
    name = cl.CustomComparison(
        output_column_name="name",
        comparison_levels=[
            cll.NullLevel("full_name"),
            cll.ExactMatchLevel("full_name", term_frequency_adjustments=True),
            cll.And(cll.JaroWinklerLevel("first_name", 0.92), cll.JaroWinklerLevel("last_name", 0.92)),
            cll.ElseLevel(),
        ],
    )
    works_at = " OR ".join(
        f"(starts_with(company_slug_{a}, domain_slug_{b}) AND length(domain_slug_{b}) >= {MIN_DOMAIN_SLUG})"
        for a, b in (("l", "r"), ("r", "l"))
    )
    employer = cl.CustomComparison(
        output_column_name="employer",
        comparison_levels=[
            cll.CustomLevel(
                f"(company_slug_l IS NULL OR company_slug_r IS NULL) AND NOT coalesce({works_at}, false)"
            ).configure(is_null_level=True, label_for_charts="unknown"),
            cll.ExactMatchLevel("company_slug", term_frequency_adjustments=True),
            cll.CustomLevel(works_at, label_for_charts="work email at the other's company"),
            cll.ElseLevel(),
        ],
    )
    place = cl.CustomComparison(
        output_column_name="place",
        comparison_levels=[
            cll.NullLevel("country"),
            cll.And(cll.ExactMatchLevel("city"), cll.ExactMatchLevel("country")).configure(
                tf_adjustment_column="city", disable_tf_exact_match_detection=True, label_for_charts="same city"
            ),
            cll.CustomLevel(
                "country_l = country_r AND (city_l IS NULL OR city_r IS NULL)", label_for_charts="same country"
            ),
            cll.CustomLevel("country_l = country_r", label_for_charts="same country, other city"),
            cll.ElseLevel(),
        ],
    )
    return [name, cl.ExactMatch("email"), cl.ExactMatch("phone"), place, employer]


def _cross_cluster(*columns: str, also: str | None = None) -> And:
    """Candidate pairs: records equal on `columns` (and meeting `also`) in different deterministic clusters."""
    rules = [block_on(*columns), CustomRule("l.cluster_id <> r.cluster_id")]
    return And(*rules, *([CustomRule(also)] if also else []))


# Pairs in different cities never score near review_at, so names are compared within a city unless
# one record has none; the typo rules keep a name's first letter, which typos leave alone.
BLOCKING_RULES = (
    _cross_cluster("full_name", "city"),
    _cross_cluster("full_name", "country", also="(l.city IS NULL OR r.city IS NULL)"),
    _cross_cluster("last_name", "substr(first_name, 1, 1)", "city"),
    _cross_cluster("first_name", "substr(last_name, 1, 1)", "city"),
    _cross_cluster("phone"),
)


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

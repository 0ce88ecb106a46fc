"""The matcher's basis: what a pair's score rests on besides the model and the pair's own two records.

How common each value is among people (its term frequency: the share of people, as the graph's deterministic
components, carrying it) and how many person records there are (the model's prior is rescaled to them). A rebase
counts them (the nightly run, a first build, a new model, rules or normal form of the records) and keeps them in
the warehouse; the runs between rebases score on the kept basis, as RudderStack's ID stitcher runs incrementally
between rebases. A pair so scores the same whatever else changed in the warehouse since the rebase, which a graph
updated only where it changed needs in order to equal one rebuilt from scratch on the same basis; the nightly
comparison rebuilds on it.

Counted over the deterministic components, the frequencies are one lookup for every scoring pass of a run; on the
20,000-person evaluation world, pair precision and recall are the same as with each pass counting its own clusters.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import duckdb
import pandas as pd

from cdp_assets.identity import rules
from cdp_assets.warehouse_access import has_tables

KEPT = "identity.match_basis"  # one row: the records counted, `fingerprint`, the rebase's run_id and time
KEPT_FREQUENCIES = "identity.match_frequencies"  # column_name, value (as text), tf
RECORDS = "_basis"  # TEMP: this run's basis, kept or counted
FREQUENCIES = "_basis_frequencies"  # TEMP
MATCH_RECORDS = "_match_records"  # matching.RECORDS_TABLE, the records counted
# How common a value is among people, not records: the clusters a value appears in, so that one person's own
# records sharing their name (or address) do not make it look common and weigh it down. A value in fewer than
# MIN_CLUSTERS clusters is carried by no more than the pair being compared, which says nothing of how common it is:
# it keeps the level's trained u (in a small warehouse every value would otherwise look common).
MIN_CLUSTERS = 3
COUNT_SQL = """
INSERT INTO _basis_frequencies
SELECT $column, CAST("{column}" AS VARCHAR), tf FROM (
    SELECT "{column}", count(DISTINCT cluster_id) AS clusters, clusters / sum(clusters) OVER () AS tf
    FROM _match_records WHERE "{column}" IS NOT NULL GROUP BY "{column}"
) WHERE clusters >= $min_clusters
"""
TABLES_SQL = f"""
CREATE TABLE IF NOT EXISTS {KEPT} (records BIGINT, model VARCHAR, run_id VARCHAR, rebased_at TIMESTAMPTZ);
CREATE TABLE IF NOT EXISTS {KEPT_FREQUENCIES} (column_name VARCHAR, value VARCHAR, tf DOUBLE);
"""


# What a kept basis was counted under besides the model: the rules (matcher, person mappings, compared identifiers),
# the records' normal form and the nickname table. A change to any of them is a rebase.
PREPARED_BY = (rules.RULES_FILE, Path(__file__).with_name("sql") / "match_records.sql",
               Path(__file__).with_name("nicknames.csv"))


def fingerprint(model_path: Path) -> str:
    digest = hashlib.sha256(f"{MIN_CLUSTERS}".encode())
    for path in (model_path, *PREPARED_BY):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def frequency_columns(model_path: Path) -> list[str]:
    """The columns the model adjusts by term frequency."""
    model = json.loads(model_path.read_text())
    return sorted({level["tf_adjustment_column"] for comparison in model["comparisons"]
                   for level in comparison["comparison_levels"] if "tf_adjustment_column" in level})


def count(conn: duckdb.DuckDBPyConnection, model_path: Path) -> None:
    """This run's basis, counted over `_match_records` as its clusters stand (the deterministic components)."""
    conn.execute(f"CREATE OR REPLACE TEMP TABLE {RECORDS} AS SELECT count(*) AS records, $model AS model "
                 f"FROM {MATCH_RECORDS}", {"model": fingerprint(model_path)})
    conn.execute(f"CREATE OR REPLACE TEMP TABLE {FREQUENCIES} (column_name VARCHAR, value VARCHAR, tf DOUBLE)")
    present = {row[0] for row in conn.execute(f"SELECT column_name FROM (DESCRIBE {MATCH_RECORDS})").fetchall()}
    for column in frequency_columns(model_path):
        if column in present:
            conn.execute(COUNT_SQL.format(column=column), {"column": column, "min_clusters": MIN_CLUSTERS})


def load(conn: duckdb.DuckDBPyConnection, model_path: Path) -> bool:
    """The kept basis as this run's, when one was kept for this model; False when there is none to load."""
    if not has_tables(conn, *KEPT.split(".")) or not conn.execute(f"SELECT count(*) FROM {KEPT} WHERE model = $model",
                                      {"model": fingerprint(model_path)}).fetchall()[0][0]:
        return False
    conn.execute(f"CREATE OR REPLACE TEMP TABLE {RECORDS} AS SELECT records, model FROM {KEPT}")
    conn.execute(f"CREATE OR REPLACE TEMP TABLE {FREQUENCIES} AS SELECT * FROM {KEPT_FREQUENCIES}")
    return True


def keep(conn: duckdb.DuckDBPyConnection, run_id: str) -> None:
    """This run's basis as the kept one, in the caller's transaction."""
    conn.execute(TABLES_SQL)
    conn.execute(f"DELETE FROM {KEPT}")
    conn.execute(f"INSERT INTO {KEPT} SELECT records, model, $run_id, now() FROM {RECORDS}", {"run_id": run_id})
    conn.execute(f"DELETE FROM {KEPT_FREQUENCIES}")
    conn.execute(f"INSERT INTO {KEPT_FREQUENCIES} SELECT * FROM {FREQUENCIES}")


def records(conn: duckdb.DuckDBPyConnection) -> int:
    return conn.execute(f"SELECT records FROM {RECORDS}").fetchall()[0][0]


def frequencies(conn: duckdb.DuckDBPyConnection, column: str) -> pd.DataFrame:
    """Splink's term-frequency lookup of `column`: its values typed as in `_match_records`, and `tf_<column>`."""
    typed = conn.execute(f"SELECT column_type FROM (DESCRIBE {MATCH_RECORDS}) WHERE column_name = $column",
                         {"column": column}).fetchall()[0][0]
    return conn.execute(f'SELECT CAST(value AS {typed}) AS "{column}", tf AS "tf_{column}" FROM {FREQUENCIES} '
                        "WHERE column_name = $column", {"column": column}).df()

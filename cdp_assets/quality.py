"""Quality measures of each staging build, and their history.

Each staging materialisation appends one row per entity to `quarantine.quality_history`; the staging checks
(`staging_checks.py`) compare the build with the entity's own history, and the scorecard reads it back.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb

from cdp_assets.enforcement import Verdict
from cdp_assets.mappings import MAPPINGS

BASELINE_DAYS = 7  # an entity's usual quarantine rate is the median of its builds over this many days

HISTORY_SQL = """
CREATE TABLE IF NOT EXISTS quarantine.quality_history (
    run_id VARCHAR, measured_at TIMESTAMPTZ, source VARCHAR, entity VARCHAR,
    rows_in BIGINT, rows_passed BIGINT, rows_quarantined BIGINT, staging_rows BIGINT, deleted_rows BIGINT,
    quarantine_rate DOUBLE, validity DOUBLE, completeness DOUBLE, uniqueness DOUBLE, freshness_hours DOUBLE
);
CREATE TABLE IF NOT EXISTS quarantine._known_fields (
    entity VARCHAR, field VARCHAR, first_seen_at TIMESTAMPTZ, first_seen_run VARCHAR
);
"""

FIELDS_SQL = """
SELECT DISTINCT field FROM (
    SELECT unnest(json_keys(payload)) AS field FROM {candidates}
    UNION ALL
    SELECT container || '.' || unnest(json_keys(payload->container))
    FROM {candidates}, (VALUES ('properties'), ('attributes')) AS nested(container)
    WHERE json_type(payload->container) = 'OBJECT'
)
WHERE field NOT IN (SELECT field FROM quarantine._known_fields WHERE entity = $entity)
ORDER BY field
"""

# What the entity's earlier builds say, read before this build's row is added: its usual quarantine rate and the
# live rows of its previous build.
BASELINE_SQL = """
SELECT
    (SELECT median(quarantine_rate) FROM quarantine.quality_history
     WHERE entity = $entity AND measured_at >= now() - to_days($days)) AS usual_rate,
    (SELECT staging_rows - deleted_rows FROM quarantine.quality_history
     WHERE entity = $entity ORDER BY measured_at DESC LIMIT 1) AS previous_live_rows
"""


@dataclass(frozen=True)
class Measures:
    rows_in: int
    rows_quarantined: int
    quarantine_rate: float
    usual_quarantine_rate: float | None  # median over the entity's recent builds; None on a first build
    completeness: float
    uniqueness: float
    freshness_hours: float  # since the newest current version landed (the scorecard's freshness)
    staging_rows: int
    deleted: int
    previous_live_rows: int | None  # rows not deleted at the source, in the build before this one

    @property
    def live_rows(self) -> int:
        return self.staging_rows - self.deleted


def note_fields(conn: duckdb.DuckDBPyConnection, entity: str, run_id: str, candidates: str) -> list[str]:
    """Payload fields of the build's rows (the table `candidates`) seen for the first time (schema drift); none are
    reported on an entity's first build."""
    conn.execute("CREATE SCHEMA IF NOT EXISTS quarantine")
    conn.execute(HISTORY_SQL)
    known = conn.execute("SELECT count(*) FROM quarantine._known_fields WHERE entity = $e", {"e": entity}).fetchone()
    new = [row[0] for row in conn.execute(FIELDS_SQL.format(candidates=candidates), {"entity": entity}).fetchall()]
    conn.execute(
        "INSERT INTO quarantine._known_fields SELECT $entity, unnest($fields::VARCHAR[]), now(), $run_id",
        {"entity": entity, "fields": new, "run_id": run_id},
    )
    return new if known[0] else []


def record(
    conn: duckdb.DuckDBPyConnection,
    source: str,
    entity: str,
    source_table: str,
    table: str,
    key: str,
    verdict: Verdict,
    run_id: str,
) -> Measures:
    """Measure the staging table just built from `source_table` and append the measures to the history."""
    mapped = [column.name for column in MAPPINGS[entity]]
    filled = " + ".join(f"count({name})" for name in mapped)
    rows, deleted, distinct, filled_cells, hours = conn.execute(
        f"""
        SELECT count(*), count(*) FILTER (WHERE is_deleted), count(DISTINCT {key}), {filled},
               date_diff('second', max(_extracted_at), now()) / 3600.0
        FROM {table}
        """
    ).fetchone()
    usual, previous = conn.execute(BASELINE_SQL, {"entity": entity, "days": BASELINE_DAYS}).fetchone()
    measures = Measures(
        rows_in=verdict.rows_in,
        rows_quarantined=verdict.rows_quarantined,
        quarantine_rate=verdict.rows_quarantined / verdict.rows_in if verdict.rows_in else 0.0,
        usual_quarantine_rate=usual,
        completeness=filled_cells / (rows * len(mapped)) if rows else 0.0,
        uniqueness=distinct / rows if rows else 1.0,
        freshness_hours=float(hours or 0.0),
        staging_rows=rows,
        deleted=deleted,
        previous_live_rows=previous,
    )
    conn.execute(
        """
        INSERT INTO quarantine.quality_history VALUES (
            $run_id, now(), $source, $entity, $rows_in, $passed, $quarantined, $rows, $deleted,
            $quarantine_rate, $validity, $completeness, $uniqueness, $freshness)
        """,
        {
            "run_id": run_id, "source": source, "entity": entity, "rows_in": verdict.rows_in,
            "passed": verdict.rows_passed, "quarantined": verdict.rows_quarantined, "rows": rows, "deleted": deleted,
            "quarantine_rate": measures.quarantine_rate, "validity": 1.0 - measures.quarantine_rate,
            "completeness": measures.completeness, "uniqueness": measures.uniqueness,
            "freshness": measures.freshness_hours,
        },
    )  # fmt: skip
    return measures

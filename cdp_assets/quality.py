"""Quality measures of each staging build, their history, and the table-level checks built on them.

Each staging materialisation appends one row per entity to `quarantine.quality_history`;
the checks compare the build with that history, and the scorecard reads it back.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb
from dagster import AssetCheckResult, AssetCheckSeverity, AssetCheckSpec, AssetKey

from cdp_assets.enforcement import Verdict
from cdp_assets.mappings import MAPPINGS

QUARANTINE_WARN, QUARANTINE_FAIL = 0.01, 0.05
VOLUME_WARN, VOLUME_FAIL = 0.20, 0.50  # share a table may shrink or grow against its recent builds
VOLUME_WINDOW = 5  # recent builds a table's volume is compared with
FRESHNESS_HOURS = 26.0  # the nightly pull plus slack

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
    SELECT unnest(json_keys(payload)) AS field FROM _candidates
    UNION ALL
    SELECT container || '.' || unnest(json_keys(payload->container))
    FROM _candidates, (VALUES ('properties'), ('attributes')) AS nested(container)
    WHERE json_type(payload->container) = 'OBJECT'
)
WHERE field NOT IN (SELECT field FROM quarantine._known_fields WHERE entity = $entity)
ORDER BY field
"""


@dataclass(frozen=True)
class Measures:
    rows_in: int
    quarantine_rate: float
    completeness: float
    uniqueness: float
    freshness_hours: float
    staging_rows: int
    deleted: int
    recent_rows: float | None  # average staging rows of the recent builds before this one


def check_specs(key: AssetKey) -> list[AssetCheckSpec]:
    return [
        AssetCheckSpec("primary_key_unique", asset=key, blocking=True, description="One row per record id."),
        AssetCheckSpec(
            "quarantine_rate", asset=key, blocking=True,
            description=f"Share of rows quarantined: warns above {QUARANTINE_WARN:.0%}, "
            f"fails above {QUARANTINE_FAIL:.0%}.",
        ),
        AssetCheckSpec(
            "volume_change", asset=key, blocking=True,
            description=f"Rows against the last {VOLUME_WINDOW} builds: warns past {VOLUME_WARN:.0%}, "
            f"fails when the table shrinks by more than {VOLUME_FAIL:.0%}.",
        ),
        AssetCheckSpec(
            "freshness", asset=key, description=f"Newest extraction within {FRESHNESS_HOURS:.0f} hours."
        ),
    ]  # fmt: skip


def note_fields(conn: duckdb.DuckDBPyConnection, entity: str, run_id: str) -> list[str]:
    """Payload fields seen for the first time (schema drift); none are reported on an entity's first build."""
    conn.execute("CREATE SCHEMA IF NOT EXISTS quarantine")
    conn.execute(HISTORY_SQL)
    known = conn.execute("SELECT count(*) FROM quarantine._known_fields WHERE entity = $e", {"e": entity}).fetchone()
    new = [row[0] for row in conn.execute(FIELDS_SQL, {"entity": entity}).fetchall()]
    conn.execute(
        "INSERT INTO quarantine._known_fields SELECT $entity, unnest($fields::VARCHAR[]), now(), $run_id",
        {"entity": entity, "fields": new, "run_id": run_id},
    )
    return new if known[0] else []


def record(
    conn: duckdb.DuckDBPyConnection, source: str, entity: str, table: str, key: str, verdict: Verdict, run_id: str
) -> Measures:
    """Measure the staging table just built and append the measures to the history."""
    mapped = [column.name for column in MAPPINGS[entity]]
    filled = " + ".join(f"count({name})" for name in mapped)
    rows, deleted, distinct, filled_cells, hours = conn.execute(
        f"""
        SELECT count(*), count(*) FILTER (WHERE is_deleted), count(DISTINCT {key}), {filled},
               date_diff('second', max(_extracted_at), now()) / 3600.0
        FROM {table}
        """
    ).fetchone()
    recent = conn.execute(
        "SELECT avg(staging_rows) FROM (SELECT staging_rows FROM quarantine.quality_history"
        " WHERE entity = $entity ORDER BY measured_at DESC LIMIT $window)",
        {"entity": entity, "window": VOLUME_WINDOW},
    ).fetchone()[0]
    measures = Measures(
        rows_in=verdict.rows_in,
        quarantine_rate=verdict.rows_quarantined / verdict.rows_in if verdict.rows_in else 0.0,
        completeness=filled_cells / (rows * len(mapped)) if rows else 0.0,
        uniqueness=distinct / rows if rows else 1.0,
        freshness_hours=float(hours or 0.0),
        staging_rows=rows,
        deleted=deleted,
        recent_rows=recent,
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


def check_results(m: Measures) -> list[AssetCheckResult]:
    volume_change = (m.staging_rows - m.recent_rows) / m.recent_rows if m.recent_rows else 0.0
    return [
        AssetCheckResult(
            check_name="primary_key_unique", passed=m.uniqueness == 1.0, metadata={"uniqueness": m.uniqueness}
        ),
        AssetCheckResult(
            check_name="quarantine_rate",
            passed=m.quarantine_rate <= QUARANTINE_WARN,
            severity=AssetCheckSeverity.ERROR if m.quarantine_rate > QUARANTINE_FAIL else AssetCheckSeverity.WARN,
            metadata={"quarantine_rate": m.quarantine_rate, "rows_in": m.rows_in},
        ),
        AssetCheckResult(
            check_name="volume_change",
            passed=abs(volume_change) <= VOLUME_WARN,
            severity=AssetCheckSeverity.ERROR if volume_change < -VOLUME_FAIL else AssetCheckSeverity.WARN,
            metadata={"rows": m.staging_rows, "recent_average_rows": m.recent_rows or 0.0, "change": volume_change},
        ),
        AssetCheckResult(
            check_name="freshness",
            passed=m.freshness_hours <= FRESHNESS_HOURS,
            severity=AssetCheckSeverity.WARN,
            metadata={"hours_since_extraction": m.freshness_hours},
        ),
    ]

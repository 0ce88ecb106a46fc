"""The `staging` and `quarantine` layers: each record's current version, held to its entity's contract.

Every materialisation reprocesses the whole history kept in raw, so a fixed contract or
mapping replays: rows once quarantined that now pass move to staging and leave
quarantine. Staging, quarantine and the quality history are replaced in one transaction.
"""

import time
from pathlib import Path

from dagster import AssetExecutionContext, AssetKey, AssetsDefinition, MaterializeResult, MetadataValue, asset

from cdp_assets import echoes, quality, staging_checks
from cdp_assets.contracts import CONTRACTS, PLAUSIBLE_SINCE, PLAUSIBLE_UNTIL
from cdp_assets.enforcement import enforce
from cdp_assets.mappings import MAPPINGS, paths_sql, select_sql
from cdp_assets.raw import OWNER, raw_key, raw_table
from resources import SOURCES
from resources.source import StreamSpec

CANDIDATES_SQL = (Path(__file__).parent / "sql" / "candidates.sql").read_text()
# The contract's plausible range of times, which the candidates query holds every time field to.
CANDIDATES_PARAMS = {
    "plausible_since": PLAUSIBLE_SINCE,
    "plausible_until": PLAUSIBLE_UNTIL,
    "plausible_span": f"{PLAUSIBLE_SINCE.year}..{PLAUSIBLE_UNTIL.year}",
}


def staging_table(source: str, entity: str) -> str:
    return f"staging.{source}__{entity}"


def staging_key(source: str, entity: str) -> AssetKey:
    return AssetKey(["staging", f"{source}__{entity}"])


def candidates_sql(source: str, stream: StreamSpec, rows: str | None = None) -> tuple[str, dict[str, object]]:
    """The query building `_candidates` for a stream, and its parameters (an entity without times has none); it reads
    the stream's raw table, or `rows`, a relation of some of its landed rows (privacy reads quarantined versions with
    the same reader)."""
    entity = f"{source}__{stream.entity}"
    selects = select_sql(entity)
    sql = CANDIDATES_SQL.format(
        source_table=rows or raw_table(source, stream.name),
        paths=paths_sql(entity),
        kinds=selects.kinds,
        time_checks=selects.time_checks,
        columns=selects.columns,
        wrong_types=selects.wrong_types,
        time_faults=selects.time_faults,
    )
    params = {name: value for name, value in CANDIDATES_PARAMS.items() if f"${name}" in sql}
    return sql, {**params, "raw_table": raw_table(source, stream.name)}  # whose echoes it reads past



def build_staging_asset(source: str, stream: StreamSpec) -> AssetsDefinition:
    entity = f"{source}__{stream.entity}"
    target, quarantine = staging_table(source, stream.entity), f"quarantine.{entity}"
    source_table, raw_asset = raw_table(source, stream.name), raw_key(source, stream.name)
    key = staging_key(source, stream.entity)
    (sql, params), contract = candidates_sql(source, stream), CONTRACTS[entity]
    typed = ", ".join(column.name for column in MAPPINGS[entity])

    @asset(
        key=key,
        group_name="staging",
        kinds={"duckdb", "pandera"},
        owners=[OWNER],
        deps=[raw_asset],
        description=(
            f"{stream.description} One row per record: its current version, typed, with `is_deleted`; "
            f"held to the `{contract.__name__}` contract, breaking rows go to `{quarantine}`."
        ),
        required_resource_keys={"warehouse"},
        check_specs=staging_checks.check_specs(key),
    )
    def _staging(context: AssetExecutionContext) -> MaterializeResult:
        started = time.monotonic()
        run_id = context.run.run_id
        with context.resources.warehouse.get_connection() as conn:
            if not conn.execute(
                "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'raw' AND table_name = $name",
                {"name": source_table.removeprefix("raw.")},
            ).fetchone()[0]:
                raise RuntimeError(
                    f"{source_table} has not been landed yet: materialise {raw_asset.to_user_string()} first"
                )
            conn.execute(echoes.SETUP_SQL)  # landed before echoes were marked: none are
            conn.execute(sql, params)
            verdict = enforce(conn, entity, contract)
            new_fields = quality.note_fields(conn, entity, run_id)
            conn.begin()
            conn.execute("CREATE SCHEMA IF NOT EXISTS staging; CREATE SCHEMA IF NOT EXISTS quarantine")
            conn.execute(
                f"""
                CREATE OR REPLACE TABLE {target} AS
                SELECT record_id AS {stream.primary_key}, {typed}, is_deleted, source_updated_at,
                       extracted_at AS _extracted_at, landing_id AS _landing_id
                FROM _candidates WHERE _row NOT IN (SELECT _row FROM _failed)
                """
            )
            conn.execute(
                f"""
                CREATE OR REPLACE TABLE {quarantine} AS
                SELECT c.record_id, c.is_deleted, f.failed_checks, $raw_table AS raw_table,
                       c.landing_id AS raw_landing_id, $run_id AS run_id, now() AS quarantined_at
                FROM _candidates c JOIN _failed f USING (_row)
                """,
                {"raw_table": source_table, "run_id": run_id},
            )
            passed, held = conn.execute(
                f"SELECT (FROM {target} SELECT count(*)), (FROM {quarantine} SELECT count(*))"
            ).fetchone()
            if (passed, held) != (verdict.rows_passed, verdict.rows_quarantined):
                conn.rollback()
                raise RuntimeError(
                    f"{entity}: {verdict.rows_in} rows in but {passed} staged and {held} quarantined; nothing written"
                )
            measures = quality.record(conn, source, entity, source_table, target, stream.primary_key, verdict, run_id)
            conn.commit()
        return MaterializeResult(
            metadata={
                "rows_in": verdict.rows_in,
                "rows_passed": verdict.rows_passed,
                "rows_quarantined": verdict.rows_quarantined,
                "quarantine_rate": measures.quarantine_rate,
                "completeness": measures.completeness,
                "rows_deleted_at_source": measures.deleted,
                "failures_by_check": MetadataValue.json(dict(verdict.failures_by_check)),
                "new_fields": MetadataValue.json(new_fields),
                "new_field_count": len(new_fields),
                "seconds": round(time.monotonic() - started, 3),
            },
            check_results=staging_checks.check_results(measures),
        )

    return _staging


def build_staging_assets() -> list[AssetsDefinition]:
    return [
        build_staging_asset(source, stream)
        for source, resource_cls in SOURCES.items()
        for stream in resource_cls.streams.values()
    ]

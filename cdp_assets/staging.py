"""The `staging` layer: the current version of each source record, with typed columns.

Each entity's typed columns are a list of SQL expressions over `payload` in
`sql/staging/<source>__<entity>.sql`; this module wraps them in the one query every
entity shares, which picks each record's current version from `raw`.
"""

import time
from pathlib import Path

from dagster import AssetExecutionContext, AssetKey, AssetsDefinition, MaterializeResult, asset

from cdp_assets.raw import OWNER, raw_key, raw_table
from resources import SOURCES
from resources.source import StreamSpec

SQL_DIR = Path(__file__).parent / "sql" / "staging"

# The current version is the latest by source change time, then by landing order. Its
# columns come from the latest version the source still had, so a record deleted at
# the source keeps its last known attributes beside `is_deleted`.
STAGING_SQL = """
CREATE OR REPLACE TABLE {target} AS
WITH latest AS (
    SELECT record_id,
           coalesce(arg_max(payload, (version_at, landing_id)) FILTER (WHERE NOT deleted),
                    arg_max(payload, (version_at, landing_id))) AS payload,
           arg_max(deleted, (version_at, landing_id)) AS is_deleted,
           max(version_at) AS source_updated_at,
           max(extracted_at) AS extracted_at,
           max(landing_id) AS landing_id
    FROM {source_table}
    WHERE record_id IS NOT NULL
    GROUP BY record_id
)
SELECT
{columns},
is_deleted,
source_updated_at,
extracted_at AS _extracted_at,
landing_id AS _landing_id
FROM latest
"""


def staging_table(source: str, entity: str) -> str:
    return f"staging.{source}__{entity}"


def staging_key(source: str, entity: str) -> AssetKey:
    return AssetKey(["staging", f"{source}__{entity}"])


def staging_sql(source: str, stream: StreamSpec) -> str:
    columns = (SQL_DIR / f"{source}__{stream.entity}.sql").read_text()
    body = "\n".join(line for line in columns.splitlines() if not line.startswith("--")).strip()
    return STAGING_SQL.format(
        target=staging_table(source, stream.entity),
        source_table=raw_table(source, stream.name),
        columns=body.rstrip(","),
    )


def build_staging_asset(source: str, stream: StreamSpec) -> AssetsDefinition:
    target = staging_table(source, stream.entity)
    source_table, raw_asset = raw_table(source, stream.name), raw_key(source, stream.name)
    sql = staging_sql(source, stream)

    @asset(
        key=staging_key(source, stream.entity),
        group_name="staging",
        kinds={"duckdb", "sql"},
        owners=[OWNER],
        deps=[raw_asset],
        description=f"{stream.description} One row per record: its current version, typed, with `is_deleted`.",
        required_resource_keys={"warehouse"},
    )
    def _staging(context: AssetExecutionContext) -> MaterializeResult:
        started = time.monotonic()
        with context.resources.warehouse.get_connection() as conn:
            landed = conn.execute(
                "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'raw' AND table_name = $name",
                {"name": source_table.removeprefix("raw.")},
            ).fetchone()[0]
            if not landed:
                raise RuntimeError(
                    f"{source_table} has not been landed yet: materialise {raw_asset.to_user_string()} first"
                )
            conn.execute("CREATE SCHEMA IF NOT EXISTS staging")
            conn.execute(sql)
            rows, deleted = conn.execute(
                f"SELECT count(*), count(*) FILTER (WHERE is_deleted) FROM {target}"
            ).fetchone()
            without_id = conn.execute(f"SELECT count(*) FROM {source_table} WHERE record_id IS NULL").fetchone()[0]
        return MaterializeResult(
            metadata={
                "rows": rows,
                "rows_deleted_at_source": deleted,
                "raw_versions_without_id": without_id,
                "seconds": round(time.monotonic() - started, 3),
            }
        )

    return _staging


def build_staging_assets() -> list[AssetsDefinition]:
    return [
        build_staging_asset(source, stream)
        for source, resource_cls in SOURCES.items()
        for stream in resource_cls.streams.values()
    ]

"""The quality scorecard: each staging entity's latest quality, with the history behind it."""

from typing import Any

from dagster import (
    AssetExecutionContext,
    AssetKey,
    AssetsDefinition,
    MaterializeResult,
    MetadataValue,
    TableColumn,
    TableRecord,
    TableSchema,
    asset,
)

from cdp_assets import freshness
from cdp_assets.identity import health
from cdp_assets.identity.rules import load as load_identity_rules
from cdp_assets.raw import OWNER

SCORECARD_SQL = """
CREATE OR REPLACE TABLE quarantine.quality_scorecard AS
SELECT * EXCLUDE (rank) FROM (
    SELECT *, row_number() OVER (PARTITION BY entity ORDER BY measured_at DESC) AS rank
    FROM quarantine.quality_history
)
WHERE rank = 1
ORDER BY entity
"""
TABLE = TableSchema(
    columns=[
        TableColumn("entity", "string", description="the staging table, source__entity"),
        TableColumn("quarantine_rate", "float", description="share of the rows in that broke the contract"),
        TableColumn("validity", "float", description="1 - quarantine rate"),
        TableColumn("completeness", "float", description="share of mapped cells filled"),
        TableColumn("uniqueness", "float", description="distinct primary keys per row"),
        TableColumn("freshness_hours", "float", description="hours since the newest record changed"),
        TableColumn("rows", "int", description="rows in staging"),
    ]
)
ROWS_SQL = """
SELECT entity, round(quarantine_rate, 6), round(validity, 6), round(completeness, 6), round(uniqueness, 6),
       round(freshness_hours, 3), staging_rows
FROM quarantine.quality_scorecard ORDER BY entity
"""
# Identity health measure -> its metadata key. Keys stay short (24 characters at most) so that they fit beside
# their timestamps in the UI.
IDENTITY_KEYS = {
    "profiles": "profiles",
    "duplicated": "duplicated_share",
    "disconnected": "disconnected_share",
    "decayed": "decayed_share",
    "distrusted": "distrusted_share",
    "review_pairs": "review_pairs",
}


def scorecard_metadata(entities: list[dict[str, Any]], identity_health: dict[str, float]) -> dict[str, Any]:
    """Every entity's measures in one table, and the numbers worth a trend under short numeric keys.

    The UI plots numeric metadata only. Each entity's own trend is on its staging asset, so the scorecard plots
    the worst of each measure across entities, and the identity layer's health.
    """
    worst = max(entities, key=lambda e: e["quarantine_rate"], default=None)
    return {
        "scorecard": MetadataValue.table(records=[TableRecord(e) for e in entities], schema=TABLE),
        "entities": len(entities),
        "worst_entity": MetadataValue.text(worst["entity"] if worst else ""),
        "worst_quarantine_rate": worst["quarantine_rate"] if worst else 0.0,
        "min_completeness": min((e["completeness"] for e in entities), default=1.0),
        "min_uniqueness": min((e["uniqueness"] for e in entities), default=1.0),
        "max_freshness_hours": max((e["freshness_hours"] for e in entities), default=0.0),
        **{IDENTITY_KEYS[name]: round(value, 6) for name, value in identity_health.items()},
    }


def build_scorecard_asset(staging_keys: list[AssetKey], identity_keys: list[AssetKey]) -> AssetsDefinition:
    @asset(
        key=AssetKey(["quarantine", "quality_scorecard"]),
        group_name="quarantine",
        kinds={"duckdb"},
        owners=[OWNER],
        deps=[*staging_keys, *identity_keys],
        description=(
            "Per source and entity: completeness, validity, uniqueness, freshness and quarantine rate of the latest "
            "staging build, and the identity layer's health: the shares of profiles that are duplicated, "
            "disconnected, decayed and distrusted. Every build's measures stay in `quarantine.quality_history` and "
            "`quarantine.quality_identity_history`. Materialisation metadata: `scorecard`, a table of every entity's "
            "measures; the worst of each across entities (`worst_quarantine_rate`, `worst_entity`, `min_completeness`, "
            "`min_uniqueness`, `max_freshness_hours`) and the identity health (`profiles`, `duplicated_share`, "
            "`disconnected_share`, `decayed_share`, `distrusted_share`, `review_pairs`) as numbers the UI plots."
        ),
        required_resource_keys={"warehouse"},
        freshness_policy=freshness.NIGHTLY,
    )
    def quality_scorecard(context: AssetExecutionContext) -> MaterializeResult:
        with context.resources.warehouse.get_connection() as conn:
            conn.execute(SCORECARD_SQL)
            names = [column.name for column in TABLE.columns]
            entities = [dict(zip(names, row, strict=True)) for row in conn.execute(ROWS_SQL).fetchall()]
            identity_health = health.measure(conn, load_identity_rules(), context.run.run_id)
        return MaterializeResult(metadata=scorecard_metadata(entities, identity_health))

    return quality_scorecard

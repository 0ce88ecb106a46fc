"""The quality scorecard: each staging entity's latest quality, with the history behind it."""

from dagster import AssetExecutionContext, AssetKey, AssetsDefinition, MaterializeResult, MetadataValue, asset

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
MEASURES = ("quarantine_rate", "validity", "completeness", "uniqueness", "freshness_hours")


def build_scorecard_asset(staging_keys: list[AssetKey], identity_key: AssetKey) -> AssetsDefinition:
    @asset(
        key=AssetKey(["quarantine", "quality_scorecard"]),
        group_name="quarantine",
        kinds={"duckdb"},
        owners=[OWNER],
        deps=[*staging_keys, identity_key],
        description=(
            "Per source and entity: completeness, validity, uniqueness, freshness and quarantine rate of the latest "
            "staging build, and the identity layer's health: the shares of profiles that are duplicated, "
            "disconnected, decayed and distrusted. Every build's measures stay in `quarantine.quality_history` and "
            "`quarantine.quality_identity_history`; the numbers here are also materialisation metadata, so the UI "
            "plots their trend."
        ),
        required_resource_keys={"warehouse"},
        freshness_policy=freshness.NIGHTLY,
    )
    def quality_scorecard(context: AssetExecutionContext) -> MaterializeResult:
        with context.resources.warehouse.get_connection() as conn:
            conn.execute(SCORECARD_SQL)
            rows = conn.execute(f"SELECT entity, {', '.join(MEASURES)} FROM quarantine.quality_scorecard").fetchall()
            identity_health = health.measure(conn, load_identity_rules(), context.run.run_id)
        metadata: dict[str, object] = {
            f"{entity}.{name}": round(float(value), 6)
            for entity, *values in rows
            for name, value in zip(MEASURES, values, strict=True)
        }
        worst = max(rows, key=lambda row: row[1], default=None)
        metadata.update({f"identity.{name}": round(value, 6) for name, value in identity_health.items()})
        metadata["entities"] = len(rows)
        metadata["worst_quarantine_rate"] = float(worst[1]) if worst else 0.0
        metadata["worst_entity"] = MetadataValue.text(worst[0] if worst else "")
        return MaterializeResult(metadata=metadata)

    return quality_scorecard

"""The `views` layer: one asset per team view, grouped by the team that owns it, each with governance checks."""

import time

import duckdb
from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetChecksDefinition,
    AssetCheckSeverity,
    AssetExecutionContext,
    AssetKey,
    AssetsDefinition,
    MaterializeResult,
    TableColumn,
    TableSchema,
    asset,
    asset_check,
)

from cdp_assets import freshness
from cdp_assets.views import build, policy, reconcile, sample
from cdp_assets.views.policy import Policy, ViewPolicy


def view_key(name: str) -> AssetKey:
    return AssetKey(["views", name])


def table_schema(conn: duckdb.DuckDBPyConnection, view: ViewPolicy) -> TableSchema:
    columns = conn.execute(
        "SELECT column_name, data_type FROM information_schema.columns"
        " WHERE table_schema = 'views' AND table_name = $name ORDER BY ordinal_position",
        {"name": view.name},
    ).fetchall()
    return TableSchema(
        columns=[TableColumn(name, kind, description=view.columns.get(name, "not in policy")) for name, kind in columns]
    )


def build_view_asset(rules: Policy, view: ViewPolicy) -> AssetsDefinition:
    @asset(
        key=view_key(view.name),
        group_name=view.team.group,
        kinds={"duckdb"},
        owners=[view.team.owner],
        deps=[AssetKey.from_user_string(key) for key in build.BUILDS[view.name].reads],
        description=view.description(rules.freshness[view.team.refresh]),
        required_resource_keys={"warehouse"},
        freshness_policy=freshness.NIGHTLY if view.team.refresh == "nightly" else freshness.HOURLY,
    )
    def team_view(context: AssetExecutionContext) -> MaterializeResult:
        started = time.monotonic()
        with context.resources.warehouse.get_connection() as conn:
            conn.execute("CREATE SCHEMA IF NOT EXISTS views")
            extra = build.build(conn, rules, view.name)
            rows = conn.execute(f"SELECT count(*) FROM {view.table}").fetchall()[0][0]
            schema = table_schema(conn, view)
            rows_sample = sample.sample(conn, view, schema)
        return MaterializeResult(
            metadata={
                "dagster/row_count": rows,
                "dagster/column_schema": schema,
                "grain": view.grain,
                "sample": rows_sample,
                **extra,
                "seconds": round(time.monotonic() - started, 3),
            }
        )

    return team_view


def build_view_checks(view: ViewPolicy) -> list[AssetChecksDefinition]:
    """Blocking checks: the table exposes only what its policy allows, and only for consented purposes."""

    @asset_check(
        asset=view_key(view.name),
        name="policy_columns",
        blocking=True,
        required_resource_keys={"warehouse"},
        description=f"Passes when every column of {view.table} is in its policy, with a personal-data class the view "
        f"allows ({', '.join(view.allows)}). Fails (blocking: the view's syncs hold) otherwise. Never warns. Do: add "
        "the column with its class to `cdp_assets/views/policy.yaml`, or take it out of the view's SQL.",
    )
    def policy_columns(context: AssetCheckExecutionContext) -> AssetCheckResult:
        with context.resources.warehouse.get_connection() as conn:
            disallowed = policy.disallowed_columns(conn, view)
        return AssetCheckResult(
            passed=not disallowed,
            severity=AssetCheckSeverity.ERROR,
            metadata={"disallowed_columns": ", ".join(disallowed) or "none", "disallowed": len(disallowed)},
        )

    checks = [policy_columns]
    if view.name == reconcile.VIEW:
        checks.append(reconcile.billing_check(view_key(view.name)))
    if view.requires or view.purpose_column or view.purposes_column:

        @asset_check(
            asset=view_key(view.name),
            name="consent",
            blocking=True,
            required_resource_keys={"warehouse"},
            description=f"Passes when no row of {view.table} is used for a purpose its person has not allowed or has "
            "withdrawn (per privacy.consent). Fails (blocking: nothing downstream runs, so nothing is sent) otherwise. "
            "Never warns. Do: fix the view's SQL; the metadata names the profiles.",
        )
        def consent(context: AssetCheckExecutionContext) -> AssetCheckResult:
            with context.resources.warehouse.get_connection() as conn:
                violations, sample = policy.consent_violations(conn, view)
            return AssetCheckResult(
                passed=violations == 0,
                severity=AssetCheckSeverity.ERROR,
                metadata={"rows_without_consent": violations, "profiles": ", ".join(sample) or "none"},
            )

        checks.append(consent)
    return checks


def build_views() -> tuple[list[AssetsDefinition], list[AssetChecksDefinition]]:
    rules = policy.load()
    views = rules.views.values()
    return [build_view_asset(rules, v) for v in views], [c for v in views for c in build_view_checks(v)]

"""The `views` layer: one asset per team view, grouped by the team that owns it, each with governance checks run in
the view's own step."""

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import duckdb
from dagster import (
    AssetCheckKey,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    AssetsDefinition,
    AssetSpec,
    MaterializeResult,
    TableColumn,
    TableSchema,
    multi_asset,
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


@dataclass(frozen=True)
class ViewCheck:
    """A blocking governance check of a view: its name and description, and what it finds on the view step's
    connection (whether it passed, and the metadata saying why)."""

    name: str
    description: str
    finds: Callable[[duckdb.DuckDBPyConnection], tuple[bool, dict[str, Any]]]

    def spec(self, key: AssetKey) -> AssetCheckSpec:
        return AssetCheckSpec(self.name, asset=key, blocking=True, description=self.description)

    def evaluate(self, key: AssetKey, conn: duckdb.DuckDBPyConnection) -> AssetCheckResult:
        passed, metadata = self.finds(conn)
        return AssetCheckResult(asset_key=key, check_name=self.name, passed=passed, severity=AssetCheckSeverity.ERROR,
                                metadata=metadata)


def build_view_asset(rules: Policy, view: ViewPolicy) -> AssetsDefinition:
    """The view and its checks in one step, on one connection (a step of its own per check opened the warehouse
    again for a query); a check selected alone runs alone, as the circuit breaker's tests and the UI ask."""
    key = view_key(view.name)
    checks = view_checks(view)

    @multi_asset(
        name=f"views__{view.name}",
        specs=[AssetSpec(
            key, group_name=view.team.group, kinds={"duckdb"}, owners=[view.team.owner],
            deps=[AssetKey.from_user_string(read) for read in build.dependencies(view.name)],
            description=view.description(rules.freshness[view.team.refresh]),
            freshness_policy=freshness.NIGHTLY if view.team.refresh == "nightly" else freshness.HOURLY,
        )],
        check_specs=[check.spec(key) for check in checks],
        can_subset=True,
        required_resource_keys={"warehouse"},
    )
    def team_view(context: AssetExecutionContext) -> Iterator[MaterializeResult | AssetCheckResult]:
        started = time.monotonic()
        with context.resources.warehouse.get_connection() as conn:
            if key in context.selected_asset_keys:
                conn.execute("CREATE SCHEMA IF NOT EXISTS views")
                extra = build.build(conn, rules, view.name)
                rows = conn.execute(f"SELECT count(*) FROM {view.table}").fetchall()[0][0]
                schema = table_schema(conn, view)
                yield MaterializeResult(
                    asset_key=key,
                    metadata={
                        "dagster/row_count": rows,
                        "dagster/column_schema": schema,
                        "grain": view.grain,
                        "sample": sample.sample(conn, view, schema),
                        **extra,
                        "seconds": round(time.monotonic() - started, 3),
                    },
                )
            for check in checks:
                if AssetCheckKey(key, check.name) in context.selected_asset_check_keys:
                    yield check.evaluate(key, conn)

    return team_view


def view_checks(view: ViewPolicy) -> list[ViewCheck]:
    """Blocking checks: the table exposes only what its policy allows, and only for consented purposes."""

    def policy_columns(conn: duckdb.DuckDBPyConnection) -> tuple[bool, dict[str, Any]]:
        disallowed = policy.disallowed_columns(conn, view)
        return not disallowed, {"disallowed_columns": ", ".join(disallowed) or "none", "disallowed": len(disallowed)}

    def consent(conn: duckdb.DuckDBPyConnection) -> tuple[bool, dict[str, Any]]:
        violations, profiles = policy.consent_violations(conn, view)
        return violations == 0, {"rows_without_consent": violations, "profiles": ", ".join(profiles) or "none"}

    checks = [ViewCheck(
        "policy_columns",
        f"Passes when every column of {view.table} is in its policy, with a personal-data class the view allows "
        f"({', '.join(view.allows)}). Fails (blocking: the view's syncs hold) otherwise. Never warns. Do: add the "
        "column with its class to `cdp_assets/views/policy.yaml`, or take it out of the view's SQL.",
        policy_columns,
    )]
    if view.name == reconcile.VIEW:
        checks.append(ViewCheck(reconcile.CHECK, reconcile.DESCRIPTION, reconcile.billing_findings))
    if view.requires or view.purpose_column or view.purposes_column:
        checks.append(ViewCheck(
            "consent",
            f"Passes when no row of {view.table} is used for a purpose its person has not allowed or has withdrawn "
            "(per privacy.consent). Fails (blocking: nothing downstream runs, so nothing is sent) otherwise. Never "
            "warns. Do: fix the view's SQL; the metadata names the profiles.",
            consent,
        ))
    return checks


def build_views() -> list[AssetsDefinition]:
    rules = policy.load()
    return [build_view_asset(rules, v) for v in rules.views.values()]

"""The `sync` layer: one asset per sync (`syncs.yaml`), sending its view's changes to its destination.

A run first settles what a killed run of the sync left in flight (recovery.py), then plans
(model, checks, diff), stops if the circuit breaker or the deletion guard says so, then
delivers step by step. Every run leaves a row in `sync.runs`, whatever its end.
"""

import time
from collections.abc import Iterable, Sequence

import duckdb
from dagster import (
    AssetCheckKey,
    AssetCheckResult,
    AssetChecksDefinition,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    AssetsDefinition,
    Config,
    Failure,
    MaterializeResult,
    MetadataValue,
    asset,
)
from pydantic import Field

from cdp_assets import lineage
from cdp_assets.privacy.redact import redacted
from cdp_assets.sync import breaker, delivery, ledger, plan, recovery
from cdp_assets.sync.specs import SyncRules, SyncSpec
from cdp_assets.sync.specs import load as load_syncs
from cdp_assets.views import policy
from cdp_assets.views.assets import view_key
from resources.destinations import DestinationResource


class SyncRunConfig(Config):
    dry_run: bool = Field(default=False, description="Plan only: report what the run would send, send nothing.")
    allow_mass_removal: bool = Field(
        default=False, description="Let this run remove more than the sync's max_removal_share of what it sent."
    )
    override_circuit_breaker: bool = Field(
        default=False, description="Send even though the circuit breaker holds (after checking the identity layer)."
    )
    full_refresh: bool = Field(
        default=False,
        description="Plan from every row of the view, not only the profiles it logged since the last settled run "
        "(the nightly run does).",
    )


WARN = AssetCheckSeverity.WARN
MESSAGE_CHARS = 2000  # of an error kept in sync.runs and the run's metadata
REJECTIONS_CHECK = (
    "Passes when the destination took every row it was sent. Warns (never blocks) when it refused some: they are in "
    "`sync.rejections` with the destination's reason and are sent again every run until taken. Never fails. Do: "
    "`cdp sync status` for the reason (an undefined property, an option the tool lacks); fix it in the tool or "
    "the sync's mapping."
)
INVALID_CHECK = (
    "Passes when every row of the view had a key of its own and its required fields. Warns (never blocks) when some "
    "did not: they were not sent and are in `sync.invalid_rows`. Never fails. Do: `SELECT * FROM sync.invalid_rows "
    "WHERE run_id = ...`; two profiles with one address is a missed merge or two people sharing one that identity "
    "did not judge shared. A key identity judged shared (a team's mailbox) or placed in another profile is not "
    "invalid: its rows are left out, counted as `left_out` and kept in `sync.left_out_rows`."
)


def sync_key(name: str) -> AssetKey:
    return AssetKey(["sync", name])


def resource_key(destination: str) -> str:
    return f"destination_{destination}"


def description(spec: SyncSpec) -> str:
    consent = f" Only people who allow {spec.purpose}." if spec.purpose else ""
    return (
        f"{spec.description} `views.{spec.view}` to {spec.destination} ({spec.mode}, keyed by `{spec.key}`)."
        f"{consent} Sends only what changed since the destination last acknowledged it, reading only the rows of "
        "the profiles the view logged as made since the last run when the view logs them; runs are logged in "
        "`sync.runs`, refused rows in `sync.rejections`. Defined in `cdp_assets/sync/syncs.yaml`."
    )


def build_sync_asset(rules: SyncRules, spec: SyncSpec, checks: Sequence[AssetCheckKey]) -> AssetsDefinition:
    key = sync_key(spec.name)
    destination_key = resource_key(spec.destination)

    @asset(
        key=key,
        group_name="sync",
        kinds={spec.destination, "duckdb"},
        owners=[policy.load().views[spec.view].team.owner],
        deps=[AssetKey.from_user_string(read) for read in lineage.assets_of(plan.reads(spec))],
        description=description(spec),
        required_resource_keys={"warehouse", destination_key},
        pool=f"api_{spec.destination}",  # the same pool as the source on the same account
        check_specs=[
            AssetCheckSpec("no_rejections", asset=key, description=REJECTIONS_CHECK),
            AssetCheckSpec("no_invalid_rows", asset=key, description=INVALID_CHECK),
        ],
    )
    def sync_asset(context: AssetExecutionContext, config: SyncRunConfig) -> MaterializeResult:
        target: DestinationResource = getattr(context.resources, destination_key)
        with context.resources.warehouse.get_connection() as conn:
            run = run_sync(conn, context, config, rules, spec, checks, target)
        context.log.info(
            f"{spec.name}: {run.status}; {run.added} added, {run.changed} changed, {run.removed} removed, "
            f"{run.unchanged} unchanged, {run.rejected} rejected, {run.invalid} invalid, {run.left_out} left out"
        )
        rejected, invalid = run.rejected, run.invalid or 0
        return MaterializeResult(
            metadata=_metadata(run),
            check_results=[
                AssetCheckResult(
                    check_name="no_rejections", passed=not rejected, severity=WARN, metadata={"rejected": rejected}
                ),
                AssetCheckResult(
                    check_name="no_invalid_rows", passed=not invalid, severity=WARN, metadata={"invalid": invalid}
                ),
            ],
        )

    return sync_asset


def run_sync(
    conn: duckdb.DuckDBPyConnection,
    context: AssetExecutionContext,
    config: SyncRunConfig,
    rules: SyncRules,
    spec: SyncSpec,
    checks: Sequence[AssetCheckKey],
    target: DestinationResource,
) -> ledger.RunRecord:
    started = time.monotonic()
    stats = target.stats
    before = (stats.requests, stats.retries, stats.waited_seconds)
    plan.setup(conn)
    run = ledger.RunRecord(context.run.run_id, spec.name, spec.destination, spec.mode, config.dry_run)

    def measure() -> None:
        run.requests = stats.requests - before[0]
        run.retries = stats.retries - before[1]
        run.waited_seconds = round(stats.waited_seconds - before[2], 3)
        run.seconds = round(time.monotonic() - started, 3)

    ledger.open_run(conn, run)
    try:
        if not config.dry_run:  # a dry run sends nothing and moves no state
            plan.retire(conn, rules.syncs.values())
            recovered = recovery.recover(conn, spec.name, run.run_id, target)
            if recovered.batches or recovered.interrupted:
                context.log.info(
                    f"{spec.name}: closed {recovered.interrupted} interrupted run(s) and settled their "
                    f"{recovered.batches} batch(es) in flight: {recovered.acknowledged} taken, {recovered.rejected} "
                    f"refused, {recovered.unconfirmed} unconfirmed (sent again)"
                )
        identity = breaker.measure(conn)
        run.profiles, run.largest_profile_records = identity.profiles, identity.largest_profile_records
        position = plan.follow(conn, spec, run.run_id, config.full_refresh)
        run.followed = position is not None and position.whole is None
        planned = plan.prepare(conn, spec, position)
        run.model_rows, run.invalid, run.unchanged = planned.rows, planned.invalid, planned.unchanged
        run.left_out, run.rows_read = planned.left_out, planned.read
        run.added, run.changed, run.removed = planned.added, planned.changed, planned.removed
        ledger.record_invalid(conn, spec.name, run.run_id, plan.MODEL)
        if config.dry_run:
            # Counts only: keys are personal data, kept out of the run log and Dagster's event log.
            run.status, run.message = "planned", "dry run: nothing sent (`cdp sync plan` lists the keys)"
            return run
        held = breaker.reasons(conn, context.instance, rules.breaker, spec.name, checks, identity)
        if config.override_circuit_breaker and held:
            context.log.warning(f"{spec.name}: circuit breaker overridden: {'; '.join(held)}")
            held = []
        if held:
            run.status, run.message = "blocked", "; ".join(held)
            raise Failure(f"{spec.name} held by the circuit breaker: {run.message}", metadata=_metadata(run))
        share = planned.removal_share(spec.mode in delivery.REMOVING_MODES)
        if share > spec.max_removal_share and not config.allow_mass_removal:
            run.status = "aborted"
            run.message = (
                f"would remove {planned.removed:,} of the {planned.held:,} records it holds in {spec.destination} "
                f"({share:.0%}, more than {spec.max_removal_share:.0%}); rerun with allow_mass_removal once that "
                "is right"
            )
            raise Failure(f"{spec.name}: deletion guard: {run.message}", metadata=_metadata(run))
        send(conn, run, spec, target)
        run.status = "partially_failed" if run.rejected else "succeeded"
        if position is not None:
            plan.keep(conn, spec, position)
        return run
    except Failure:
        raise
    except Exception as exc:
        # The error may echo a destination's reply about a person: the run log, the run's metadata and Dagster's
        # event log (which alerts read) get it redacted, with the original's stack but not its text.
        run.status, run.message = "failed", f"{type(exc).__name__}: {redacted(str(exc), MESSAGE_CHARS)}"
        measure()
        failure = Failure(f"{spec.name} failed: {run.message}", metadata=_metadata(run))
        raise failure.with_traceback(exc.__traceback__) from None
    finally:
        measure()
        ledger.close_run(conn, run)


def send(conn: duckdb.DuckDBPyConnection, run: ledger.RunRecord, spec: SyncSpec, target: DestinationResource) -> None:
    options = spec.options()
    sent = delivery.Sent()
    try:
        for step in delivery.STEPS[spec.mode]:
            if step.operation is None:
                ledger.forget_removed(conn, spec.name, run.run_id, plan.PLAN)
            else:
                delivery.deliver(conn, spec.name, run.run_id, step, target, options, sent, plan.PLAN)
    finally:
        run.acknowledged, run.rejected = sent.acknowledged, sent.rejected
        run.batches, run.splits = sent.batches, sent.splits


def _metadata(run: ledger.RunRecord) -> dict[str, object]:
    return {
        "status": run.status,
        "dry_run": run.dry_run,
        "rows": run.model_rows or 0,
        "added": run.added or 0,
        "changed": run.changed or 0,
        "removed": run.removed or 0,
        "unchanged": run.unchanged or 0,
        "invalid": run.invalid or 0,
        "left_out": run.left_out or 0,
        "followed_changes": bool(run.followed),
        "rows_read": run.rows_read or 0,
        "acknowledged": run.acknowledged,
        "rejected": run.rejected,
        "requests": run.requests,
        "retries": run.retries,
        "batches": run.batches,
        "splits": run.splits,
        "waited_seconds": run.waited_seconds,
        "seconds": run.seconds,
        "message": MetadataValue.text(run.message or ""),
    }


def upstream_blocking_checks(
    key: AssetKey, assets: Iterable[AssetsDefinition], checks: Iterable[AssetChecksDefinition]
) -> list[AssetCheckKey]:
    """Blocking checks on `key` and every asset upstream of it, for the circuit breaker."""
    assets = list(assets)
    parents = {k: set(a.asset_deps.get(k, ())) for a in assets for k in a.keys}
    specs = [spec for a in assets for spec in a.check_specs] + [spec for c in checks for spec in c.check_specs]
    seen, todo = set(), [key]
    while todo:
        current = todo.pop()
        if current not in seen:
            seen.add(current)
            todo.extend(parents.get(current, ()))
    return sorted((spec.key for spec in specs if spec.blocking and spec.asset_key in seen), key=str)


def build_sync_assets(
    assets: Sequence[AssetsDefinition], checks: Sequence[AssetChecksDefinition]
) -> list[AssetsDefinition]:
    rules = load_syncs()
    return [
        build_sync_asset(rules, spec, upstream_blocking_checks(view_key(spec.view), assets, checks))
        for spec in rules.syncs.values()
    ]

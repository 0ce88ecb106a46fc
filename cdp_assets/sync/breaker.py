"""The circuit breaker: no sync sends anything while its inputs look broken.

Three signs, each a reason to hold: a blocking check upstream of the sync failed at its
latest evaluation (also when the sync is materialised on its own, outside the run that
failed); the number of profiles moved more than a set share since the sync last ran; the
largest profile holds more person records than a set size (a merge gone wrong).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import duckdb
from dagster import AssetCheckKey, AssetCheckSeverity, DagsterInstance
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus

from cdp_assets.sync.specs import CircuitBreaker

LAST_RUN_SQL = """
SELECT profiles FROM sync.runs
WHERE sync = $sync AND status IN ('succeeded', 'partially_failed') AND profiles IS NOT NULL
ORDER BY finished_at DESC LIMIT 1
"""


@dataclass(frozen=True)
class Identity:
    profiles: int
    largest_profile_records: int


IDENTITY_SQL = "SELECT count(*), coalesce(max(records), 0) FROM identity.person_profiles"


def measure(conn: duckdb.DuckDBPyConnection) -> Identity:
    profiles, largest = conn.execute(IDENTITY_SQL).fetchone()
    return Identity(int(profiles), int(largest))


def failed_checks(instance: DagsterInstance, checks: Sequence[AssetCheckKey]) -> list[str]:
    """Blocking checks among `checks` whose latest evaluation failed with error severity."""
    latest = instance.event_log_storage.get_latest_asset_check_execution_by_key(list(checks))
    failed = []
    for key, record in latest.items():
        if record.status != AssetCheckExecutionRecordStatus.FAILED or record.event is None:
            continue
        evaluation = record.event.dagster_event.event_specific_data if record.event.dagster_event else None
        if evaluation is not None and evaluation.blocking and evaluation.severity == AssetCheckSeverity.ERROR:
            failed.append(f"{key.asset_key.to_user_string()}:{key.name}")
    return sorted(failed)


def reasons(
    conn: duckdb.DuckDBPyConnection,
    instance: DagsterInstance,
    breaker: CircuitBreaker,
    sync: str,
    checks: Sequence[AssetCheckKey],
    identity: Identity,
) -> list[str]:
    """Why the sync must not send now; empty when it may."""
    found = [f"upstream check failed: {name}" for name in failed_checks(instance, checks)]
    last = conn.execute(LAST_RUN_SQL, {"sync": sync}).fetchone()
    if last and last[0]:
        share = abs(identity.profiles - last[0]) / last[0]
        if share > breaker.max_profile_change_share:
            found.append(
                f"profiles moved {share:.1%} since the sync last ran ({last[0]:,} -> {identity.profiles:,}), more "
                f"than {breaker.max_profile_change_share:.0%}"
            )
    if identity.largest_profile_records > breaker.max_profile_records:
        found.append(
            f"the largest profile holds {identity.largest_profile_records:,} records, more than "
            f"{breaker.max_profile_records:,}"
        )
    return found

"""The data team's checks: documented, quiet on a healthy world, and failing on real drift."""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pytest
from dagster import (
    AssetCheckEvaluation,
    AssetCheckKey,
    AssetCheckSeverity,
    AssetKey,
    AssetSelection,
    DagsterInstance,
    Definitions,
    RunRequest,
    build_schedule_context,
    materialize,
)

from cdp_assets.identity.assets import GRAPH_KEY, REBUILD_CHECK
from cdp_assets.quality import Measures
from cdp_assets.staging_checks import QUARANTINE_FAIL, QUARANTINE_RISE, quarantine_result, volume_result
from resources import build_resources
from sandbox.runner import SandboxServer
from tests.conftest import TEST_SANDBOX_CONFIG

RUNBOOK = Path(__file__).resolve().parent.parent / "docs" / "runbook.md"


def all_check_specs() -> list[tuple[AssetCheckKey, str | None]]:
    """Every check Dagster loads: specs of assets (multi-assets' included) and standalone asset checks."""
    from cdp_assets.definitions import defs

    owners = [*(defs.assets or []), *(defs.asset_checks or [])]
    return [(spec.key, spec.description) for owner in owners for spec in owner.check_specs]


def test_every_check_has_a_description_and_a_runbook_entry() -> None:
    specs = all_check_specs()
    assert len({key.name for key, _ in specs}) >= 11  # the staging, identity, view and sync checks at least
    section = RUNBOOK.read_text().split("## When a check fails", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"^\| `([a-z_]+)`", section, flags=re.MULTILINE))
    for key, description in specs:
        said = (description or "").lower()
        for word in ("pass", "warn", "fail", "do:"):  # when it passes, warns and fails, and what to do
            assert word in said, f"{key.to_user_string()}: its description does not say {word!r}"
        assert key.name in listed, f"{key.name} has no row in the runbook's 'When a check fails'"


def measures(rate: float, usual: float | None, live: int = 1000, previous: int | None = None) -> Measures:
    return Measures(
        rows_in=live, rows_quarantined=round(rate * live), quarantine_rate=rate, usual_quarantine_rate=usual,
        completeness=1.0, uniqueness=1.0, freshness_hours=1.0, staging_rows=live, deleted=0,
        previous_live_rows=previous,
    )  # fmt: skip


def test_quarantine_rate_fails_past_the_ceiling_and_warns_on_a_rise_above_its_usual_rate() -> None:
    first = quarantine_result(measures(QUARANTINE_FAIL * 0.9, usual=None))
    assert first.passed  # a first build meets the ceiling only
    steady = quarantine_result(measures(0.03, usual=0.03))
    assert steady.passed
    risen = quarantine_result(measures(0.02 + QUARANTINE_RISE * 1.5, usual=0.02))
    assert not risen.passed and risen.severity == AssetCheckSeverity.WARN
    broken = quarantine_result(measures(QUARANTINE_FAIL + 0.01, usual=QUARANTINE_FAIL))
    assert not broken.passed and broken.severity == AssetCheckSeverity.ERROR


def test_volume_change_judges_live_rows_against_the_previous_build() -> None:
    assert volume_result(measures(0.0, None, live=1000)).passed  # a first build
    assert volume_result(measures(0.0, None, live=1150, previous=1000)).passed
    grew = volume_result(measures(0.0, None, live=1300, previous=1000))
    assert not grew.passed and grew.severity == AssetCheckSeverity.WARN
    halved = volume_result(measures(0.0, None, live=400, previous=1000))
    assert not halved.passed and halved.severity == AssetCheckSeverity.ERROR


@dataclass(frozen=True)
class Nightly:
    warehouse: Path
    evaluations: list[list[AssetCheckEvaluation]]  # per run
    checks: set[AssetCheckKey]  # every check the nightly job holds


def fresh_defs() -> Definitions:
    """The project's definitions with resources read from the environment now (the module's were read at import)."""
    from cdp_assets.definitions import defs

    return Definitions(
        assets=defs.assets, asset_checks=defs.asset_checks, jobs=defs.jobs, resources=build_resources(),
        executor=defs.executor,
    )  # fmt: skip


def nightly_schedule_requests(now: datetime) -> list[RunRequest]:
    from cdp_assets.definitions import defs

    [nightly] = [schedule for schedule in defs.schedules or [] if schedule.name == "nightly_pipeline_schedule"]
    return nightly.evaluate_tick(build_schedule_context(scheduled_execution_time=now)).run_requests


@pytest.fixture(scope="module")
def nightly_twice(world_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Nightly:
    """The default test world through the real `nightly_pipeline` job twice, as the schedule would run it."""
    folder = tmp_path_factory.mktemp("nightly")
    shutil.copytree(world_template, folder / "world")
    instance = DagsterInstance.ephemeral()
    with SandboxServer(folder / "world", TEST_SANDBOX_CONFIG) as sandbox, pytest.MonkeyPatch.context() as env:
        env.setenv("CDP_SANDBOX_URL", sandbox.url)
        env.setenv("CDP_WAREHOUSE", str(folder / "warehouse.duckdb"))
        job = fresh_defs().resolve_job_def("nightly_pipeline")
        ticked = datetime.now(UTC)  # the tick fixes the days the runs land, whenever they finish
        [request] = nightly_schedule_requests(ticked)  # its config, and every day of events in the pull's one step
        runs = [job.execute_in_process(run_config=request.run_config, instance=instance, tags=request.tags,
                                        raise_on_error=False) for _ in range(2)]  # fmt: skip
    assert all(run.success for run in runs)
    events = job.asset_layer.asset_graph.get(AssetKey(["raw", "mixpanel_events"]))
    days = set(events.partitions_def.get_partition_keys(current_time=ticked))
    assert instance.get_materialized_partitions(events.key) == days  # each day shown landed in the UI
    checks = set(job.asset_layer.asset_graph.asset_check_keys)
    return Nightly(folder / "warehouse.duckdb", [run.get_asset_check_evaluations() for run in runs], checks)


def test_the_nightly_job_twice_on_the_default_world_fails_no_check(nightly_twice: Nightly) -> None:
    for run, evaluations in enumerate(nightly_twice.evaluations, start=1):
        assert {e.asset_check_key for e in evaluations} == nightly_twice.checks, f"run {run}: a check did not run"
        failed = [
            f"{e.asset_check_key.to_user_string()} ({e.severity.value}): "
            f"{ {k: v.value for k, v in e.metadata.items()} }"
            for e in evaluations
            if not e.passed
        ]
        assert failed == [], f"run {run} of the nightly job failed checks on a healthy world"
    second = {e.asset_check_key: e.metadata for e in nightly_twice.evaluations[1]}
    rates = [m for key, m in second.items() if key.name == "quarantine_rate"]
    assert rates and all("usual_quarantine_rate" in m for m in rates)  # the second build had a baseline
    rebuilt = second[REBUILD_CHECK]
    [(events,)] = query(nightly_twice.warehouse, "SELECT count(*) FROM identity.record_profiles WHERE stream = $s",
                        {"s": "mixpanel.events"})  # fmt: skip
    assert events > 0 and rebuilt["drift"].value == 0 and rebuilt["nodes"].value > 0


def query(warehouse: Path, sql: str, params: dict[str, object] | None = None) -> list[tuple[object, ...]]:
    with duckdb.connect(str(warehouse), read_only=True) as conn:
        return conn.execute(sql, params or {}).fetchall()


def test_drift_in_the_kept_graph_fails_the_rebuild_comparison(
    nightly_twice: Nightly, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    warehouse = tmp_path / "warehouse.duckdb"
    shutil.copy(nightly_twice.warehouse, warehouse)
    # Two profiles, each with several nodes; one person record of the first is moved to the second, as a
    # stable-id bug would: it is now apart from its own profile's nodes and together with the other's.
    sizes = "SELECT profile_id, count(*) AS n FROM identity.identifier_profiles GROUP BY 1 HAVING count(*) > 2"
    (source, source_size), (target, target_size) = query(warehouse, f"{sizes} ORDER BY 1 LIMIT 2")
    [(stream, record_id)] = query(
        warehouse,
        "SELECT stream, record_id FROM identity.record_profiles WHERE profile_id = $p AND stream <> $events LIMIT 1",
        {"p": source, "events": "mixpanel.events"},
    )
    with duckdb.connect(str(warehouse)) as conn:
        conn.execute(
            "UPDATE identity.record_profiles SET profile_id = $target WHERE stream = $stream AND record_id = $id",
            {"target": target, "stream": stream, "id": record_id},
        )

    monkeypatch.setenv("CDP_WAREHOUSE", str(warehouse))
    defs = fresh_defs()
    result = materialize(
        [*(defs.assets or []), *(defs.asset_checks or [])], resources=build_resources(),
        instance=DagsterInstance.ephemeral(), selection=AssetSelection.assets(GRAPH_KEY), raise_on_error=False,
    )  # fmt: skip  (an hourly build of the graph, with its checks: the moved record is no change it resolves)

    [evaluation] = [e for e in result.get_asset_check_evaluations() if e.asset_check_key == REBUILD_CHECK]
    found = {k: v.value for k, v in evaluation.metadata.items()}
    assert not evaluation.passed and evaluation.severity == AssetCheckSeverity.WARN
    assert found["pairs_only_kept"] == target_size  # the record joined every node of the other profile
    assert found["pairs_only_rebuilt"] == source_size - 1  # and left every other node of its own
    assert found["drift"] == target_size + source_size - 1
    assert {source, target} <= set(found["sample_profiles"].split(", "))

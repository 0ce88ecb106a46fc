"""The Dagster definitions load, validate and carry what the UI shows."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Collection
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from dagster import (
    AssetKey,
    AssetMaterialization,
    DagsterInstance,
    DailyPartitionsDefinition,
    DefaultScheduleStatus,
    DefaultSensorStatus,
    asset,
    build_schedule_context,
    materialize_to_memory,
)
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from cdp_assets.definitions import defs, graph_asset, raw_assets, staging_assets, sync_assets
from cdp_assets.raw import SOURCE_FAILED, SOURCE_STATUS, days_of_streams
from cdp_assets.sync.specs import load as load_syncs
from resources import (
    COMPACTION_DEFERRED,
    COMPACTION_TAG,
    LOOKBACK_VARIABLE,
    WarehouseResource,
    build_resources,
)
from resources.source import first_event_day
from schedules import late_window_tags

ROOT = Path(__file__).resolve().parents[1]


def test_definitions_validate_from_the_workspace_file() -> None:
    dagster = Path(sys.executable).parent / "dagster"
    result = subprocess.run(
        [str(dagster), "definitions", "validate", "-w", "workspace.yaml"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ},
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_both_schedules_run_by_default() -> None:
    schedules = {schedule.name: schedule for schedule in defs.schedules or []}
    assert set(schedules) == {"hourly_pipeline_schedule", "nightly_pipeline_schedule"}
    for schedule in schedules.values():
        assert schedule.default_status == DefaultScheduleStatus.RUNNING
    assert schedules["hourly_pipeline_schedule"].cron_schedule == "5 * * * *"
    assert schedules["nightly_pipeline_schedule"].cron_schedule == "30 2 * * *"


def test_schedules_name_the_days_of_events_each_run_exports() -> None:
    """Mixpanel's and Klaviyo's raw events are partitioned by the same days (a run names one range for both). The
    nightly run exports every day; the hourly one from the first day not landed (a day whose latest pull failed is
    not landed) or the late window before the newest day landed, whichever is earlier, of either stream."""
    graph = defs.resolve_asset_graph()
    partitioned = {key for key in graph.get_all_asset_keys() if graph.get(key).partitions_def is not None}
    assert partitioned == {AssetKey(["raw", "mixpanel_events"]), AssetKey(["raw", "klaviyo_events"])}
    days = graph.get(AssetKey(["raw", "mixpanel_events"])).partitions_def
    assert isinstance(days, DailyPartitionsDefinition) and days.start.date().isoformat() == first_event_day()
    assert all(graph.get(key).partitions_def == days for key in partitioned)
    schedules = {schedule.name: schedule for schedule in defs.schedules or []}
    # Days counted from the first: few of them, as a landing reported costs about 9 ms.
    first_day = datetime.fromisoformat(first_event_day()).replace(tzinfo=UTC)
    at = first_day + timedelta(days=68, hours=2, minutes=30)

    def day(n: int) -> str:
        return (first_day + timedelta(days=n)).date().isoformat()

    keys = days.get_partition_keys(current_time=at)

    def window(name: str, instance: DagsterInstance) -> tuple[str, str]:
        context = build_schedule_context(instance=instance, scheduled_execution_time=at)
        [request] = schedules[f"{name}_schedule"].evaluate_tick(context).run_requests
        return request.tags[ASSET_PARTITION_RANGE_START_TAG], request.tags[ASSET_PARTITION_RANGE_END_TAG]

    def land(first: str, last: str, status: str = "read", streams: Collection[AssetKey] = partitioned) -> None:
        for events in streams:
            for key in keys[keys.index(first): keys.index(last) + 1]:
                instance.report_runless_asset_event(AssetMaterialization(events, partition=key,
                                                                         metadata={SOURCE_STATUS: status}))  # fmt: skip

    with DagsterInstance.local_temp() as instance:
        every_day = (first_event_day(), day(68))
        assert window("nightly_pipeline", instance) == window("hourly_pipeline", instance) == every_day
        land(day(31), day(33))  # a backfill of a few days: the days before them were never read
        assert window("hourly_pipeline", instance) == every_day
        land(keys[0], day(50))
        assert window("hourly_pipeline", instance) == (day(49), day(68))  # a stopped schedule catches up
        land(day(51), day(68))
        assert window("hourly_pipeline", instance) == (day(67), day(68))  # the late window, yesterday
        late = late_window_tags(days_of_streams(), at)  # what the benchmark's hourly runs name
        assert (late[ASSET_PARTITION_RANGE_START_TAG], late[ASSET_PARTITION_RANGE_END_TAG]) == (day(67), day(68))
        land(day(62), day(63), SOURCE_FAILED)  # the source failed during that pull
        assert window("hourly_pipeline", instance) == (day(62), day(68))
        land(day(62), day(68))
        assert window("hourly_pipeline", instance) == (day(67), day(68))
        land(day(65), day(65), SOURCE_FAILED, [AssetKey(["raw", "klaviyo_events"])])  # one stream's day
        assert window("hourly_pipeline", instance) == (day(65), day(68))
        assert window("nightly_pipeline", instance) == every_day


def test_sensors_run_by_default_and_the_privacy_one_starts_the_privacy_job() -> None:
    sensors = {sensor.name: sensor for sensor in defs.sensors or []}
    assert set(sensors) == {"privacy_inbox_sensor", "run_failure_alerts", "check_failure_alerts"}
    assert all(sensor.default_status == DefaultSensorStatus.RUNNING for sensor in sensors.values())
    assert sensors["privacy_inbox_sensor"].job_name == "privacy_requests"
    assert defs.resolve_job_def("privacy_requests") is not None


def test_nightly_job_re_pulls_every_source_in_full() -> None:
    """And replays staging from raw, rebases the identity graph's matcher (identity/basis.py) and plans every sync
    from every row of its view."""
    [nightly] = [schedule for schedule in defs.schedules or [] if schedule.job_name == "nightly_pipeline"]
    [request] = nightly.evaluate_tick(build_schedule_context(scheduled_execution_time=datetime.now(UTC))).run_requests
    config = request.run_config  # the job holds partitioned assets: its run config travels with the request
    full = {name for name, op in config["ops"].items() if op["config"]["full_refresh"]}
    assert full == {asset.op.name for asset in [*raw_assets, *staging_assets, graph_asset, *sync_assets]}


def test_every_asset_is_described_owned_and_grouped_by_its_layer() -> None:
    graph = defs.resolve_asset_graph()
    keys = graph.get_all_asset_keys()
    assert len(keys) == 49
    teams = {"views_marketing": "team:marketing", "views_sales_support": "team:sales-support",
             "views_product": "team:product", "views_executive": "team:executive"}  # fmt: skip
    for key in keys:
        node = graph.get(key)
        layer = key.path[0]
        assert layer in ("raw", "staging", "quarantine", "identity", "privacy", "views", "sync"), key
        assert node.description, key
        assert node.kinds and "duckdb" in node.kinds, key
        if layer == "views":  # one group per owning team; the description says who it is for, the row, freshness
            assert node.owners == [teams[node.group_name]], key
            assert all(part in node.description for part in ("For ", "One row: ", "Fresh: ")), key
        elif layer == "sync":  # owned by the team whose view it sends, next to its destination's kind
            [view] = [parent for parent in graph.get(key).parent_keys if parent.path[0] == "views"]
            assert node.group_name == "sync" and node.owners == graph.get(view).owners, key
            assert len(node.kinds) == 2 and node.description.startswith(load_syncs().syncs[key.path[1]].description)
        else:
            assert node.group_name == layer, key
            assert node.owners == ["team:data-platform"], key
    assert set(teams) <= {graph.get(key).group_name for key in keys}


def test_every_view_has_blocking_governance_checks() -> None:
    graph = defs.resolve_asset_graph()
    views = [key for key in graph.get_all_asset_keys() if key.path[0] == "views"]
    checks = {(spec.asset_key, spec.name): spec for a in defs.assets or [] for spec in a.check_specs}
    for key in views:
        assert checks[(key, "policy_columns")].blocking, key
    consented = {key.path[1] for key, name in checks if name == "consent"}
    assert consented == {"marketing_audiences", "marketing_email_addresses", "marketing_contacts", "customer_360",
                         "product_usage_people"}  # fmt: skip
    assert all(checks[(AssetKey(["views", v]), "consent")].blocking for v in consented)


def test_syncs_run_hourly_and_each_needs_its_destination() -> None:
    hourly = defs.resolve_job_def("hourly_pipeline")
    selected = {key for key in hourly.asset_layer.selected_asset_keys if key.path[0] == "sync"}
    assert {key.path[1] for key in selected} == set(load_syncs().syncs)
    for spec in load_syncs().syncs.values():
        node = defs.resolve_assets_def(AssetKey(["sync", spec.name]))
        assert f"destination_{spec.destination}" in node.required_resource_keys


def test_hourly_runs_leave_the_compaction_of_thinned_tables_to_the_nightly_one(tmp_path: Path) -> None:
    """The hourly job's runs checkpoint without compacting (WarehouseResource); the nightly job's and any other
    run's compact."""

    @asset
    def vacuum_tasks(warehouse: WarehouseResource) -> int:
        with warehouse.get_connection() as conn:
            return conn.execute("SELECT current_setting('max_vacuum_tasks')").fetchall()[0][0]

    runs = {name: defs.resolve_job_def(name).tags for name in ("hourly_pipeline", "nightly_pipeline")}
    tasks = {run: materialize_to_memory(
        [vacuum_tasks], resources={"warehouse": WarehouseResource(database=str(tmp_path / "w.duckdb"))}, tags=tags,
    ).output_for_node("vacuum_tasks") for run, tags in {**runs, "on demand": {}}.items()}
    assert runs["hourly_pipeline"].get(COMPACTION_TAG) == COMPACTION_DEFERRED
    assert tasks["hourly_pipeline"] == 0 and tasks["nightly_pipeline"] > 0 and tasks["on demand"] > 0


def test_the_look_back_of_incremental_pulls_is_set_once_for_the_sources_that_read_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Stripe's events, HubSpot's search and Klaviyo's filter read again before their mark; Zendesk's cursor and
    Mixpanel's day windows need no look-back."""
    monkeypatch.setenv(LOOKBACK_VARIABLE, "5")
    resources = build_resources()
    assert {name: resources[name].lookback_seconds for name in ("stripe", "hubspot", "klaviyo")} == dict.fromkeys(
        ("stripe", "hubspot", "klaviyo"), 5)
    monkeypatch.setenv(LOOKBACK_VARIABLE, "1m")
    with pytest.raises(ValueError, match=f"{LOOKBACK_VARIABLE} is a whole number of seconds, not '1m'"):
        build_resources()

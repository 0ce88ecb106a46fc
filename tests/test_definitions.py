"""The Dagster definitions load, validate and carry what the UI shows."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from dagster import DefaultScheduleStatus

from cdp_assets.definitions import defs, raw_assets

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


def test_nightly_job_re_pulls_every_source_in_full() -> None:
    config = defs.resolve_job_def("nightly_pipeline").run_config or {}
    full = {name for name, op in config["ops"].items() if op["config"]["full_refresh"]}
    assert full == {asset.op.name for asset in raw_assets}


def test_every_asset_is_described_owned_and_grouped_by_its_layer() -> None:
    graph = defs.resolve_asset_graph()
    keys = graph.get_all_asset_keys()
    assert len(keys) == 30
    for key in keys:
        node = graph.get(key)
        layer = key.path[0]
        assert layer in ("raw", "staging", "quarantine", "identity"), key
        assert node.group_name == layer, key
        assert node.description, key
        assert node.owners == ["team:data-platform"], key
        assert node.kinds and "duckdb" in node.kinds, key

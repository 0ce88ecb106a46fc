"""`make run`'s stack as a newcomer gets it: the UI comes up with every asset, both schedules on, a first run green."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from cdp_assets import stack
from cdp_assets.definitions import defs

RUNS_QUERY = "{ runsOrError { ... on Runs { results { runId status jobName } } } }"
SCHEDULES_QUERY = """
query ($selector: RepositorySelector!) {
  schedulesOrError(repositorySelector: $selector) { ... on Schedules { results { name scheduleState { status } } } }
  assetNodes { assetKey { path } }
}
"""
VIEWS_QUERY = """
{ assetNodes { assetKey { path }
  assetMaterializations(limit: 1) { runId metadataEntries { label ... on IntMetadataEntry { intValue } } }
  assetChecksOrError { ... on AssetChecks { checks { name executionForLatestMaterialization { status } } } } } }
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_run_brings_up_the_ui_with_schedules_running_and_a_green_first_run(tmp_path: Path) -> None:
    ui_port = free_port()
    command = [
        sys.executable,
        "-m",
        "cdp_assets.cli",
        "run",
        "--people",
        "300",
        "--data",
        str(tmp_path),
        "--ui-port",
        str(ui_port),
        "--sandbox-port",
        str(free_port()),
        "--tick-seconds",
        "0",
    ]
    log = (tmp_path / "run.log").open("wb")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    ui_url = f"http://127.0.0.1:{ui_port}"
    try:
        location, repository = stack.wait_for_code_location(ui_url, timeout_seconds=240)
        deadline = time.monotonic() + 300
        runs: list[dict[str, str]] = []
        while time.monotonic() < deadline:
            runs = stack.graphql(ui_url, RUNS_QUERY)["runsOrError"]["results"]
            if runs and runs[0]["status"] in ("SUCCESS", "FAILURE", "CANCELED"):
                break
            time.sleep(2)
        assert [(r["jobName"], r["status"]) for r in runs] == [("hourly_pipeline", "SUCCESS")]

        selector = {"repositoryLocationName": location, "repositoryName": repository}
        found = stack.graphql(ui_url, SCHEDULES_QUERY, {"selector": selector})
        states = {s["name"]: s["scheduleState"]["status"] for s in found["schedulesOrError"]["results"]}
        assert states == {"hourly_pipeline_schedule": "RUNNING", "nightly_pipeline_schedule": "RUNNING"}
        shown = {"/".join(node["assetKey"]["path"]) for node in found["assetNodes"]}
        assert shown == {key.to_user_string() for key in defs.resolve_asset_graph().get_all_asset_keys()}

        # Every team view was materialised by that run, shows its row count and passed its checks.
        nodes = stack.graphql(ui_url, VIEWS_QUERY)["assetNodes"]
        views = [node for node in nodes if node["assetKey"]["path"][0] == "views"]
        syncs = [node for node in nodes if node["assetKey"]["path"][0] == "sync"]
        assert len(views) == 11 and len(syncs) == 5
        for node in views:
            [materialization] = node["assetMaterializations"]
            assert materialization["runId"] == runs[0]["runId"], node["assetKey"]
            counts = [e["intValue"] for e in materialization["metadataEntries"] if e["label"] == "dagster/row_count"]
            assert counts and counts[0] > 0, node["assetKey"]
            checks = {c["name"]: c["executionForLatestMaterialization"]["status"]
                      for c in node["assetChecksOrError"]["checks"]}  # fmt: skip
            assert checks.get("policy_columns") == "SUCCEEDED" and set(checks.values()) == {"SUCCEEDED"}, checks
        # ... and every sync sent its view to its sandbox destination, which took every row.
        added = {}
        for node in syncs:
            [materialization] = node["assetMaterializations"]
            assert materialization["runId"] == runs[0]["runId"], node["assetKey"]
            values = {e["label"]: e["intValue"] for e in materialization["metadataEntries"] if "intValue" in e}
            assert values["acknowledged"] == values["added"] and values["rejected"] == 0, node["assetKey"]
            added[node["assetKey"]["path"][1]] = values["added"]
            checks = {c["name"]: c["executionForLatestMaterialization"]["status"]
                      for c in node["assetChecksOrError"]["checks"]}  # fmt: skip
            assert checks == {"no_rejections": "SUCCEEDED", "no_invalid_rows": "SUCCEEDED"}, checks
        assert all(added[name] > 0 for name in ("hubspot_contacts", "zendesk_users", "braze_users", "meta_retargeting"))
    finally:
        process.send_signal(signal.SIGINT)
        exit_code = process.wait(timeout=60)
        log.close()
    assert exit_code == 0, (tmp_path / "run.log").read_text()[-3000:]
    assert (tmp_path / "dagster_home" / "dagster.yaml").exists()
    assert (tmp_path / "warehouse.duckdb").exists()

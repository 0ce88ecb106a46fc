"""The soak: `make run`'s stack left running under trouble, as it will be in production.

Twelve hourly runs back to back while the sandbox world keeps changing and every API injects 10% 5xx, 429 bursts
and dropped connections, with a nightly run launched while the last hourly one is going (it queues behind it). At
the end, staging matches the world, the destinations hold what the views say, no run failed but for an injected
fault its retry got past, and nothing landed or was sent twice. Apart from the quick suite: `make soak`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from cdp_assets import launch, stack
from sandbox.config import TOKEN_ENV, control_headers
from sandbox.runner import SandboxServer
from tests.conftest import Env, Pipeline
from tests.test_ingestion import assert_no_version_landed_twice, assert_staging_matches_world
from tests.test_stack import free_port
from tests.test_sync import SYNCS, assert_destinations_hold_the_state

pytestmark = [pytest.mark.soak, pytest.mark.timeout(5400)]

PEOPLE, HOURLY_RUNS, TICK_SECONDS = 1000, 12, 15
FAULTS = {"default": {"error_rate": 0.1, "burst_429_every": 25, "burst_429_length": 3, "drop_rate": 0.03}}
CALM = {"default": {"error_rate": 0.0, "burst_429_every": 0, "burst_429_length": 0, "drop_rate": 0.0}}
RUNS_QUERY = """{ runsOrError { ... on Runs { results { runId status jobName startTime
  tags { key value } } } } }"""
ROOT = Path(__file__).resolve().parents[1]


def runs(ui_url: str) -> list[dict]:
    return stack.graphql(ui_url, RUNS_QUERY)["runsOrError"]["results"]


def settle(ui_url: str, timeout: float) -> list[dict]:
    """Wait until no run is queued or going (retries included), and return them all."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = runs(ui_url)
        if found and all(r["status"] in ("SUCCESS", "FAILURE", "CANCELED") for r in found):
            time.sleep(45)  # a failed run's retry is launched by the daemon a little later
            if len(runs(ui_url)) == len(found):
                return found
        time.sleep(5)
    raise TimeoutError("runs still going")


def test_twelve_hourly_runs_and_a_nightly_under_faults_lose_nothing_and_send_nothing_twice(tmp_path: Path) -> None:
    ui_port, sandbox_port = free_port(), free_port()
    ui_url, sandbox_url = f"http://127.0.0.1:{ui_port}", f"http://127.0.0.1:{sandbox_port}"
    command = [sys.executable, "-m", "cdp_assets.cli", "run", "--people", str(PEOPLE), "--data", str(tmp_path),
               "--ui-port", str(ui_port), "--sandbox-port", str(sandbox_port), "--tick-seconds", str(TICK_SECONDS)]
    log = (tmp_path / "run.log").open("wb")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        location, repository = stack.wait_for_code_location(ui_url, timeout_seconds=600)
        [first] = settle(ui_url, 900)
        assert (first["jobName"], first["status"]) == ("nightly_pipeline", "SUCCESS")

        token = stack.stack_environment(tmp_path, "127.0.0.1", ui_port, sandbox_port)[TOKEN_ENV]

        def patch(config: dict) -> None:
            requests.patch(f"{sandbox_url}/_sandbox/config", json=config, headers=control_headers(token),
                           timeout=30).raise_for_status()  # fmt: skip

        patch({"faults": FAULTS})
        def scheduled(job: str) -> str:
            """A run of `job` as its schedule would ask for it: its config and its days of events."""
            with pytest.MonkeyPatch.context() as env:
                for name, value in stack.stack_environment(tmp_path, "127.0.0.1", ui_port, sandbox_port).items():
                    env.setenv(name, value)
                run_config, tags = launch.scheduled_run(job)
            return stack.launch_job(ui_url, location, repository, job, run_config=run_config, tags=tags)

        hourly = [scheduled("hourly_pipeline") for _ in range(HOURLY_RUNS)]
        deadline = time.monotonic() + 3600
        while time.monotonic() < deadline:  # wait for the last hourly run to start
            status = {r["runId"]: r["status"] for r in runs(ui_url)}
            if status[hourly[-1]] in ("STARTED", "SUCCESS", "FAILURE"):
                break
            time.sleep(5)
        # The world holds still from here, and Zendesk's export stops holding back its last minute (the runs are
        # now quicker than that minute, and the syncs write Zendesk users), so the end can be compared with it.
        patch({"tick_seconds": 0, "zendesk_recent_exclusion_seconds": 0})
        nightly = scheduled("nightly_pipeline")
        found = settle(ui_url, 3600)
        patch({"faults": CALM})
    finally:
        process.send_signal(signal.SIGINT)
        exit_code = process.wait(timeout=120)
        log.close()
    assert exit_code == 0, (tmp_path / "run.log").read_text()[-3000:]

    # Every run launched succeeded, itself or through the retries of the daemon.
    by_id = {r["runId"]: r for r in found}
    retried = {}
    for run in found:
        tags = {t["key"]: t["value"] for t in run["tags"]}
        if "dagster/root_run_id" in tags:
            retried.setdefault(tags["dagster/root_run_id"], []).append(run)
    for run_id in [*hourly, nightly]:
        attempts = [by_id[run_id], *sorted(retried.get(run_id, []), key=lambda r: r["startTime"])]
        assert attempts[-1]["status"] == "SUCCESS", (run_id, [a["status"] for a in attempts])
    starts = [by_id[r]["startTime"] for r in [*hourly, nightly]]
    assert starts == sorted(starts)  # one at a time, in the order launched: the nightly waited for the hourly

    world = tmp_path / "sandbox"
    pipeline = Pipeline(sandbox_url, tmp_path / "warehouse.duckdb")
    assert_staging_matches_world(pipeline, world)
    assert_no_version_landed_twice(pipeline)
    with SandboxServer(world) as sandbox:  # the destinations as they were left, served again to be read
        assert_destinations_hold_the_state(Env(world, sandbox, pipeline))
    command = [sys.executable, "-m", "cdp_assets.cli", "sync", "--warehouse", str(pipeline.warehouse), "plan",
               "--json"]  # fmt: skip
    plans = json.loads(subprocess.run(command, capture_output=True, text=True, check=True, cwd=ROOT,
                                      env={**os.environ}).stdout)  # fmt: skip
    assert {name for name, plan in plans.items() if plan["added"] or plan["changed"] or plan["removed"]} == set()
    assert set(plans) == set(SYNCS)

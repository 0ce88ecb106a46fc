"""`make run`'s stack as a newcomer gets it, checked the way a data team uses it: the UI and its GraphQL API, the
daemon's schedules and sensors, an hourly run launched by hand, an alert for a failed run, the pages themselves
in a real browser (Debian's Chromium, driven by Playwright), with screenshots under test-artifacts/, and the
command line beside it: `cdp env` in a shell, runs launched into the queue, readers beside a writer, busy ports."""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest
import requests
from dagster import AssetKey, PartitionKeyRange
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
    SCHEDULE_NAME_TAG,
)

from cdp_assets import stack
from cdp_assets.definitions import defs
from sandbox.config import TOKEN_ENV, control_headers

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Chromium as the machine allows it: no sandbox as root, and no calls home (the network is closed).
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]  # fmt: skip
LAYER_GROUPS = ("raw", "staging", "quarantine", "identity", "privacy", "sync", "views_marketing",
                "views_sales_support", "views_product", "views_executive")  # fmt: skip
UI_ERRORS = ("Something went wrong", "Unexpected GraphQL error", "PythonError", "An error occurred")

RUNS_QUERY = "{ runsOrError { ... on Runs { results { runId status jobName tags { key value } } } } }"
STATES_QUERY = """
query ($selector: RepositorySelector!) {
  schedulesOrError(repositorySelector: $selector) { ... on Schedules { results { name scheduleState { status } } } }
  sensorsOrError(repositorySelector: $selector) { ... on Sensors { results { name sensorState { status } } } }
  assetNodes { assetKey { path } }
}
"""
NODES_QUERY = """
{ assetNodes { assetKey { path }
  assetMaterializations(limit: 1) { runId timestamp metadataEntries { label ... on IntMetadataEntry { intValue } } }
  assetChecksOrError { ... on AssetChecks { checks { name executionForLatestMaterialization { status } } } } } }
"""
RUN_PARTITIONS_QUERY = """query ($id: ID!) { runOrError(runId: $id) { ... on Run {
  creationTime tags { key value } assetMaterializations { partition assetKey { path } } } } }"""
TIMED_RUNS_QUERY = "{ runsOrError { ... on Runs { results { runId status jobName startTime endTime } } } }"
# A writer holding the warehouse's lock as a run's step does, until its stdin says to let go; it takes the lock
# in a gap between the steps of any run going now, as a step would.
HOLD_LOCK = """
import sys, time, duckdb
deadline = time.monotonic() + 300
while True:
    try:
        conn = duckdb.connect(sys.argv[1])
        break
    except duckdb.IOException:
        if time.monotonic() > deadline:
            raise
        time.sleep(0.1)
print("locked", flush=True)
sys.stdin.readline()
conn.close()
"""
ASSET_RUN_MUTATION = """
mutation Launch($params: ExecutionParams!) { launchRun(executionParams: $params) { __typename
  ... on LaunchRunSuccess { run { runId } } ... on PythonError { message } } }
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Stack:
    ui_url: str
    sandbox_url: str
    location: str
    repository: str
    data: Path
    started_at: float

    def graphql(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        return stack.graphql(self.ui_url, query, variables)

    def runs(self) -> list[dict[str, Any]]:
        """The runs asked for through `cdp` or the API. A schedule's own ticks are left out: the daemon's clock, not
        the test, decides whether one falls within a test (the hourly one at five past every hour)."""
        found = self.graphql(RUNS_QUERY)["runsOrError"]["results"]
        return [run for run in found if not any(tag["key"] == SCHEDULE_NAME_TAG for tag in run["tags"])]

    def environment(self) -> dict[str, str]:
        """What `cdp env` sets for this stack, for commands run beside it."""
        ui_port, sandbox_port = (int(url.rsplit(":", 1)[1]) for url in (self.ui_url, self.sandbox_url))
        return {**os.environ, **stack.stack_environment(self.data, "127.0.0.1", ui_port, sandbox_port)}

    def control(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """A call to the sandbox's control routes, with the stack's token."""
        headers = control_headers(self.environment()[TOKEN_ENV])
        url = f"{self.sandbox_url}/_sandbox/{path}"
        response = requests.request(method, url, headers=headers, timeout=30, **kwargs)
        response.raise_for_status()
        return response

    def cdp(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "cdp_assets.cli", *args], capture_output=True, text=True,
                              cwd=ROOT, env=self.environment(), timeout=300)  # fmt: skip

    def wait_for(self, run_id: str, timeout: float = 300) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = next((r["status"] for r in self.runs() if r["runId"] == run_id), None)
            if status in ("SUCCESS", "FAILURE", "CANCELED"):
                return status
            time.sleep(0.5)
        raise TimeoutError(f"run {run_id} still going after {timeout}s")


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """`cdp run` (what `make run` starts) on free ports, with alerts posted to the sandbox's webhook receiver."""
    data = tmp_path_factory.mktemp("stack")
    ui_port, sandbox_port = free_port(), free_port()
    sandbox_url = f"http://127.0.0.1:{sandbox_port}"
    command = [sys.executable, "-m", "cdp_assets.cli", "run", "--people", "300", "--data", str(data),
               "--ui-port", str(ui_port), "--sandbox-port", str(sandbox_port), "--tick-seconds", "0"]  # fmt: skip
    environment = {k: v for k, v in os.environ.items() if k != "CDP_ALERT_WEBHOOK_URL"}  # the stack's own receiver
    log = (data / "run.log").open("wb")
    started = time.time()
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=environment)
    ui_url = f"http://127.0.0.1:{ui_port}"
    try:
        location, repository = stack.wait_for_code_location(ui_url, timeout_seconds=240)
        yield Stack(ui_url, sandbox_url, location, repository, data, started)
    finally:
        process.send_signal(signal.SIGINT)
        exit_code = process.wait(timeout=60)
        log.close()
    assert exit_code == 0, (data / "run.log").read_text()[-3000:]


def test_the_first_run_builds_everything_and_an_hourly_run_launched_by_hand_keeps_it_fresh(running: Stack) -> None:
    deadline = time.monotonic() + 300
    runs: list[dict[str, Any]] = []
    while time.monotonic() < deadline and not (runs and runs[-1]["status"] in ("SUCCESS", "FAILURE")):
        runs = running.runs()
        time.sleep(0.5)
    assert [(r["jobName"], r["status"]) for r in runs] == [("nightly_pipeline", "SUCCESS")]

    selector = {"repositoryLocationName": running.location, "repositoryName": running.repository}
    found = running.graphql(STATES_QUERY, {"selector": selector})
    schedules = {s["name"]: s["scheduleState"]["status"] for s in found["schedulesOrError"]["results"]}
    sensors = {s["name"]: s["sensorState"]["status"] for s in found["sensorsOrError"]["results"]}
    assert schedules == {"hourly_pipeline_schedule": "RUNNING", "nightly_pipeline_schedule": "RUNNING"}
    assert sensors == dict.fromkeys(("privacy_inbox_sensor", "run_failure_alerts", "check_failure_alerts"), "RUNNING")
    shown = {"/".join(node["assetKey"]["path"]) for node in found["assetNodes"]}
    assert shown == {key.to_user_string() for key in defs.resolve_asset_graph().get_all_asset_keys()}

    # The hourly job, launched through the GraphQL API as the UI's button does.
    hourly = stack.launch_job(running.ui_url, running.location, running.repository, "hourly_pipeline")
    assert running.wait_for(hourly) == "SUCCESS"

    # Every asset was materialised since the stack started: by the hourly run, or the first run for what only the
    # nightly path builds. Views show their row counts and passed their checks; syncs sent what their views hold.
    nodes = running.graphql(NODES_QUERY)["assetNodes"]
    assert len(nodes) == len(shown)
    added = {}
    for node in nodes:
        key = "/".join(node["assetKey"]["path"])
        [materialization] = node["assetMaterializations"]
        assert float(materialization["timestamp"]) / 1000 >= running.started_at, key
        values = {e["label"]: e["intValue"] for e in materialization["metadataEntries"] if "intValue" in e}
        checks = {c["name"]: c["executionForLatestMaterialization"]["status"]
                  for c in node["assetChecksOrError"]["checks"] if c["executionForLatestMaterialization"]}  # fmt: skip
        layer = node["assetKey"]["path"][0]
        if layer == "views":
            assert values["dagster/row_count"] > 0 and checks["policy_columns"] == "SUCCEEDED", key
            assert set(checks.values()) == {"SUCCEEDED"}, (key, checks)
        elif layer == "sync":
            assert values["rejected"] == 0 and set(checks.values()) == {"SUCCEEDED"}, (key, checks)
            added[node["assetKey"]["path"][1]] = values["added"] + values["unchanged"]
    assert all(added[name] > 0 for name in ("hubspot_contacts", "zendesk_users", "braze_users", "meta_retargeting"))


def test_a_source_refusing_its_key_reaches_the_webhook_and_the_alerts_table(running: Stack) -> None:
    """A source that refuses the key fails its `source_reachable` check; the run goes on, and the alert names the
    source and the variable to fix."""
    running.control("PATCH", "config", json={"credentials": {"stripe": {"api_key": "rotated"}}})
    try:
        params = {
            "selector": {"repositoryLocationName": running.location, "repositoryName": running.repository,
                         "jobName": "__ASSET_JOB", "assetSelection": [{"path": ["raw", "stripe_customers"]}]},
            "executionMetadata": {"tags": [{"key": "dagster/max_retries", "value": "0"}]},
        }  # fmt: skip
        launched = running.graphql(ASSET_RUN_MUTATION, {"params": params})["launchRun"]
        run_id = launched["run"]["runId"]
        assert running.wait_for(run_id) == "SUCCESS"
        deadline, messages = time.monotonic() + 120, []
        while time.monotonic() < deadline and not messages:
            received = running.control("GET", "webhook").json()
            messages = [m for m in received if run_id in m["text"]]
            time.sleep(0.5)
    finally:
        running.control("PATCH", "config", json={"credentials": {"stripe": {"api_key": "sk_test_sandbox"}}})
    [message] = messages
    assert "raw/stripe_customers" in message["text"] and "STRIPE_API_KEY" in message["text"]
    assert "rotated" not in message["text"]
    assert f"{running.ui_url}/runs/{run_id}" in message["text"]
    with duckdb.connect(str(running.data / "alerts.duckdb"), read_only=True) as conn:
        assert conn.execute("SELECT kind, webhook FROM alerts WHERE run_id = $r", {"r": run_id}).fetchall() == [
            ("checks_failed", "posted")]  # fmt: skip


def test_the_asset_graph_and_a_run_page_render_in_a_browser(running: Stack) -> None:
    if not Path(CHROMIUM).exists():
        if os.getenv("CDP_REQUIRE_BROWSER"):
            pytest.fail(f"no Chromium at {CHROMIUM}; .ci/run installs Debian's chromium package")
        pytest.skip("Debian's chromium package is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    [first] = [r for r in running.runs() if r["jobName"] == "nightly_pipeline"]
    ARTIFACTS.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            page.goto(f"{running.ui_url}/asset-groups", wait_until="domcontentloaded")
            skip = page.get_by_role("button", name="Skip")  # the UI's newsletter prompt, once per browser
            skip.wait_for(timeout=30_000)
            skip.click()
            for group in LAYER_GROUPS:
                page.get_by_text(group, exact=True).first.wait_for(timeout=60_000)
            page.wait_for_timeout(2000)  # the graph lays itself out
            page.screenshot(path=ARTIFACTS / f"asset-graph-{stamp}.png", full_page=True)
            graph_text = page.inner_text("body")

            page.goto(f"{running.ui_url}/runs/{first['runId']}", wait_until="domcontentloaded")
            page.get_by_text("Success").first.wait_for(timeout=60_000)
            page.get_by_text("nightly_pipeline").first.wait_for(timeout=60_000)
            page.wait_for_timeout(1000)
            page.screenshot(path=ARTIFACTS / f"run-{stamp}.png")
            run_text = page.inner_text("body")
        finally:
            browser.close()
    for text in (graph_text, run_text):
        assert not [error for error in UI_ERRORS if error in text]
    assert all(group in graph_text for group in LAYER_GROUPS)
    assert "Errored (0)" in run_text


def queued_run_id(launched: subprocess.CompletedProcess[str]) -> str:
    """The run id `cdp launch` (or a command writing through the queue) printed: `queued run <id> (...)`."""
    assert launched.returncode == 0 and "Traceback" not in launched.stderr, launched.stderr
    return launched.stdout.split("queued run ", 1)[1].split()[0]


def test_commands_beside_a_writer_wait_saying_who_holds_the_warehouse_then_answer(running: Stack) -> None:
    email = running.cdp("profile", "sample", "--field", "email", "--limit", "1").stdout.strip()
    readers = {"sync status": ("sync", "status"), "privacy status": ("privacy", "status"),
               "profile explain": ("profile", "explain", "--email", email)}  # fmt: skip
    warehouse = running.data / "warehouse.duckdb"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(warehouse)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    logs = {name: running.data / f"{name.replace(' ', '-')}.stderr" for name in readers}
    started: dict[str, subprocess.Popen[str]] = {}
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        for name, command in readers.items():
            with logs[name].open("w") as log:
                started[name] = subprocess.Popen([sys.executable, "-m", "cdp_assets.cli", *command], text=True,
                                                 stdout=subprocess.PIPE, stderr=log, cwd=ROOT,
                                                 env=running.environment())  # fmt: skip
        deadline = time.monotonic() + 120  # every command is waiting for the lock, and says so
        while time.monotonic() < deadline and not all("waiting for" in log.read_text() for log in logs.values()):
            assert all(process.poll() is None for process in started.values()), "a command did not wait"
            time.sleep(0.2)
    finally:
        holder.communicate("let go\n", timeout=30)
    answers = {name: process.communicate(timeout=300)[0] for name, process in started.items()}
    for name, process in started.items():
        stderr = logs[name].read_text()
        assert process.returncode == 0 and "Traceback" not in stderr, (name, stderr)
        assert f"{warehouse}: its lock is held by PID {holder.pid} (" in stderr and f"got {warehouse}" in stderr
    assert "hubspot_contacts:" in answers["sync status"] and "rows refused" in answers["sync status"]
    assert answers["privacy status"].strip()
    assert answers["profile explain"].startswith("profile prof_") and email in answers["profile explain"]


def test_a_launch_from_the_command_line_waits_its_turn_in_the_queue_while_readers_answer(running: Stack) -> None:
    email = running.cdp("profile", "sample", "--field", "email", "--limit", "1").stdout.strip()
    hourly = queued_run_id(running.cdp("launch", "--job", "hourly_pipeline"))
    sync = queued_run_id(running.cdp("launch", "--assets", "sync/meta_retargeting"))
    deadline, statuses = time.monotonic() + 300, {}
    while time.monotonic() < deadline and statuses.get(hourly) != "STARTED":
        statuses = {r["runId"]: r["status"] for r in running.runs()}
        assert statuses[hourly] in ("QUEUED", "STARTING", "STARTED"), statuses[hourly]
        time.sleep(0.5)
    assert statuses[sync] == "QUEUED", "one run at a time: the launched one waits for the hourly run"

    # Beside the hourly run, which takes and lets go of the warehouse step by step, readers answer (after a wait).
    for command in (("sync", "status"), ("privacy", "status"), ("profile", "explain", "--email", email)):
        answered = running.cdp(*command)
        assert answered.returncode == 0 and "Traceback" not in answered.stderr, (command, answered.stderr)
        assert answered.stdout.strip(), command

    assert running.wait_for(hourly) == "SUCCESS" and running.wait_for(sync) == "SUCCESS"
    runs = {r["runId"]: r for r in running.graphql(TIMED_RUNS_QUERY)["runsOrError"]["results"]}
    assert runs[sync]["jobName"] == "__ASSET_JOB" and runs[sync]["startTime"] >= runs[hourly]["endTime"]


def test_each_day_of_events_is_a_partition_the_first_run_lands_and_a_launch_can_name(running: Stack) -> None:
    """Mixpanel's and Klaviyo's raw events are partitioned by day: the first run, asked for as the nightly schedule
    asks, lands every day of both (the UI shows each one landed); `cdp launch --days` runs again the days it names
    and no other."""

    def days_landed(run_id: str, events: AssetKey) -> set[str]:
        found = running.graphql(RUN_PARTITIONS_QUERY, {"id": run_id})["runOrError"]
        return {m["partition"] for m in found["assetMaterializations"] if m["assetKey"]["path"] == events.path}

    mixpanel, klaviyo = AssetKey(["raw", "mixpanel_events"]), AssetKey(["raw", "klaviyo_events"])
    [first] = [run["runId"] for run in running.runs() if run["jobName"] == "nightly_pipeline"]  # make run's
    assert running.wait_for(first) == "SUCCESS"
    # Every day there was when the run was asked for: its range names the days, fixed when `cdp run` asked, between
    # the stack's start and the run's creation (a night may fall between them), not when this test looks.
    run = running.graphql(RUN_PARTITIONS_QUERY, {"id": first})["runOrError"]
    tags = {tag["key"]: tag["value"] for tag in run["tags"]}
    days = defs.resolve_asset_graph().get(mixpanel).partitions_def
    every_day = days.get_partition_keys_in_range(PartitionKeyRange(tags[ASSET_PARTITION_RANGE_START_TAG],
                                                                   tags[ASSET_PARTITION_RANGE_END_TAG]))  # fmt: skip
    asked_between = (datetime.fromtimestamp(running.started_at, UTC), datetime.fromtimestamp(run["creationTime"], UTC))
    assert every_day in [days.get_partition_keys(current_time=moment) for moment in asked_between]
    assert days_landed(first, mixpanel) == days_landed(first, klaviyo) == set(every_day)

    today = datetime.now(UTC).date()
    chosen = [(today - timedelta(days=back)).isoformat() for back in (9, 8, 7)]
    launched = queued_run_id(running.cdp("launch", "--assets", "raw/mixpanel_events", "--days",
                                         f"{chosen[0]}..{chosen[-1]}"))  # fmt: skip
    assert running.wait_for(launched) == "SUCCESS"
    assert days_landed(launched, mixpanel) == set(chosen) and not days_landed(launched, klaviyo)
    refused = running.cdp("launch", "--assets", "raw/mixpanel_events", "--days", f"{chosen[-1]}..{chosen[0]}")
    assert refused.returncode == 2 and "the first day is after the last" in refused.stderr


def test_commands_that_write_the_warehouse_run_as_queued_jobs(running: Stack) -> None:
    email = running.cdp("profile", "sample", "--field", "email", "--limit", "1").stdout.strip()
    never = running.cdp("profile", "never-link", f"email:{email}", "--reason", "a shared mailbox", "--wait")
    process = running.cdp("privacy", "process", "--wait")
    jobs = {r["runId"]: (r["jobName"], r["status"]) for r in running.runs()}
    assert jobs[queued_run_id(never)] == ("never_link", "SUCCESS")
    assert jobs[queued_run_id(process)] == ("privacy_requests", "SUCCESS")
    with duckdb.connect(str(running.data / "warehouse.duckdb"), read_only=True) as conn:
        rules = conn.execute("SELECT a, b, reason FROM identity.never_link").fetchall()
    assert (f"email:{email}", None, "a shared mailbox") in rules


def test_cdp_env_gives_a_shell_the_commands_and_the_stack_without_echoing_a_secret(running: Stack) -> None:
    bin_dir = Path(sys.executable).parent
    ui_port, sandbox_port = running.ui_url.rsplit(":", 1)[1], running.sandbox_url.rsplit(":", 1)[1]
    env_command = f"{bin_dir}/cdp env --data {running.data} --ui-port {ui_port} --sandbox-port {sandbox_port}"
    bare = {"HOME": os.environ.get("HOME", "/root"), "PATH": "/usr/bin:/bin", "STRIPE_API_KEY": "sk_live_mine"}
    script = (f'eval "$({env_command})" && command -v cdp dg dagster && cdp sync status --sync hubspot_contacts'
              ' && dg --version'
              ' && echo "$DAGSTER_HOME $CDP_WAREHOUSE $CDP_UI_URL $CDP_SANDBOX_URL $STRIPE_API_KEY"')  # fmt: skip
    shell = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=bare, cwd="/", timeout=120)
    assert shell.returncode == 0 and "Traceback" not in shell.stderr, shell.stderr
    lines = shell.stdout.splitlines()
    assert lines[:3] == [str(bin_dir / name) for name in ("cdp", "dg", "dagster")]
    assert lines[3].startswith("hubspot_contacts:") and any(line.startswith("dg, version 1.13") for line in lines)
    data = running.data.resolve()
    assert lines[-1] == (f"{data / 'dagster_home'} {data / 'warehouse.duckdb'} {running.ui_url} "
                         f"{running.sandbox_url} sk_live_mine")  # fmt: skip
    exports = subprocess.run(env_command.split(), capture_output=True, text=True, env=bare, check=True).stdout
    assert "sk_live_mine" not in exports and "# STRIPE_API_KEY is already set" in exports


def test_cdp_env_reads_the_sandbox_token_from_its_file_when_run(tmp_path: Path) -> None:
    """No stack needed: the exports name the token's file, and a shell running them gets the token and the
    webhook URL holding it."""
    bare = {"HOME": os.environ.get("HOME", "/root"), "PATH": "/usr/bin:/bin"}
    command = [str(Path(sys.executable).parent / "cdp"), "env", "--data", str(tmp_path), "--sandbox-port", "8799"]
    exports = subprocess.run(command, capture_output=True, text=True, env=bare, check=True, timeout=120).stdout
    token = (tmp_path / stack.SANDBOX_TOKEN_FILE).read_text().strip()
    assert token not in exports and (tmp_path / stack.PRIVACY_KEY_FILE).read_text().strip() not in exports
    script = f'eval "$({shlex.join(command)})" && echo "${TOKEN_ENV} $CDP_ALERT_WEBHOOK_URL"'
    shell = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=bare, timeout=120)
    assert shell.stdout.split() == [token, f"http://127.0.0.1:8799/_sandbox/webhook/{token}"], shell.stderr


def test_a_token_file_others_can_read_stops_the_launcher_saying_what_to_do(tmp_path: Path) -> None:
    token_file = tmp_path / stack.SANDBOX_TOKEN_FILE
    token_file.write_text("known\n")
    token_file.chmod(0o644)
    with pytest.raises(SystemExit) as stopped:
        stack.stack_environment(tmp_path, "127.0.0.1", 3000, 8765)
    assert f"chmod 600 {token_file}" in str(stopped.value) and "control token" in str(stopped.value)


@pytest.mark.parametrize("flag", ["--ui-port", "--sandbox-port"])
def test_cdp_run_on_a_busy_port_stops_at_once_naming_the_port_and_the_flag(flag: str, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        ports = {"--ui-port": free_port(), "--sandbox-port": free_port(), flag: busy}
        started = time.monotonic()
        result = subprocess.run(
            [sys.executable, "-m", "cdp_assets.cli", "run", "--data", str(tmp_path),
             *(str(part) for item in ports.items() for part in item)],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        seconds = time.monotonic() - started
    assert result.returncode != 0 and seconds < 10, (result.returncode, seconds)
    assert f"port {busy} " in result.stderr and f"choose another with {flag} N" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "sandbox").exists(), "nothing is built or started before the ports are checked"

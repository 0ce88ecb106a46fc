"""The local stack behind `make run`: the sandbox server and `dagster dev`, started and stopped together."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import requests

from resources import PROJECT_ROOT

SANDBOX_ENV_FILE = PROJECT_ROOT / "resources" / "sandbox.env"
INSTANCE_TEMPLATE = PROJECT_ROOT / "schedules" / "dagster.yaml"

LOCATIONS_QUERY = """
{ workspaceOrError { __typename ... on Workspace { locationEntries { name loadStatus
  locationOrLoadError { __typename ... on RepositoryLocation { repositories { name } }
                        ... on PythonError { message } } } } } }
"""
LAUNCH_MUTATION = """
mutation Launch($params: ExecutionParams!) { launchRun(executionParams: $params) { __typename
  ... on LaunchRunSuccess { run { runId } } ... on PythonError { message }
  ... on RunConfigValidationInvalid { errors { message } } } }
"""


def sandbox_credentials() -> dict[str, str]:
    """The sandbox's credentials (resources/sandbox.env), without overriding what the environment sets."""
    values = {}
    for line in SANDBOX_ENV_FILE.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, value = line.partition("=")
            values[name.strip()] = value.strip()
    return {**values, **{k: v for k, v in os.environ.items() if k in values}}


def prepare_dagster_home(folder: Path) -> Path:
    """A persistent DAGSTER_HOME with the project's instance settings, so run history survives restarts."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(INSTANCE_TEMPLATE, folder / "dagster.yaml")
    return folder


def graphql(ui_url: str, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
    response = requests.post(f"{ui_url}/graphql", json={"query": query, "variables": variables or {}}, timeout=30)
    response.raise_for_status()
    body = response.json()
    if body.get("errors"):
        raise RuntimeError(f"GraphQL error: {body['errors']}")
    return body["data"]


def wait_for_code_location(ui_url: str, timeout_seconds: float = 180) -> tuple[str, str]:
    """Wait for the webserver and the code location; returns (location name, repository name)."""
    deadline = time.monotonic() + timeout_seconds
    last_problem = "webserver not answering"
    while time.monotonic() < deadline:
        try:
            requests.get(f"{ui_url}/server_info", timeout=5).raise_for_status()
            entries = graphql(ui_url, LOCATIONS_QUERY)["workspaceOrError"]["locationEntries"]
            for entry in entries:
                location = entry["locationOrLoadError"] or {}
                if location.get("__typename") == "RepositoryLocation":
                    return entry["name"], location["repositories"][0]["name"]
                if location.get("__typename") == "PythonError":
                    raise RuntimeError(f"code location {entry['name']} failed to load: {location['message']}")
                last_problem = f"code location {entry['name']} is {entry['loadStatus']}"
        except requests.RequestException as exc:
            last_problem = str(exc)
        time.sleep(1)
    raise TimeoutError(f"Dagster did not come up at {ui_url}: {last_problem}")


def launch_job(ui_url: str, location: str, repository: str, job_name: str) -> str:
    """Launch a job through the GraphQL API, as the UI's launch button does; returns the run id."""
    params = {"selector": {"repositoryLocationName": location, "repositoryName": repository, "jobName": job_name}}
    result = graphql(ui_url, LAUNCH_MUTATION, {"params": params})["launchRun"]
    if result["__typename"] != "LaunchRunSuccess":
        raise RuntimeError(f"launching {job_name} failed: {result}")
    return result["run"]["runId"]


def start_dagster_dev(host: str, port: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """`dagster dev` in its own process group, so Ctrl-C reaches it through `stop` only, cleanly."""
    command = [str(Path(sys.executable).parent / "dagster"), "dev", "-w", "workspace.yaml", "-h", host, "-p", str(port)]
    return subprocess.Popen(command, cwd=PROJECT_ROOT, env=env, start_new_session=True)


def stop(process: subprocess.Popen[bytes], timeout_seconds: float = 30) -> None:
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGINT)
    try:
        process.wait(timeout_seconds)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()

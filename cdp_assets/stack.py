"""The local stack behind `make run`: the sandbox server and `dg dev`, started and stopped together, and the
environment they run with, which `cdp env` gives a shell so its commands reach the same stack."""

from __future__ import annotations

import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests

from resources import PRIVACY_KEY, PROJECT_ROOT
from sandbox.config import TOKEN_ENV, WEBHOOK_PATH, kept_secret, new_token, webhook_url

SANDBOX_ENV_FILE = PROJECT_ROOT / "resources" / "sandbox.env"
INSTANCE_TEMPLATE = PROJECT_ROOT / "schedules" / "dagster.yaml"
SANDBOX_HOST = "127.0.0.1"
PRIVACY_KEY_FILE = "privacy.key"
SANDBOX_TOKEN_FILE = "sandbox.token"  # in the data folder, mode 600: the sandbox's control token
LAUNCH_SECONDS = 300  # what a launch may take: a run naming many days is slow to create (launch_job)

LOCATIONS_QUERY = """
{ workspaceOrError { __typename ... on Workspace { locationEntries { name loadStatus
  locationOrLoadError { __typename ... on RepositoryLocation { repositories { name } }
                        ... on PythonError { message } } } } } }
"""
LAUNCH_MUTATION = """
mutation Launch($params: ExecutionParams!) { launchRun(executionParams: $params) { __typename
  ... on LaunchRunSuccess { run { runId } } ... on Error { message }
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


def privacy_key_path(data: Path) -> Path:
    return data / PRIVACY_KEY_FILE


def sandbox_token_path(data: Path) -> Path:
    return data / SANDBOX_TOKEN_FILE


def kept(path: Path, purpose: str, make: Callable[[], str] = new_token) -> str:
    """A secret kept in a file of the data folder (see `kept_secret`); a file others can read, or an empty one,
    stops the launcher with what to do and what the secret is for, not a traceback."""
    try:
        return kept_secret(path, make)
    except (PermissionError, ValueError) as exc:
        raise SystemExit(f"{exc} ({purpose})") from None


def privacy_key(data: Path) -> str:
    """The data folder's privacy key: random, written once to `<data>/privacy.key` readable by its owner alone,
    then reused, so the suppression digests of one warehouse stay comparable run after run."""
    purpose = "the privacy key: suppression digests depend on it"
    return kept(privacy_key_path(data), purpose, lambda: secrets.token_hex(32))


def launcher_environment(data: Path) -> dict[str, str]:
    """What every local launcher (`cdp run`, `cdp env`, `cdp pipeline`, `cdp bench`, the tests) sets besides the
    sandbox's URL: the sandbox's credentials and the data folder's privacy key, each unless the environment
    already sets it."""
    key = os.environ.get(PRIVACY_KEY) or privacy_key(data)
    return {**sandbox_credentials(), PRIVACY_KEY: key}


def stack_environment(data: Path, host: str, ui_port: int, sandbox_port: int) -> dict[str, str]:
    """The variables of the stack that `cdp run` starts with these options: it runs Dagster with them, and `cdp env`
    hands them to a shell, so the commands typed there reach the same warehouse, run history and UI. Credentials
    already set in the environment are kept; CDP_UI_URL (the links in alerts) is always this stack's own, so a
    shell of one stack that starts another (a second `cdp run`, the tests) links to the right UI. The sandbox's
    control token is the data folder's own (kept in SANDBOX_TOKEN_FILE), and alerts go to the sandbox's webhook
    receiver unless the environment names another chat tool's webhook, which is kept and not repeated here."""
    sandbox_url = f"http://{SANDBOX_HOST}:{sandbox_port}"
    token = kept(sandbox_token_path(data), "the sandbox's control token")
    chosen = os.environ.get("CDP_ALERT_WEBHOOK_URL", "")
    own = not chosen or WEBHOOK_PATH in chosen  # unset, or another sandbox's receiver
    return {
        **launcher_environment(data),
        "DAGSTER_HOME": str(prepare_dagster_home(data / "dagster_home").resolve()),
        "CDP_WAREHOUSE": str((data / "warehouse.duckdb").resolve()),
        "CDP_SANDBOX_URL": sandbox_url,
        TOKEN_ENV: token,
        **({"CDP_ALERT_WEBHOOK_URL": webhook_url(sandbox_url, token)} if own else {}),
        "CDP_UI_URL": f"http://{host}:{ui_port}",
    }


def shell_words(data: Path, environment: dict[str, str]) -> dict[str, str]:
    """What `cdp env` exports in place of a secret's value: shell words that read it from its file (or build it
    from a variable read so) when the lines are run, so the secret is never printed."""
    files = {PRIVACY_KEY: privacy_key_path(data), TOKEN_ENV: sandbox_token_path(data)}
    words = {name: f'"$(cat {shlex.quote(str(path.resolve()))})"' for name, path in files.items()}
    if "CDP_ALERT_WEBHOOK_URL" in environment:  # set here only to the sandbox's receiver, the token in its path
        receiver = shlex.quote(webhook_url(environment["CDP_SANDBOX_URL"], ""))
        words["CDP_ALERT_WEBHOOK_URL"] = f'{receiver}"${TOKEN_ENV}"'
    return words


def cannot_listen(host: str, port: int) -> OSError | None:
    """Why a server could not listen on host:port now (bound as uvicorn binds, with SO_REUSEADDR), or None."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
    except OSError as exc:  # taken, not an address of this machine, or a host name that does not resolve
        return exc
    return None


def prepare_dagster_home(folder: Path) -> Path:
    """A persistent DAGSTER_HOME with the project's instance settings, so run history survives restarts."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(INSTANCE_TEMPLATE, folder / "dagster.yaml")
    return folder


def graphql(ui_url: str, query: str, variables: dict[str, Any] | None = None, timeout: float = 30) -> dict[str, Any]:
    response = requests.post(f"{ui_url}/graphql", json={"query": query, "variables": variables or {}},
                             timeout=timeout)
    response.raise_for_status()
    body = response.json()
    if body.get("errors"):
        raise RuntimeError(f"GraphQL error: {body['errors']}")
    return body["data"]


class NotReady(Exception):
    """No webserver answers, or its code location is still loading."""


def code_location(ui_url: str) -> tuple[str, str]:
    """The webserver's code location as (location name, repository name); NotReady until it is loaded."""
    try:
        requests.get(f"{ui_url}/server_info", timeout=5).raise_for_status()
        entries = graphql(ui_url, LOCATIONS_QUERY)["workspaceOrError"]["locationEntries"]
    except requests.RequestException as exc:
        raise NotReady(f"no Dagster webserver answers at {ui_url} ({type(exc).__name__})") from exc
    for entry in entries:
        location = entry["locationOrLoadError"] or {}
        if location.get("__typename") == "RepositoryLocation":
            return entry["name"], location["repositories"][0]["name"]
        if location.get("__typename") == "PythonError":
            raise RuntimeError(f"code location {entry['name']} failed to load: {location['message']}")
    loading = ", ".join(f"{entry['name']} is {entry['loadStatus']}" for entry in entries)
    raise NotReady(f"code location {loading or 'missing'} at {ui_url}")


def wait_for_code_location(
    ui_url: str, timeout_seconds: float = 180, process: subprocess.Popen[bytes] | None = None
) -> tuple[str, str]:
    """Wait for the webserver and its code location, or for `process` (what serves them) to end first."""
    deadline = time.monotonic() + timeout_seconds
    while True:
        try:
            return code_location(ui_url)
        except NotReady as exc:
            problem = str(exc)
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"dg dev stopped (exit code {process.returncode}) before the UI came up; "
                               "its log above says why")  # fmt: skip
        if time.monotonic() >= deadline:
            raise TimeoutError(f"Dagster did not come up at {ui_url} in {timeout_seconds:.0f}s: {problem}")
        time.sleep(1)


def launch_job(
    ui_url: str,
    location: str,
    repository: str,
    job_name: str,
    assets: list[list[str]] | None = None,
    run_config: dict[str, Any] | None = None,
    tags: dict[str, str] | None = None,
) -> str:
    """Launch a job (or `assets`, given as key paths, of the implicit asset job) through the GraphQL API, as the
    UI's launch button does, so the instance's run queue takes it; returns the run id."""
    selector: dict[str, Any] = {"repositoryLocationName": location, "repositoryName": repository, "jobName": job_name}
    if assets is not None:
        selector["assetSelection"] = [{"path": path} for path in assets]
    params = {
        "selector": selector,
        "runConfigData": run_config or {},
        "executionMetadata": {"tags": [{"key": key, "value": value} for key, value in (tags or {}).items()]},
    }
    # A run naming every day of events takes Dagster about 12 s to create at 1,436 days on an idle two-core host
    # (1.4 s for two days): it works out the run's partitions of each asset. Under load, several times that.
    result = graphql(ui_url, LAUNCH_MUTATION, {"params": params}, timeout=LAUNCH_SECONDS)["launchRun"]
    if result["__typename"] != "LaunchRunSuccess":
        problems = [error["message"] for error in result.get("errors", [])] or [result.get("message")]
        raise RuntimeError(f"launching {job_name} failed ({result['__typename']}): {'; '.join(map(str, problems))}")
    return result["run"]["runId"]


def start_dg_dev(host: str, port: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """`dg dev` in its own process group, so Ctrl-C reaches it through `stop` only, cleanly."""
    command = [str(Path(sys.executable).parent / "dg"), "dev", "-w", "workspace.yaml", "-h", host, "-p", str(port)]
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

"""Shared fixtures: a small sandbox world served over real HTTP, and pipeline runs through Dagster."""

from __future__ import annotations

import copy
import json
import os
import pickle
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import duckdb
import pytest
from dagster import AssetKey, AssetSelection, DagsterInstance, RunConfig, materialize
from filelock import FileLock

from cdp_assets import stack
from cdp_assets.sync.assets import sync_key
from cdp_assets.sync.specs import load as load_syncs
from sandbox.runner import SandboxServer
from sandbox.store import Record, WorldStore

TEST_PEOPLE = 400
TEST_SEED = 7
TEST_ANCHOR = 1_780_000_000  # a fixed "now" for the world's history, so every session builds the same world

# Documented limits stay on, except Zendesk's 10 export calls a minute, which would make
# tests that run the pipeline several times wait most of a minute. Zendesk's exclusion of
# the last minute's changes is off so that a change made by a test is visible at once, and
# its bulk jobs start after a tenth of a second rather than half a second.
TEST_SANDBOX_CONFIG: dict[str, Any] = {
    "limits": {"zendesk": {"export": {"max": 120, "seconds": 60}}},
    "zendesk_recent_exclusion_seconds": 0,
    "accounts": {"zendesk_job_seconds": 0.1},
}


def with_config(patch: dict[str, Any]) -> dict[str, Any]:
    """The tests' sandbox config with `patch` merged in, one level deep."""
    config = copy.deepcopy(TEST_SANDBOX_CONFIG)
    for key, value in patch.items():
        config[key] = {**config.get(key, {}), **value} if isinstance(value, dict) else value
    return config


# The tests launch the pipeline as `cdp pipeline` does: the sandbox's credentials, the privacy key of their data
# folder (data/tests/privacy.key, made once and shared by every session and worker) and the sandbox as every
# service's default, which each Pipeline points at its own sandbox. Set on import: test modules load the
# definitions, which need them, as they are collected.
TEST_DATA = Path(__file__).resolve().parents[1] / "data" / "tests"
os.environ.update(stack.launcher_environment(TEST_DATA))
os.environ.setdefault("CDP_SANDBOX_URL", "http://127.0.0.1:8765")


def built_once(tmp_path_factory: pytest.TempPathFactory, name: str, build: Callable[[Path], None]) -> Path:
    """A folder that `build` fills once per test session, however many xdist workers ask for it.

    Session fixtures are per worker; a read-only one built by every worker costs the suite its build time again.
    The first worker to ask builds it under a lock in the folder the workers share; the others wait and reuse it.
    """
    shared = tmp_path_factory.getbasetemp().parent if os.environ.get("PYTEST_XDIST_WORKER") else None
    if shared is None:
        folder = tmp_path_factory.mktemp(name)
        build(folder)
        return folder
    folder, done = shared / name, shared / f"{name}.built"
    with FileLock(shared / f"{name}.lock"):
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)  # a build that failed part way starts over
            folder.mkdir()
            build(folder)
            done.touch()
    return folder


@pytest.fixture(scope="session")
def world_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from sandbox.world import build_world

    return built_once(
        tmp_path_factory, "world-template",
        lambda folder: build_world(folder, people=TEST_PEOPLE, seed=TEST_SEED, anchor=TEST_ANCHOR),
    )  # fmt: skip


@pytest.fixture
def world(world_template: Path, tmp_path: Path) -> Path:
    """A fresh copy of the template world that a test may change."""
    folder = tmp_path / "world"
    shutil.copytree(world_template, folder)
    return folder


@pytest.fixture
def sandbox(world: Path) -> Iterator[SandboxServer]:
    with SandboxServer(world, TEST_SANDBOX_CONFIG) as server:
        yield server


@dataclass
class RunOutcome:
    success: bool
    metadata: dict[str, dict[str, Any]]  # asset path ("raw/stripe_customers") -> metadata values
    run_id: str
    checks: dict[str, bool]  # "asset path:check name" -> passed


class Pipeline:
    """Runs the project's assets through Dagster against one sandbox and one warehouse file.

    Syncs run only when asked (`syncs=True`): they write to the sandbox's HubSpot and Zendesk, which tests of
    the other layers compare with what was pulled. `resource_fields` sets fields of resources, by resource key
    (fewer retries for a connector whose service a test takes down, say).
    """

    def __init__(
        self,
        sandbox_url: str,
        warehouse: Path,
        syncs: bool = False,
        resource_fields: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        self.sandbox_url = sandbox_url
        self.warehouse = warehouse
        self.syncs = syncs
        self.resource_fields = resource_fields or {}
        self.instance = DagsterInstance.ephemeral()

    def run(
        self,
        full: bool = False,
        selection: list[str] | AssetSelection | None = None,
        raise_on_error: bool = True,
        config: dict[str, dict[str, Any]] | None = None,
        nightly_checks: bool | None = None,
        tags: dict[str, str] | None = None,
    ) -> RunOutcome:
        """Materialise every asset (syncs only if this pipeline has them), or a selection (assets named like
        "raw/stripe_customers"), with `config` by op name for other assets than pulls (syncs, say). As in the
        hourly job, a run that is not `full` leaves out the nightly comparisons of what the hourly runs kept
        (definitions.NIGHTLY_CHECKS), unless `nightly_checks` asks for them, and carries the hourly job's tags;
        `tags` adds others (the days a pull of events exports, say)."""
        os.environ["CDP_SANDBOX_URL"] = self.sandbox_url
        os.environ["CDP_WAREHOUSE"] = str(self.warehouse)
        from cdp_assets.definitions import NIGHTLY_CHECKS, defs, refresh_ops
        from resources import build_resources

        if isinstance(selection, list):
            selection = AssetSelection.assets(*(AssetKey.from_user_string(k) for k in selection))
        elif selection is None:
            selection = AssetSelection.all() if self.syncs else AssetSelection.all() - AssetSelection.groups("sync")
        if not (full if nightly_checks is None else nightly_checks):
            selection = selection - AssetSelection.checks(*NIGHTLY_CHECKS)
        assets = [*(defs.assets or []), *(defs.asset_checks or [])]
        ops = refresh_ops(full, selection.resolve(defs.resolve_asset_graph()))
        ops.update({name: {"config": values} for name, values in (config or {}).items()})
        resources = build_resources()
        for key, fields in self.resource_fields.items():
            resource = resources[key]  # made again: Dagster configures a resource from what it was made with
            resources[key] = type(resource)(**{name: getattr(resource, name) for name in resource.model_fields_set},
                                            **fields)  # fmt: skip
        result = materialize(
            assets,
            resources=resources,
            instance=self.instance,
            run_config=RunConfig(ops=ops),
            selection=selection,
            raise_on_error=raise_on_error,
            # compaction is left to a full run
            tags={**({} if full else defs.resolve_job_def("hourly_pipeline").tags), **(tags or {})},
        )
        metadata = {
            event.asset_key.to_user_string(): {k: v.value for k, v in event.materialization.metadata.items()}
            for event in result.get_asset_materialization_events()
            if isinstance(event.asset_key, AssetKey)
        }
        checks = {
            f"{e.asset_key.to_user_string()}:{e.check_name}": e.passed for e in result.get_asset_check_evaluations()
        }
        return RunOutcome(result.success, metadata, result.run_id, checks)

    def query(self, sql: str, params: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        with duckdb.connect(str(self.warehouse), read_only=True) as conn:
            return conn.execute(sql, params or {}).fetchall()


@pytest.fixture
def pipeline(sandbox: SandboxServer, tmp_path: Path) -> Pipeline:
    return Pipeline(sandbox.url, tmp_path / "warehouse.duckdb")


def world_records(folder: Path, stream: str) -> dict[str, tuple[int, bool]]:
    """id -> (updated ms, archived) for every record of a world stream that its API can serve today.

    Mixpanel exports by event date, so an event stamped in the future (a bad record on
    purpose) cannot be exported until its day comes.
    """
    conn = WorldStore(folder).connect()
    served_until = time.time() if stream == "mixpanel.events" else float("inf")
    rows = conn.execute(
        "SELECT id, updated, archived FROM records WHERE stream = ? AND created <= ?", (stream, served_until)
    ).fetchall()
    return {row[0]: (row[1], bool(row[2])) for row in rows}


@dataclass
class Profiled:
    world: Path
    pipeline: Pipeline
    metadata: dict[str, dict[str, Any]]

    def scan(self, stream: str) -> Iterator[Record]:
        return WorldStore(self.world).scan(stream)

    def staged(self, table: str, key: str) -> set[str]:
        return {row[0] for row in self.pipeline.query(f"SELECT {key} FROM {table}")}

    def owners(self) -> dict[tuple[str, str], str]:
        """(stream, record id) -> the profile the identity graph put the record in."""
        rows = self.pipeline.query("SELECT stream, record_id, profile_id FROM identity.record_profiles")
        return {(stream, record_id): profile_id for stream, record_id, profile_id in rows}

    def rows(self, sql: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        with duckdb.connect(str(self.pipeline.warehouse), read_only=True) as conn:
            cursor = conn.execute(sql, params or {})
            names = [d[0] for d in cursor.description]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


@pytest.fixture(scope="session")
def profiled(world_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Profiled:
    """One world through two full pipeline runs, around a tick that deleted and archived records in every
    person stream; shared read-only by the tests of the profile and view layers."""

    def build(folder: Path) -> None:
        shutil.copytree(world_template, folder / "world")
        with SandboxServer(folder / "world", TEST_SANDBOX_CONFIG) as sandbox:
            pipeline = Pipeline(sandbox.url, folder / "warehouse.duckdb")
            assert pipeline.run().success
            sandbox.control("tick", "POST", changes=30, count=3)  # deletions and archivals in every person stream
            outcome = pipeline.run(full=True)
            assert outcome.success
        (folder / "metadata.pickle").write_bytes(pickle.dumps(outcome.metadata))  # Dagster's values as they are

    folder = built_once(tmp_path_factory, "profiles", build)
    pipeline = Pipeline("", folder / "warehouse.duckdb")  # read only: its sandbox is gone
    return Profiled(folder / "world", pipeline, pickle.loads((folder / "metadata.pickle").read_bytes()))


UPSTREAM = AssetSelection.all() - AssetSelection.groups("sync")


@pytest.fixture(scope="session")
def unsynced(world_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A world pulled through every layer up to the views, with nothing synced yet (world/, warehouse.duckdb)."""

    def build(folder: Path) -> None:
        shutil.copytree(world_template, folder / "world")
        with SandboxServer(folder / "world", TEST_SANDBOX_CONFIG) as sandbox:
            assert Pipeline(sandbox.url, folder / "warehouse.duckdb").run().success

    return built_once(tmp_path_factory, "unsynced", build)


@pytest.fixture(scope="session")
def synced(unsynced: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The unsynced world after its first run with the syncs (world/, warehouse.duckdb): what a test that starts
    from a synced stack would otherwise run itself."""

    def build(folder: Path) -> None:
        shutil.copytree(unsynced / "world", folder / "world")
        shutil.copy(unsynced / "warehouse.duckdb", folder / "warehouse.duckdb")
        with SandboxServer(folder / "world", TEST_SANDBOX_CONFIG) as sandbox:
            assert Pipeline(sandbox.url, folder / "warehouse.duckdb", syncs=True).run().success

    return built_once(tmp_path_factory, "synced", build)


@dataclass
class Env:
    """A copy of the unsynced (or synced) world served by its own sandbox, and its own warehouse."""

    world: Path
    sandbox: SandboxServer
    pipeline: Pipeline

    def sync(self, *names: str, raise_on_error: bool = True, **config: Any) -> RunOutcome:
        """Materialise the named syncs (every sync by default) against the current views."""
        names = names or tuple(load_syncs().syncs)
        selection = AssetSelection.assets(*(sync_key(name) for name in names))
        ops = {f"sync__{name}": config for name in names} if config else None
        return self.pipeline.run(selection=selection, raise_on_error=raise_on_error, config=ops)

    def state(self, sync: str) -> dict[str, dict[str, Any]]:
        rows = self.pipeline.query("SELECT key, payload FROM sync.state WHERE sync = $sync", {"sync": sync})
        return {key: json.loads(payload) for key, payload in rows}

    def contacts(self) -> dict[str, list[dict[str, Any]]]:
        """Live HubSpot contacts by normalised email, with their properties."""
        return _by_email(WorldStore(self.world).scan("hubspot.contacts"), lambda p: p["properties"].get("email"))

    def users(self) -> dict[str, list[dict[str, Any]]]:
        return _by_email(WorldStore(self.world).scan("zendesk.users"), lambda p: p.get("email"))


def _by_email(records: Iterator[Record], email: Callable[[dict[str, Any]], Any]) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        address = email(record.payload)
        if not record.archived and isinstance(address, str):
            found.setdefault(address.strip().lower(), []).append(record.payload)
    return found


@pytest.fixture
def start(unsynced: Path, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Callable[..., Env]]:
    """Starts a copy of the unsynced world, or with `synced=True` of the world after its first run with the syncs
    (built once, when a test first asks). `syncs=False` gives a pipeline that leaves the syncs out, as `pipeline`'s."""
    servers: list[SandboxServer] = []

    def start(patch: dict[str, Any] | None = None, synced: bool = False, syncs: bool = True) -> Env:
        if patch and synced:  # the synced world's first run was served with the test config, not the patch
            raise ValueError("start: a patched sandbox starts unsynced; run the first sync under the patch")
        origin = request.getfixturevalue("synced") if synced else unsynced
        shutil.copytree(origin / "world", tmp_path / "world")
        shutil.copy(origin / "warehouse.duckdb", tmp_path / "warehouse.duckdb")
        server = SandboxServer(tmp_path / "world", with_config(patch or {}))
        server.start()
        servers.append(server)
        return Env(tmp_path / "world", server, Pipeline(server.url, tmp_path / "warehouse.duckdb", syncs=syncs))

    yield start
    for server in servers:
        server.stop()


class StandInService(BaseHTTPRequestHandler):
    """A service answering every call with `answer(method, body)` -> (status, JSON body): for replies no sandbox
    service gives (a destination echoing what it was sent, a source paging past nothing)."""

    answer: ClassVar[Callable[[str, Any], tuple[int, Any]]]

    def _reply(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        status, reply = type(self).answer(self.command, body)
        encoded = json.dumps(reply).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(encoded)))
        self.end_headers()
        self.wfile.write(encoded)

    do_GET = do_POST = _reply

    def log_message(self, *args: Any) -> None:
        pass


@contextmanager
def stand_in(answer: Callable[[str, Any], tuple[int, Any]]) -> Iterator[str]:
    """The base URL of a `StandInService` answering with `answer`, on loopback, for the block's duration."""
    with serving(type("Answering", (StandInService,), {"answer": staticmethod(answer)})) as url:
        yield url


@contextmanager
def serving(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """The base URL of an HTTP server on loopback answering with `handler`, for the block's duration."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()

"""A sync killed with SIGKILL at three points, then run again: nothing acknowledged is sent twice, the log is whole.

Each case runs a real `dagster asset materialize` of one sync in a subprocess and kills it: while a HubSpot batch
is in flight (timed by the sandbox's request counts, under a latency fault), while waiting for Zendesk jobs the
sandbox holds queued, and after HubSpot answered but before the answer's transaction commits (the one moment no
outside observer can time: the `sync.recording` failpoint). Then every sync runs again in-process. What each
destination received is counted by the sandbox per address (`received_writes` in its world file).
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from cdp_assets import failpoint, stack
from resources.destinations.zendesk import ZendeskUsersDestination
from sandbox.runner import SandboxServer
from sandbox.store import WorldStore
from tests.conftest import Env
from tests.test_sync import assert_in_step

ROOT = Path(__file__).resolve().parents[1]
STREAMS = {"hubspot_contacts": "hubspot.contacts", "zendesk_users": "zendesk.users"}
BATCH = ZendeskUsersDestination.batch_size  # HubSpot's too


def launch(env: Env, home: Path, selection: str, point: str | None = None) -> subprocess.Popen[bytes]:
    """`dagster asset materialize` of `selection` (one sync, say), as a schedule's run would do it, in a session of
    its own."""
    environment = {
        **os.environ,
        **stack.sandbox_credentials(),
        "CDP_SANDBOX_URL": env.sandbox.url,
        "CDP_WAREHOUSE": str(env.pipeline.warehouse),
        "DAGSTER_HOME": str(stack.prepare_dagster_home(home)),
    }
    if point:
        environment[failpoint.ENV] = point
    command = [str(Path(sys.executable).parent / "dagster"), "asset", "materialize", "-m", "cdp_assets.definitions",
               "--select", selection]  # fmt: skip
    return subprocess.Popen(
        command, cwd=ROOT, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )


def requests_to(sandbox: SandboxServer, service: str) -> int:
    return int(sandbox.control("stats")["services"].get(service, {}).get("requests", 0))


def kill_when(process: subprocess.Popen[bytes], ready: Callable[[], bool], pause: float = 0.0) -> None:
    """SIGKILL the run's process group once `ready()` holds (and `pause` seconds more)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None and not ready():
        time.sleep(0.02)
    assert process.poll() is None, "the run ended before the point it was to be killed at"
    time.sleep(pause)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def received(env: Env, stream: str) -> dict[str, int]:
    """Upserts the sandbox applied per address since the world was copied."""
    rows = WorldStore(env.world).connect().execute(
        "SELECT email, writes FROM received_writes WHERE stream = ?", (stream,)
    )
    return {email: writes for email, writes in rows}


def in_flight(env: Env, sync: str) -> list[tuple[int, int, int]]:
    """The killed run's unsettled batches: (batch, rows, rows with a ticket)."""
    return env.pipeline.query(
        "SELECT batch, count(*), count(ticket) FROM sync.intents WHERE sync = $sync GROUP BY batch ORDER BY batch",
        {"sync": sync},
    )


def assert_rerun_is_exact(env: Env, sync: str, recovered: int) -> None:
    """Every sync runs again: each destination got each record once, sync.deliveries lists each sending (the
    killed run's, `recovered` of them settled by the rerun, under its id), no run is left open, nothing is left
    in flight, and the destinations hold what the views say."""
    [(killed,)] = env.pipeline.query("SELECT run_id FROM sync.runs WHERE status = 'in_progress'")
    [(before,)] = env.pipeline.query("SELECT count(*) FROM sync.deliveries WHERE run_id = $r", {"r": killed})

    assert env.sync().success

    for name, stream in STREAMS.items():
        got = received(env, stream)
        assert got and set(got.values()) == {1}, (name, sorted(k for k, n in got.items() if n > 1)[:5])
        logged = dict(env.pipeline.query(
            "SELECT lower(key), count(*) FROM sync.deliveries WHERE sync = $sync GROUP BY 1", {"sync": name}
        ))  # fmt: skip
        assert logged == got, name
    [(status, after, message)] = env.pipeline.query(
        "SELECT status, acknowledged, message FROM sync.runs WHERE run_id = $r", {"r": killed}
    )
    assert status == "interrupted" and "interrupted" in message
    assert after == before + recovered, (before, after, recovered)
    assert env.pipeline.query("SELECT count(*) FROM sync.deliveries WHERE run_id = $r", {"r": killed}) == [(after,)]
    assert env.pipeline.query("SELECT count(*) FROM sync.runs WHERE status = 'in_progress'") == [(0,)]
    assert env.pipeline.query("SELECT count(*) FROM sync.intents") == [(0,)]
    assert_in_step(env)


def test_killed_while_submitting_sends_only_what_hubspot_did_not_take(
    start: Callable[..., Env], tmp_path: Path
) -> None:
    env = start({"faults": {"hubspot": {"latency_ms": 600}}})
    env.sandbox.control("stats", "DELETE")
    process = launch(env, tmp_path / "dagster_home", "sync/hubspot_contacts")
    # The first batch answered; the second is then committed as an intent and held by the latency fault.
    kill_when(process, lambda: requests_to(env.sandbox, "hubspot") >= 1, pause=0.3)
    env.sandbox.control("config", "PATCH", json={"faults": {"hubspot": {"latency_ms": 0}}})

    [(batch, rows, tickets)] = in_flight(env, "hubspot_contacts")
    assert (batch, rows, tickets) == (2, BATCH, 0), "the kill did not land while the second batch was in flight"
    assert len(env.state("hubspot_contacts")) == BATCH
    # What HubSpot took of the batch in flight (nothing, the request having been cut off) is read back, not resent.
    taken = sum(received(env, "hubspot.contacts").values()) - BATCH
    assert_rerun_is_exact(env, "hubspot_contacts", recovered=taken)


def test_killed_while_waiting_for_zendesk_jobs_collects_them_instead_of_sending_again(
    start: Callable[..., Env], tmp_path: Path
) -> None:
    env = start({"accounts": {"zendesk_job_seconds": 4}})  # jobs stay queued while the run waits for them
    planned = env.sync("zendesk_users", dry_run=True).metadata["sync/zendesk_users"]["added"]
    jobs = min(math.ceil(planned / BATCH), ZendeskUsersDestination.max_in_flight)
    env.sandbox.control("stats", "DELETE")
    process = launch(env, tmp_path / "dagster_home", "sync/zendesk_users")
    # Every job submitted (each id committed with its intent before the next call), and polling has begun.
    kill_when(process, lambda: requests_to(env.sandbox, "zendesk") > jobs)
    env.sandbox.control("config", "PATCH", json={"accounts": {"zendesk_job_seconds": 0.1}})

    batches = in_flight(env, "zendesk_users")
    assert len(batches) == jobs and all(rows == tickets for _, rows, tickets in batches), batches
    assert received(env, "zendesk.users") == {}, "the kill did not land while the jobs were queued"
    assert_rerun_is_exact(env, "zendesk_users", recovered=sum(rows for _, rows, _ in batches))


def test_killed_while_recording_an_answer_reads_it_back_from_hubspot(start: Callable[..., Env], tmp_path: Path) -> None:
    env = start()
    process = launch(env, tmp_path / "dagster_home", "sync/hubspot_contacts", point="sync.recording")
    assert process.wait(timeout=120) == -signal.SIGKILL, "the run did not reach the failpoint"

    assert in_flight(env, "hubspot_contacts") == [(1, BATCH, 0)]
    assert env.state("hubspot_contacts") == {}  # the answer's transaction never committed
    assert sum(received(env, "hubspot.contacts").values()) == BATCH  # though HubSpot took the batch
    assert_rerun_is_exact(env, "hubspot_contacts", recovered=BATCH)

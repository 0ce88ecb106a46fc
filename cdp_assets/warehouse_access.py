"""The warehouse as the command line opens it, beside the runs that write it.

DuckDB lets one process write a file, and while it does no other process may open it, not even to read. A run
holds the lock while a step works and lets go between steps, so a command waits for a gap instead of failing:
it says on stderr who holds the lock and how long it has waited, and gives up after `--wait-seconds` with a
message rather than a traceback.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import duckdb

DEFAULT_WAIT_SECONDS = 600.0  # a nightly step on a big world holds the lock for minutes
RETRY_SECONDS = 0.25  # the gaps between a run's steps are short
REPORT_SECONDS = 15.0
HOLDER = re.compile(r"Conflicting lock is held in (?P<program>.+?) \(PID (?P<pid>\d+)\)")
COMMAND_CHARS = 100  # a run worker's command line carries its serialised arguments
T = TypeVar("T")
PARAMETER = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)")
COMMENT = re.compile(r"--[^\n]*")


def add_wait_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--wait-seconds", type=float, default=DEFAULT_WAIT_SECONDS,
        help=f"how long to wait while a run holds the warehouse's lock (default {DEFAULT_WAIT_SECONDS:.0f})",
    )  # fmt: skip


@contextmanager
def connect(path: Path, wait_seconds: float, read_only: bool = True) -> Iterator[duckdb.DuckDBPyConnection]:
    """A connection to the warehouse, read-only unless asked, once no other process holds its lock.

    A table the command reads that no run has built yet ends the command with a message too."""
    if read_only and not path.exists():
        raise SystemExit(f"no warehouse at {path}: start the stack (`make run`), or name one with --warehouse "
                         "or CDP_WAREHOUSE")  # fmt: skip
    conn = _wait_for_lock(path, wait_seconds, read_only)
    try:
        yield conn
    except duckdb.CatalogException as exc:
        if "does not exist" not in str(exc):
            raise
        first_line = str(exc).splitlines()[0]
        raise SystemExit(f"{path} lacks what this command reads ({first_line}); a first run builds it: "
                         "see the runs in the Dagster UI") from None  # fmt: skip
    finally:
        conn.close()


def when_unlocked(open_it: Callable[[], T], wait_seconds: float) -> T:
    """`open_it()` once no other process holds the DuckDB file's lock, for the steps of a run (no messages): a
    command reading the file holds it for a moment."""
    gives_up = time.monotonic() + wait_seconds
    while True:
        try:
            return open_it()
        except duckdb.IOException as exc:
            if "Conflicting lock" not in str(exc) or time.monotonic() >= gives_up:
                raise
            time.sleep(RETRY_SECONDS)


def _wait_for_lock(path: Path, wait_seconds: float, read_only: bool) -> duckdb.DuckDBPyConnection:
    started = time.monotonic()
    reported = None
    while True:
        try:
            conn = duckdb.connect(str(path), read_only=read_only)
        except duckdb.IOException as exc:
            if "Conflicting lock" not in str(exc):
                raise SystemExit(f"cannot open {path}: {exc}") from None
            waited = time.monotonic() - started
            if waited >= wait_seconds:
                raise SystemExit(f"gave up after {waited:.0f}s: {path} is still locked by {holder(str(exc))}; "
                                 "try again once the run is done, or wait longer with --wait-seconds") from None
            if reported is None or waited - reported >= REPORT_SECONDS:
                print(f"waiting for {path}: its lock is held by {holder(str(exc))}; waited {waited:.0f}s of "
                      f"{wait_seconds:.0f}s (--wait-seconds)", file=sys.stderr, flush=True)  # fmt: skip
                reported = waited
            try:
                time.sleep(RETRY_SECONDS)
            except KeyboardInterrupt:
                raise SystemExit(f"stopped waiting for {path} after {waited:.0f}s") from None
            continue
        if reported is not None:
            print(f"got {path} after {time.monotonic() - started:.0f}s", file=sys.stderr, flush=True)
        return conn


def holder(message: str) -> str:
    """Who holds the lock, from DuckDB's message and /proc: the process, and the Dagster runs in progress."""
    found = HOLDER.search(message)
    if found is None:
        return "another process"
    pid = int(found["pid"])
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        command = found["program"]
    if len(command) > COMMAND_CHARS:
        command = command[:COMMAND_CHARS] + "..."
    runs = runs_in_progress()
    return f"PID {pid} ({command})" + (f", in progress: {runs}" if runs else "")


def runs_in_progress() -> str:
    """The runs the instance at DAGSTER_HOME has going, as `run <id> of <job>`; empty without an instance."""
    home = os.environ.get("DAGSTER_HOME")
    if not home or not (Path(home) / "dagster.yaml").exists():
        return ""
    from dagster import DagsterInstance, DagsterRunStatus, RunsFilter

    going = [DagsterRunStatus.STARTING, DagsterRunStatus.STARTED, DagsterRunStatus.CANCELING]
    with DagsterInstance.get() as instance:
        runs = instance.get_runs(RunsFilter(statuses=going), limit=5)
    return ", ".join(f"run {run.run_id[:8]} of {run.job_name}" for run in runs)


def named(sql: str, params: dict[str, Any]) -> dict[str, Any]:
    """Those of `params` that `sql` names outside its comments (DuckDB refuses unused ones)."""
    used = set(PARAMETER.findall(COMMENT.sub("", sql)))
    return {name: value for name, value in params.items() if name in used}


def has_tables(conn: duckdb.DuckDBPyConnection, schema: str, *names: str) -> bool:
    """Whether the warehouse holds these tables yet: a reader cannot make them, their first writer does."""
    # fetchall: a result left unfinished would refuse the connection's next statement
    [(found,)] = conn.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE database_name = current_database() AND schema_name = $schema"
        " AND list_contains($names, table_name)",
        {"schema": schema, "names": list(names)},
    ).fetchall()
    return found == len(names)


def columns(conn: duckdb.DuckDBPyConnection, table: str) -> list[tuple[str, str]]:
    """A table's columns and their types, in order: a table kept from an earlier build is compared with what the
    build's SQL makes now before rows are written into it by difference."""
    return conn.execute(f"SELECT column_name, column_type FROM (DESCRIBE {table})").fetchall()


@contextmanager
def transaction(conn: duckdb.DuckDBPyConnection) -> Iterator[None]:
    """The statements of the block in one transaction: all of them or none."""
    conn.begin()
    try:
        yield
    except Exception:
        conn.rollback()
        raise
    conn.commit()

"""Writing a world's chunks into world.db in chunk order, from the processes that render them.

With workers, each one writes the chunks it renders itself, taking turns in chunk
order (``Turnstile``): rows never travel between processes, and the order of rows,
owners and CSV lines is the same as when one process does everything. SQLite is set
up for a bulk load: no journal and no syncs (a build that fails leaves a folder to
delete anyway).
"""

from __future__ import annotations

import multiprocessing
import signal
import sqlite3
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sandbox.chunks import CHUNK_PEOPLE, ChunkRows, build_chunk, chunk_sizes
from sandbox.hardness import Hardness
from sandbox.store import ANOMALIES_FILE, CASES_FILE, DB_FILE, TRUTH_FILE

POOL_FROM = 3 * CHUNK_PEOPLE  # smaller worlds render in-process: starting workers would cost more than it saves
WRITER_CACHE_KIB = 65_536  # each writer's page cache: other writers' commits invalidate it, so it needs no more
TURN_TIMEOUT = 900.0  # seconds a chunk may wait for the one before it (a dead worker must not hang the build)
INSERT_RECORD = "INSERT INTO records (stream, id, created, updated, archived, payload) VALUES (?, ?, ?, ?, ?, ?)"
INSERT_OWNER = "INSERT OR REPLACE INTO owners (stream, id, person_id) VALUES (?, ?, ?)"


@dataclass(frozen=True)
class ChunkDone:
    """What the builder needs to know about a written chunk."""

    counters: dict[str, int]
    created: Counter[str]


def bulk_connection(folder: Path, cache_kib: int = WRITER_CACHE_KIB) -> sqlite3.Connection:
    conn = sqlite3.connect(folder / DB_FILE, timeout=60)
    conn.execute("PRAGMA journal_mode = OFF")
    conn.execute("PRAGMA synchronous = OFF")
    conn.execute(f"PRAGMA cache_size = -{cache_kib}")
    return conn


def write_chunk(conn: sqlite3.Connection, folder: Path, rows: ChunkRows) -> ChunkDone:
    """One chunk in one transaction, its truth, anomaly and case lines appended to the CSV files."""
    with conn:
        conn.executemany(INSERT_RECORD, rows.rows)
        conn.executemany(INSERT_OWNER, rows.owners)
    for name, text in ((TRUTH_FILE, rows.truth), (ANOMALIES_FILE, rows.anomalies), (CASES_FILE, rows.cases)):
        with (folder / name).open("a", newline="") as f:
            f.write(text)
    return ChunkDone(rows.counters, rows.created)


def load_chunks(
    folder: Path, seed: int, anchor: int, pools: dict[str, Any], people: int, workers: int, hardness: Hardness,
) -> Iterator[ChunkDone]:
    """Render and write every chunk of a world, in chunk order, with ``workers`` processes for big worlds."""
    sizes = chunk_sizes(people)
    if workers < 2 or people < POOL_FROM:
        conn = bulk_connection(folder)
        try:
            for chunk, size in sizes:
                yield write_chunk(conn, folder, build_chunk(seed, anchor, pools, chunk, size, hardness))
        finally:
            conn.close()
        return
    # fork: workers inherit the pools and never re-import the caller's __main__; spawn where fork is missing.
    context = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
    turnstile = Turnstile(context)
    with context.Pool(workers, _start_worker, (folder, seed, anchor, pools, hardness, turnstile)) as pool:
        done = pool.imap(_load_in_worker, sizes)
        for _ in sizes:
            yield done.next(TURN_TIMEOUT * 2)
        # Told to stop, workers leave by themselves. The pool's exit would end them with SIGTERM, which a worker
        # forked from a process that ran Dagster takes as an interrupt (Dagster maps SIGTERM to SIGINT), raised
        # wherever it is: inside a queue's lock, which then stays held and hangs the pool's own exit.
        pool.close()
        pool.join()


class Turnstile:
    """Lets chunk writers through one at a time, in chunk order, across processes."""

    def __init__(self, context: Any) -> None:
        self._next = context.Value("q", 0, lock=False)  # guarded by the condition's lock
        self._turn = context.Condition()

    def wait(self, chunk: int) -> None:
        with self._turn:
            if not self._turn.wait_for(lambda: self._next.value == chunk, TURN_TIMEOUT):
                raise TimeoutError(f"chunk {chunk} waited {TURN_TIMEOUT} s for chunk {self._next.value} to be written")

    def done(self, chunk: int) -> None:
        with self._turn:
            self._next.value = chunk + 1
            self._turn.notify_all()


_WORKER: dict[str, Any] = {}  # a worker's world and connection, set once when the pool starts it


def _start_worker(
    folder: Path, seed: int, anchor: int, pools: dict[str, Any], hardness: Hardness, turnstile: Turnstile
) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a worker stopped on a failure ends at once, holding no lock
    _WORKER.update(folder=folder, seed=seed, anchor=anchor, pools=pools, hardness=hardness, turnstile=turnstile,
                   conn=bulk_connection(folder))


def _load_in_worker(chunk_and_size: tuple[int, int]) -> ChunkDone:
    chunk, size = chunk_and_size
    w = _WORKER
    rows = build_chunk(w["seed"], w["anchor"], w["pools"], chunk, size, w["hardness"])
    w["turnstile"].wait(chunk)
    written = write_chunk(w["conn"], w["folder"], rows)
    w["turnstile"].done(chunk)  # not after a failure: the parent stops the pool when it sees it
    return written

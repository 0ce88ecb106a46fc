"""Writing a world's chunks into world.db in chunk order, from the processes that render them.

With workers, each one writes the chunks it renders itself, taking turns in chunk
order (``Turnstile``): rows never travel between processes, and the order of rows,
owners and CSV lines is the same as when one process does everything. SQLite is set
up for a bulk load: no journal and no syncs (a build that fails leaves a folder to
delete anyway).
"""

from __future__ import annotations

import multiprocessing
import sqlite3
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sandbox import chunks
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
    # Spawned, not forked: the caller may hold threads (DuckDB's, Dagster's) whose state a forked child inherits
    # half-copied, and the child's garbage collection can then crash on it. A caller's script needs the usual
    # `if __name__ == "__main__":` guard, as for any spawned process.
    context = multiprocessing.get_context("spawn")
    turnstile = Turnstile(context)
    start = (folder, seed, anchor, pools, hardness, turnstile, chunks.CHUNK_PEOPLE)
    # An executor, not a multiprocessing.Pool: a worker that dies breaks it (BrokenProcessPool) instead of hanging it.
    with ProcessPoolExecutor(workers, context, _start_worker, start) as pool:
        try:
            yield from pool.map(_load_in_worker, sizes)
        except BaseException:
            turnstile.close()  # workers waiting for a turn that will not come stop, so the pool's exit can join them
            pool.shutdown(wait=False, cancel_futures=True)
            raise


class Turnstile:
    """Lets chunk writers through one at a time, in chunk order, across processes, until the build closes it.

    Two numbers in shared memory, polled: no lock or condition that a worker killed inside it would leave held, or
    that a notify would wait on for ever (multiprocessing's notify waits for every sleeper to wake, and a killed one
    never does). Each number has one writer at a time: the worker whose turn it is, and the build."""

    POLL_SECONDS = 0.005  # a chunk takes far longer to write

    def __init__(self, context: Any) -> None:
        self._next = context.Value("q", 0, lock=False)
        self._closed = context.Value("b", 0, lock=False)

    def wait(self, chunk: int) -> None:
        deadline = time.monotonic() + TURN_TIMEOUT
        while not self._closed.value and self._next.value != chunk:
            if time.monotonic() > deadline:
                raise TimeoutError(f"chunk {chunk} waited {TURN_TIMEOUT} s for chunk {self._next.value} to be written")
            time.sleep(self.POLL_SECONDS)
        if self._closed.value:
            raise RuntimeError(f"chunk {chunk} not written: the build stopped")

    def done(self, chunk: int) -> None:
        self._next.value = chunk + 1

    def close(self) -> None:
        self._closed.value = 1


_WORKER: dict[str, Any] = {}  # a worker's world and connection, set once when the pool starts it


def _start_worker(
    folder: Path, seed: int, anchor: int, pools: dict[str, Any], hardness: Hardness, turnstile: Turnstile,
    chunk_people: int,
) -> None:
    chunks.CHUNK_PEOPLE = chunk_people  # a fresh process imported the module's own (a test makes chunks small)
    _WORKER.update(folder=folder, seed=seed, anchor=anchor, pools=pools, hardness=hardness, turnstile=turnstile,
                   conn=bulk_connection(folder))


def _load_in_worker(chunk_and_size: tuple[int, int]) -> ChunkDone:
    chunk, size = chunk_and_size
    w = _WORKER
    rows = build_chunk(w["seed"], w["anchor"], w["pools"], chunk, size, w["hardness"])
    w["turnstile"].wait(chunk)
    written = write_chunk(w["conn"], w["folder"], rows)
    w["turnstile"].done(chunk)  # not after a failure: the parent, seeing it, closes the turnstile
    return written

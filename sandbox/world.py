"""Build a sandbox world: people, their records in five SaaS sources, and the ground truth.

The world is built a chunk of people at a time, each chunk from its own seeded
random stream and its own id ranges (sandbox.chunks), written in chunk order
(sandbox.loader), so the same (seed, people, anchor, hardness) always gives byte-identical
records and truth however many processes render the chunks, and memory stays flat
from 300 people to a million.
"""

from __future__ import annotations

import csv
import os
from collections import Counter
from contextlib import closing
from dataclasses import asdict
from pathlib import Path

from sandbox.chunks import ChunkSink, gaps_after
from sandbox.clock import today_midnight
from sandbox.context import OWNERS_SCHEMA, Ctx, Rng, save_meta
from sandbox.hardness import Hardness
from sandbox.ids import Ids
from sandbox.loader import bulk_connection, load_chunks, write_chunk
from sandbox.pools import draw_pools
from sandbox.render_klaviyo import metric_ids, render_metrics
from sandbox.store import (
    ANOMALIES_FILE,
    CASES_FILE,
    DB_FILE,
    SCHEMA,
    STREAMS,
    TIME_INDEXES,
    TRUTH_FILE,
    WorldStore,
)

MAX_WORKERS = 4  # renderers that take turns writing; more would mostly wait for the writer's turn
INDEX_CACHE_KIB = 32_768  # per sorted run: small runs let the sorter threads overlap (and memory stays flat)
PAGE_SIZE = 16_384
CSV_HEADERS = {TRUTH_FILE: ("stream", "record_id", "person_id"), ANOMALIES_FILE: ("stream", "record_id", "kind"),
               CASES_FILE: ("person_id", "case")}


def build_world(
    folder: str | Path, people: int = 5000, seed: int = 7, anchor: int | None = None, workers: int | None = None,
    hardness: Hardness | None = None,
) -> dict[str, int]:
    """Build a world into an empty folder; returns how many records each stream got.

    ``anchor`` is the world's "now" in unix seconds (default: today's UTC midnight):
    all history lies before it, except records whose anomaly is a future timestamp.
    ``workers`` render and write chunks in parallel (default: one per CPU, at most
    MAX_WORKERS); the world does not depend on it. ``hardness`` sets the rates of the hard cases (default:
    the default world's); it is kept in meta, so churn's sign-ups make the same cases.
    """
    hardness = hardness or Hardness()
    anchor = today_midnight() if anchor is None else anchor
    workers = min(_cpus(), MAX_WORKERS) if workers is None else workers
    store = WorldStore(folder)
    _require_empty(store)
    _prepare(store)
    path = store.folder
    pools = draw_pools(seed)
    catalogue = ChunkSink()  # the Klaviyo metrics belong to no person and no chunk
    render_metrics(Ctx(Rng(f"{seed}:world"), Ids(seed), catalogue, pools, anchor, anchor * 1000,
                       metrics=metric_ids(seed)))
    with closing(bulk_connection(path)) as conn:
        created = Counter(write_chunk(conn, path, catalogue.finish({})).created)
    counters: dict[str, int] = {}
    gaps: dict[str, list[tuple[int, int]]] = {}
    for chunk, done in enumerate(load_chunks(path, seed, anchor, pools, people, workers, hardness)):
        for name, gap in (gaps_after(chunk - 1, counters).items() if chunk else ()):
            gaps.setdefault(name, []).extend([gap] if gap[0] < gap[1] else [])
        counters = done.counters
        created.update(done.created)
    conn = bulk_connection(path, INDEX_CACHE_KIB)
    conn.execute(f"PRAGMA threads = {workers}")  # the sorter may use the idle renderers' cores
    conn.executescript(SCHEMA)  # recreates the time indexes, each in one sorted pass
    # The seed in meta marks a finished build (churn refuses a world without one).
    save_meta(conn, {"seed": seed, "people": people, "anchor": anchor, "tick": 0, "pools": pools,
                     "hardness": asdict(hardness), **Ids(seed, counters).to_meta(), "gaps": gaps})
    conn.execute("PRAGMA journal_mode = WAL")  # what WorldStore expects; it leaves one compact file behind
    conn.close()
    _sync(path / DB_FILE)
    return {stream: created[stream] for stream in STREAMS}


def _cpus() -> int:
    """CPUs this process may run on (os.cpu_count counts the whole machine)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _sync(path: Path) -> None:
    """The load wrote without syncs: one fsync makes the finished world durable (WAL checkpoints assume it)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _require_empty(store: WorldStore) -> None:
    if store.connect().execute("SELECT 1 FROM records LIMIT 1").fetchone():
        raise FileExistsError(f"{store.folder} already holds a world (world.db has records); use an empty folder")
    for name in CSV_HEADERS:
        if (store.folder / name).exists():
            raise FileExistsError(f"{store.folder / name} exists; build into an empty folder")


def _prepare(store: WorldStore) -> None:
    """CSV headers, the owners table, and a world.db ready for journal-less writers, without time indexes.

    Writers may turn the journal off only outside WAL mode. Pages of PAGE_SIZE hold
    more of the ~400-byte records each, so loading and indexing are cheaper. The
    time indexes would cost a random page write per row if kept during the load, so
    they are built at the end; the numeric-id index follows the primary key's order
    (live and archived apart) and stays.
    """
    for name, header in CSV_HEADERS.items():
        with (store.folder / name).open("w", newline="") as f:
            csv.writer(f).writerow(header)
    conn = store.connect()
    conn.executescript(OWNERS_SCHEMA)
    conn.execute("PRAGMA journal_mode = DELETE")
    conn.execute(f"PRAGMA page_size = {PAGE_SIZE}")
    conn.execute("VACUUM")  # applies the page size; the file holds only the schema yet
    with conn:
        for name in TIME_INDEXES.values():
            conn.execute(f'DROP INDEX IF EXISTS "{name}"')
    conn.close()  # the workers open the file themselves; no connection of ours may write beside them

"""Build a sandbox world: people, their records in five SaaS sources, and the ground truth.

The world is built a chunk of people at a time, each chunk from its own seeded
random stream, so the same (seed, people, anchor) always gives byte-identical
records and truth, and memory stays flat from 300 people to a million.
"""

from __future__ import annotations

import random
from pathlib import Path

from sandbox.clock import today_midnight
from sandbox.context import Ctx, Sink
from sandbox.ids import Ids
from sandbox.people import PEOPLE_PER_COMPANY, Company, Person, make_companies, make_people
from sandbox.pools import draw_pools
from sandbox.render_hubspot import render_company, render_contacts
from sandbox.render_klaviyo import metric_ids, render_klaviyo, render_metrics
from sandbox.render_mixpanel import render_mixpanel
from sandbox.render_stripe import render_stripe
from sandbox.render_zendesk import render_zendesk
from sandbox.store import ANOMALIES_FILE, SCHEMA, STREAMS, TRUTH_FILE, WorldStore

CHUNK_PEOPLE = 2000  # fixed, so a world's content does not depend on how it is chunked
BUILD_CACHE_KIB = 131_072  # SQLite page cache while building: bounded, and big enough for bulk inserts


def build_world(folder: str | Path, people: int = 5000, seed: int = 7, anchor: int | None = None) -> dict[str, int]:
    """Build a world into an empty folder; returns how many records each stream got.

    ``anchor`` is the world's "now" in unix seconds (default: today's UTC midnight):
    all history lies before it, except records whose anomaly is a future timestamp.
    """
    anchor = today_midnight() if anchor is None else anchor
    store = WorldStore(folder)
    _require_empty(store)
    store.connect().execute(f"PRAGMA cache_size = -{BUILD_CACHE_KIB}")
    _drop_secondary_indexes(store)
    sink = Sink(store)
    ids = Ids(seed)
    ctx = Ctx(random.Random(f"{seed}:world"), ids, sink, draw_pools(seed), anchor, anchor * 1000,
              metrics=metric_ids(seed))
    render_metrics(ctx)
    for chunk, start in enumerate(range(0, people, CHUNK_PEOPLE)):
        ctx.rng = random.Random(f"{seed}:chunk:{chunk}")
        size = min(CHUNK_PEOPLE, people - start)
        companies = make_companies(ctx.rng, ctx.pools, ids, max(1, round(size / PEOPLE_PER_COMPANY)), anchor)
        residents = make_people(ctx.rng, ctx.pools, ids, companies, size, anchor)
        render_chunk(ctx, companies, residents)
        sink.flush()
    with store.connect() as conn:
        conn.executescript(SCHEMA)  # recreates the dropped indexes, each in one sorted pass
    # The seed in meta marks a finished build (churn refuses a world without one).
    sink.save_meta({"seed": seed, "people": people, "anchor": anchor, "tick": 0, "pools": ctx.pools,
                    **ids.to_meta()})
    store.connect().execute("PRAGMA wal_checkpoint(TRUNCATE)")  # leave one compact file behind
    return {stream: sink.created[stream] for stream in STREAMS}


def render_chunk(ctx: Ctx, companies: list[Company], people: list[Person]) -> None:
    """Every record of these companies and people, in a fixed order (ids follow it)."""
    for company in companies:
        render_company(ctx, company)
    for person in people:
        render_mixpanel(ctx, person)
        render_contacts(ctx, person)
        render_stripe(ctx, person)
        render_zendesk(ctx, person)
        render_klaviyo(ctx, person)


def _require_empty(store: WorldStore) -> None:
    if store.connect().execute("SELECT 1 FROM records LIMIT 1").fetchone():
        raise FileExistsError(f"{store.folder} already holds a world (world.db has records); use an empty folder")
    for name in (TRUTH_FILE, ANOMALIES_FILE):
        if (store.folder / name).exists():
            raise FileExistsError(f"{store.folder / name} exists; build into an empty folder")


def _drop_secondary_indexes(store: WorldStore) -> None:
    """Drop the time indexes while bulk-loading: updating them row by row costs a random page write each."""
    with store.connect() as conn:
        names = conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'records' AND sql IS NOT NULL"
        ).fetchall()
        for (name,) in names:
            conn.execute(f'DROP INDEX "{name}"')

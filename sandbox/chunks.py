"""One chunk of a world's people, rendered into rows ready to write.

A chunk draws from its own random stream and numbers its records from its own
range of every id counter, so it needs nothing from any other chunk: chunks can
be rendered in any order and in any number of processes and still give the same
rows (sandbox.loader writes them in chunk order). People and companies are
numbered densely (every chunk but the last is full); the other counters leave a
gap after each chunk's range, recorded in meta so churn draws only numbers in use
(see Ids.draw).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, replace
from operator import itemgetter
from typing import Any

import orjson

from sandbox.context import OWNED_STREAMS, Ctx, Rng
from sandbox.hard import Hard, assign
from sandbox.hardness import Hardness
from sandbox.ids import COUNTERS, FIRST_VALUE, Ids
from sandbox.people import PEOPLE_PER_COMPANY, Company, Person, hard_cases, make_companies, make_people
from sandbox.render_hubspot import render_company, render_contacts, render_second_contact
from sandbox.render_klaviyo import metric_ids, render_klaviyo
from sandbox.render_mixpanel import render_mixpanel, render_second_login
from sandbox.render_stripe import render_stripe
from sandbox.render_zendesk import render_zendesk

CHUNK_PEOPLE = 2000  # fixed, so a world's content does not depend on how it is built
CHUNK_SPAN = 1 << 20  # numbers of each id counter a chunk owns; 2,000 people use well under 200,000 of any
DENSE = ("person", "company")  # numbered without gaps: a chunk's count follows from its size

Row = tuple[str, str, int, int, int, str]  # stream, id, created, updated, archived, payload JSON


@dataclass(frozen=True)
class ChunkRows:
    """Everything one chunk adds to a world, ready to write."""

    rows: list[Row]  # sorted by (stream, id), so inserts move forward through the primary key
    owners: list[tuple[str, str, int]]
    truth: str  # CSV lines of truth.csv
    anomalies: str  # CSV lines of anomalies.csv
    cases: str  # CSV lines of cases.csv
    counters: dict[str, int]  # the next number of each counter after this chunk
    created: Counter[str]


class ChunkSink:
    """Serialises each record as it is made: a chunk holds JSON text, not payload dicts, until it is written."""

    def __init__(self) -> None:
        self.streams: dict[str, list[Row]] = {}
        self.truth: list[tuple[str, str, int]] = []
        self.anomalies: list[tuple[str, str, str]] = []
        self.owners: list[tuple[str, str, int]] = []
        self.cases: list[tuple[int, str]] = []

    def add(
        self, stream: str, rid: str, created: int, updated: int, payload: dict[str, Any], person: int | None,
        anomaly: str | None,
    ) -> None:
        rows = self.streams.get(stream)
        if rows is None:
            rows = self.streams[stream] = []
        rows.append((stream, rid, created, updated, 0, orjson.dumps(payload).decode()))
        if person is not None:
            self.truth.append((stream, rid, person))
            if stream in OWNED_STREAMS:
                self.owners.append((stream, rid, person))
        if anomaly:
            self.anomalies.append((stream, rid, anomaly))

    def own(self, key: str, record_id: str, person: int) -> None:
        self.owners.append((key, record_id, person))

    def case(self, person: int, kind: str) -> None:
        self.cases.append((person, kind))

    def finish(self, counters: dict[str, int]) -> ChunkRows:
        rows: list[Row] = []
        for stream in sorted(self.streams):
            rows.extend(sorted(self.streams[stream], key=itemgetter(1)))  # sorting by str keys alone is fastest
        created = Counter({stream: len(rows) for stream, rows in self.streams.items()})
        cases = "".join([f"{person},{kind}\r\n" for person, kind in self.cases])
        return ChunkRows(rows, sorted(self.owners), _csv(self.truth), _csv(self.anomalies), cases, dict(counters),
                         created)


def _csv(rows: list[tuple[str, str, Any]]) -> str:
    """Rows as csv.writer writes them (streams, ids and kinds never need quoting), several times faster."""
    return "".join([f"{a},{b},{c}\r\n" for a, b, c in rows])


def chunk_sizes(people: int) -> list[tuple[int, int]]:
    """(chunk number, people in it) of a world: all full but the last."""
    return [(chunk, min(CHUNK_PEOPLE, people - first)) for chunk, first in enumerate(range(0, people, CHUNK_PEOPLE))]


def companies_for(people: int) -> int:
    return max(1, round(people / PEOPLE_PER_COMPANY))


def start_counters(chunk: int) -> dict[str, int]:
    """The first number of every counter in a chunk."""
    counters = {name: FIRST_VALUE.get(name, 0) + chunk * CHUNK_SPAN for name in COUNTERS}
    counters["person"] = FIRST_VALUE["person"] + chunk * CHUNK_PEOPLE
    counters["company"] = chunk * companies_for(CHUNK_PEOPLE)
    return counters


def gaps_after(chunk: int, counters: dict[str, int]) -> dict[str, tuple[int, int]]:
    """The numbers a finished chunk left unused before the next chunk's range starts."""
    following = start_counters(chunk + 1)
    return {name: (counters[name], following[name]) for name in COUNTERS if name not in DENSE}


def render_chunk(ctx: Ctx, companies: list[Company], people: list[Person]) -> None:
    """Every record of these companies and people, in a fixed order (ids follow it), and their hard cases.

    Second accounts come last, from the hardness stream, so the other records keep their ids and draws
    whatever the hardness settings.
    """
    assign(ctx, people)
    for company in companies:
        render_company(ctx, company)
    for person in people:
        for case in hard_cases(person):
            ctx.label(person.pid, case)
        render_mixpanel(ctx, person)
        render_contacts(ctx, person)
        render_stripe(ctx, person)
        render_zendesk(ctx, person)
        render_klaviyo(ctx, person)
    if ctx.hard is None:
        raise RuntimeError("rendering people needs a hardness stream")
    seconds = replace(ctx, rng=ctx.hard.rng)
    for person in people:
        second = person.traits.second if person.traits else None
        if second == "contact":
            render_second_contact(seconds, person)
        elif second == "login":
            render_second_login(seconds, person)


def build_chunk(
    seed: int, anchor: int, pools: dict[str, Any], chunk: int, size: int, hardness: Hardness | None = None
) -> ChunkRows:
    """Chunk ``chunk`` of a world: ``size`` people and their companies, from the chunk's own random streams.

    The hard cases draw from a stream of their own, so the people and their ids do not depend on ``hardness``
    (beyond the households and job changes it sets).
    """
    hardness = hardness or Hardness()
    start = start_counters(chunk)
    ids, sink, rng = Ids(seed, start), ChunkSink(), Rng(f"{seed}:chunk:{chunk}")
    hard = Hard(hardness, Rng(f"{seed}:chunk:{chunk}:hardness"))
    ctx = Ctx(rng, ids, sink, pools, anchor, anchor * 1000, metrics=metric_ids(seed), hard=hard)
    companies = make_companies(rng, pools, ids, companies_for(size), anchor)
    render_chunk(ctx, companies, make_people(rng, pools, ids, companies, size, anchor, hardness=hardness))
    overflow = [name for name in COUNTERS if name not in DENSE and ids.counters[name] - start[name] > CHUNK_SPAN]
    if overflow:
        raise OverflowError(f"chunk {chunk} used more than {CHUNK_SPAN} numbers of {overflow}")
    return sink.finish(ids.counters)

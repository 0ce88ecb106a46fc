"""What every renderer writes through: a record sink and the render context.

Churn writes through ``Sink``, which buffers records with their truth, anomaly,
owner and hard-case rows and reads its own writes; a build writes each chunk of
people through the leaner ``ChunkSink`` (sandbox.chunks). The ``owners`` table (in
world.db, never served) remembers the person behind the records churn adds children
to (customers, subscriptions, Zendesk users, Klaviyo profiles, product logins), so
churn can label new records without reading truth.csv.
"""

from __future__ import annotations

import json
import random
import sqlite3
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from sandbox import anomalies
from sandbox.clock import DAY
from sandbox.ids import Ids
from sandbox.spelling import as_typed, spell
from sandbox.store import Record, WorldStore

if TYPE_CHECKING:
    from sandbox.hard import Hard

OWNERS_SCHEMA = """
CREATE TABLE IF NOT EXISTS owners (
    stream    TEXT    NOT NULL,
    id        TEXT    NOT NULL,
    person_id INTEGER NOT NULL,
    PRIMARY KEY (stream, id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS owners_by_person ON owners (person_id, stream);
"""
OWNED_STREAMS = frozenset({"stripe.customers", "stripe.subscriptions", "zendesk.users", "klaviyo.profiles"})
PRODUCT_USERS = "product.users"  # owners key for product logins (not a served stream)
FLUSH_AT = 20_000
T = TypeVar("T")


class Rng(random.Random):
    """``random.Random`` whose integer draws scale one float instead of looping over random bits.

    A million people take hundreds of millions of draws: this is several times faster,
    as deterministic, and off from uniform by at most n / 2**53.
    """

    def _randbelow(self, n: int) -> int:  # used by choice, sample and shuffle
        return int(self.random() * n)

    def randrange(self, start: int, stop: int | None = None, step: int = 1) -> int:
        width = start if stop is None else stop - start
        if step != 1 or width <= 0:
            return super().randrange(start, stop, step)
        return (0 if stop is None else start) + int(self.random() * width)

    def randint(self, a: int, b: int) -> int:
        return a + int(self.random() * (b - a + 1)) if b >= a else super().randint(a, b)

    def choice(self, seq: Sequence[T]) -> T:
        return seq[int(self.random() * len(seq))]


def save_meta(conn: sqlite3.Connection, values: dict[str, Any]) -> None:
    """Several meta keys in one transaction, JSON-encoded as WorldStore.set_meta does."""
    with conn:
        conn.executemany(
            "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
            [(key, json.dumps(value)) for key, value in values.items()],
        )


class RecordSink(Protocol):
    """Where Ctx.emit sends new records."""

    def add(
        self, stream: str, rid: str, created: int, updated: int, payload: dict[str, Any], person: int | None,
        anomaly: str | None,
    ) -> None: ...

    def own(self, key: str, record_id: str, person: int) -> None: ...

    def case(self, person: int, kind: str) -> None: ...


W = TypeVar("W", bound=RecordSink)


class Sink:
    """Buffered writes; later writes of the same record replace earlier ones."""

    def __init__(self, store: WorldStore, flush_at: int = FLUSH_AT) -> None:
        self.store = store
        self.flush_at = flush_at
        self.records: dict[tuple[str, str], Record] = {}
        self.truth: list[tuple[str, str, int]] = []
        self.anomalies: list[tuple[str, str, str]] = []
        self.owners: dict[tuple[str, str], int] = {}
        self.cases: list[tuple[int, str]] = []
        self.created: Counter[str] = Counter()
        self.changed: Counter[str] = Counter()
        with store.connect() as conn:
            conn.executescript(OWNERS_SCHEMA)

    def add(
        self, stream: str, rid: str, created: int, updated: int, payload: dict[str, Any], person: int | None,
        anomaly: str | None,
    ) -> None:
        """A new record, with the person it belongs to (None for companies and metrics)."""
        self.records[(stream, rid)] = Record(stream, rid, created, updated, payload)
        self.created[stream] += 1
        if person is not None:
            self.truth.append((stream, rid, person))
            if stream in OWNED_STREAMS:
                self.owners[(stream, rid)] = person
        if anomaly:
            self.anomalies.append((stream, rid, anomaly))
        if len(self.records) >= self.flush_at:
            self.flush()

    def change(self, record: Record) -> None:
        """A new version of an existing record."""
        self.records[(record.stream, record.id)] = record
        self.changed[record.stream] += 1

    def own(self, key: str, record_id: str, person: int) -> None:
        self.owners[(key, record_id)] = person

    def case(self, person: int, kind: str) -> None:
        self.cases.append((person, kind))

    def get(self, stream: str, record_id: str) -> Record | None:
        return self.records.get((stream, record_id)) or self.store.get(stream, record_id)

    def owner(self, stream: str, record_id: str) -> int | None:
        if (stream, record_id) in self.owners:
            return self.owners[(stream, record_id)]
        row = self.store.connect().execute(
            "SELECT person_id FROM owners WHERE stream = ? AND id = ?", (stream, record_id)
        ).fetchone()
        return None if row is None else int(row[0])

    def owned_by(self, person: int, stream: str) -> list[str]:
        """Ids of ``stream`` records a person owns, e.g. a deleted customer's subscriptions."""
        rows = self.store.connect().execute(
            "SELECT id FROM owners WHERE person_id = ? AND stream = ? ORDER BY id", (person, stream)
        ).fetchall()
        pending = [rid for (s, rid), pid in self.owners.items() if pid == person and s == stream]
        return sorted({row[0] for row in rows} | set(pending))

    def flush(self) -> None:
        # In key order, a batch's inserts move forward through the primary-key tree instead of jumping about.
        self.store.upsert(sorted(self.records.values(), key=lambda r: (r.stream, r.id)))
        if self.owners:
            with self.store.connect() as conn:
                conn.executemany(
                    "INSERT OR REPLACE INTO owners (stream, id, person_id) VALUES (?, ?, ?)",
                    [(s, rid, pid) for (s, rid), pid in self.owners.items()],
                )
        if self.truth:
            self.store.append_truth(self.truth)
        if self.anomalies:
            self.store.append_anomalies(self.anomalies)
        if self.cases:
            self.store.append_cases(self.cases)
        self.records, self.truth, self.anomalies, self.owners, self.cases = {}, [], [], {}, []


@dataclass
class Ctx(Generic[W]):
    """Everything a renderer needs. ``live`` (churn) stamps every new time at ``now``."""

    rng: Rng
    ids: Ids
    sink: W
    pools: dict[str, Any]
    now: int  # unix seconds: the anchor at build, the tick's time in churn
    now_ms: int
    live: bool = False
    metrics: dict[str, str] = field(default_factory=dict)  # Klaviyo metric name -> id
    events_in_second: dict[int, int] = field(default_factory=dict)
    labelled: set[tuple[int, str]] = field(default_factory=set)  # (person, case) already handed to the sink
    hard: Hard | None = None  # the hardness settings and stream people's records are drawn with (sandbox.hard)

    @property
    def seed(self) -> int:
        return self.ids.seed

    def at(self, t: int) -> int:
        """A time as the world records it: live changes all happen now, history stays in the past."""
        return self.now if self.live else min(t, self.now)

    def between(self, lo: int, hi: int) -> int:
        return self.at(lo + self.rng.randrange(hi - lo) if hi > lo else hi)

    def ms(self, t: int, jitter: bool = False) -> int:
        """records.updated for a change at ``t``: the tick's exact ms when live."""
        if self.live:
            return self.now_ms
        return t * 1000 + (self.rng.randrange(1000) if jitter else 0)

    def event_order(self, t: int) -> int:
        """records.updated of a Stripe event: its second, then the order events were made in.

        Stripe lists events of one second in the order they happened; the server sorts
        events by this value, since their scrambled ids carry no order.
        """
        n = self.events_in_second.get(t, 0)
        self.events_in_second[t] = n + 1
        return t * 1000 + n

    def label(self, person: int, case: str) -> None:
        """Note that a person makes a hard case (cases.csv), once however many records show it."""
        if (person, case) not in self.labelled:
            self.labelled.add((person, case))
            self.sink.case(person, case)

    def spell(self, person: int, name: str) -> str:
        """spelling.spell, labelling the person ``typos`` when the name came out misspelt."""
        typed = spell(self.rng, name)
        if typed != name:
            self.label(person, "typos")
        return typed

    def typed(self, person: int, email: str) -> str:
        """spelling.as_typed, labelling the person ``case_variants`` when the address came out capitalised."""
        typed = as_typed(self.rng, email)
        if typed != email:
            self.label(person, "case_variants")
        return typed

    def future(self) -> int:
        """A timestamp from a client with a wrong clock (the future_timestamp anomaly)."""
        return self.now + self.rng.randint(DAY, 400 * DAY)

    def bad(self, stream: str) -> str | None:
        return anomalies.roll(self.rng, stream)

    def emit(
        self, stream: str, rid: str, created: int, updated: int, payload: dict[str, Any], person: int | None,
        anomaly: str | None = None,
    ) -> None:
        """Spoil the payload if its anomaly says so, then hand the record to the sink."""
        if anomaly:
            anomalies.spoil(self.rng, stream, anomaly, payload)
        self.sink.add(stream, rid, created, updated, payload, person, anomaly)

    def pick(
        self: Ctx[Sink], stream: str, counter: str, make_id: Callable[[int], str], count: int,
        ok: Callable[[dict[str, Any]], bool] = lambda payload: True,
    ) -> list[Record]:
        """Up to ``count`` distinct live records of ``stream``, drawn uniformly by their counter number.

        Ids are rebuilt from counter numbers, so each draw is one primary-key lookup
        and a tick never scans a stream.
        """
        chosen: dict[str, Record] = {}
        for _ in range(count * 4):
            n = None if len(chosen) >= count else self.ids.draw(counter, self.rng)
            if n is None:
                break
            rid = make_id(n)
            record = chosen.get(rid) or self.sink.get(stream, rid)
            if record is not None and not record.archived and ok(record.payload):
                chosen[rid] = record
        return list(chosen.values())

    def save(self: Ctx[Sink], record: Record, archived: bool = False) -> None:
        """Store a changed record (its payload edited in place), stamped with the tick's time."""
        self.sink.change(replace(record, updated=self.now_ms, archived=archived or record.archived))

"""The sandbox world's storage: one SQLite file of API-shaped records plus a ground-truth CSV.

The generator renders every source record as the JSON payload the real API would
return; the server filters and pages over these rows without knowing what a person
is. SQLite suits this side: the sandbox is an OLTP backend answering small range
queries from many threads, unlike the analytical DuckDB warehouse it feeds.

Files in a world folder:
- ``world.db``: table ``records`` (below) and table ``meta`` (key/value settings).
- ``truth.csv``: ``stream,record_id,person_id`` - which real person each record
  belongs to. The served APIs never read it.
- ``anomalies.csv``: ``stream,record_id,kind`` - records made bad on purpose.
- ``cases.csv``: ``person_id,case`` - the hard cases each person makes for identity
  resolution (see docs/sandbox-world.md), so its evaluation can score them apart.
"""

from __future__ import annotations

import csv
import json
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# The index of each time a page may be ordered by (then by id), named by the queries that page through it
# (sandbox/apis `keyset`) and dropped while a world is built (sandbox/world.py).
TIME_INDEXES = {"updated": "records_by_updated", "created": "records_by_created"}
SCHEMA = f"""
CREATE TABLE IF NOT EXISTS records (
    stream   TEXT    NOT NULL,  -- e.g. 'stripe.customers' (see STREAMS)
    id       TEXT    NOT NULL,  -- the record's id as the API serves it, as text
    created  INTEGER NOT NULL,  -- unix seconds the record was created at the source
    updated  INTEGER NOT NULL,  -- unix milliseconds of its last change (incremental filters)
    archived INTEGER NOT NULL DEFAULT 0,  -- 1 once deleted or archived at the source
    payload  TEXT    NOT NULL,  -- the JSON object as the API returns it
    PRIMARY KEY (stream, id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS {TIME_INDEXES["updated"]} ON records (stream, updated, id);
CREATE INDEX IF NOT EXISTS {TIME_INDEXES["created"]} ON records (stream, created, id);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
ID_WIDTH = 20  # digits of the widest numeric id (HubSpot's ids are 64-bit integers)
# Numeric ids as fixed-width text, whose text order is their numeric order: one key, so "after id N" is one seek.
NUMERIC_ID = f"substr('{'0' * ID_WIDTH}' || id, -{ID_WIDTH})"
# Numeric id order (HubSpot lists ids as integers), live and archived apart, with `updated` in the entry, so a
# search's page and its count (modified since, id above) seek this index and its count reads nothing else.
SCHEMA += (
    f"CREATE INDEX IF NOT EXISTS records_by_numeric_id_key ON records (stream, archived, {NUMERIC_ID}, updated);\n"
)


def numeric_id(digits: str) -> str:
    """The NUMERIC_ID key of an id of at most ID_WIDTH digits."""
    return digits.rjust(ID_WIDTH, "0")


# Every stream the world holds. Mixpanel events and Stripe events are append-only.
STREAMS: tuple[str, ...] = (
    "stripe.customers",
    "stripe.subscriptions",
    "stripe.invoices",
    "stripe.events",
    "hubspot.contacts",
    "hubspot.companies",
    "hubspot.contact_companies",
    "zendesk.users",
    "zendesk.tickets",
    "klaviyo.profiles",
    "klaviyo.events",
    "klaviyo.metrics",
    "mixpanel.events",
)

TRUTH_FILE = "truth.csv"
ANOMALIES_FILE = "anomalies.csv"
CASES_FILE = "cases.csv"
DB_FILE = "world.db"


@dataclass(frozen=True)
class Record:
    stream: str
    id: str
    created: int
    updated: int
    payload: dict[str, Any]
    archived: bool = False


class WorldStore:
    """Thread-safe access to a world folder: one SQLite connection per thread, WAL mode."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._write_lock = threading.Lock()
        with self.connect() as conn:
            conn.executescript(SCHEMA)

    def connect(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.folder / DB_FILE, timeout=60, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.row_factory = sqlite3.Row
            self._local.conn = conn
        return conn

    # -- writing -----------------------------------------------------------------
    def upsert(self, records: Iterable[Record]) -> int:
        """Insert or replace records in one transaction; returns how many were written."""
        rows = [
            (r.stream, r.id, r.created, r.updated, int(r.archived), json.dumps(r.payload, separators=(",", ":")))
            for r in records
        ]
        with self._write_lock:
            conn = self.connect()
            with conn:
                conn.executemany(
                    "INSERT OR REPLACE INTO records (stream, id, created, updated, archived, payload)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    rows,
                )
        return len(rows)

    def delete(self, keys: Iterable[tuple[str, str]]) -> int:
        """Remove records for good (a destination's permanent deletion); returns how many there were."""
        with self._write_lock:
            conn = self.connect()
            with conn:
                return sum(
                    conn.execute("DELETE FROM records WHERE stream = ? AND id = ?", key).rowcount for key in keys
                )

    def append_truth(self, rows: Iterable[tuple[str, str, int]]) -> None:
        """Append (stream, record_id, person_id) rows to the ground truth."""
        self._append_csv(TRUTH_FILE, ("stream", "record_id", "person_id"), rows)

    def append_anomalies(self, rows: Iterable[tuple[str, str, str]]) -> None:
        """Append (stream, record_id, kind) rows for records made bad on purpose."""
        self._append_csv(ANOMALIES_FILE, ("stream", "record_id", "kind"), rows)

    def append_cases(self, rows: Iterable[tuple[int, str]]) -> None:
        """Append (person_id, case) rows for the hard cases of new people."""
        self._append_csv(CASES_FILE, ("person_id", "case"), rows)

    def _append_csv(self, name: str, header: tuple[str, ...], rows: Iterable[tuple[Any, ...]]) -> None:
        path = self.folder / name
        with self._write_lock:
            new = not path.exists()
            with path.open("a", newline="") as f:
                writer = csv.writer(f)
                if new:
                    writer.writerow(header)
                writer.writerows(rows)

    def set_meta(self, key: str, value: Any) -> None:
        with self._write_lock:
            conn = self.connect()
            with conn:
                conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, json.dumps(value)))

    # -- reading -----------------------------------------------------------------
    def get_meta(self, key: str, default: Any = None) -> Any:
        row = self.connect().execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return default if row is None else json.loads(row["value"])

    def get(self, stream: str, record_id: str) -> Record | None:
        row = self.connect().execute(
            "SELECT * FROM records WHERE stream = ? AND id = ?", (stream, record_id)
        ).fetchone()
        return None if row is None else _to_record(row)

    def scan(self, stream: str) -> Iterator[Record]:
        """Every record of a stream, archived ones included, in id order."""
        cur = self.connect().execute("SELECT * FROM records WHERE stream = ? ORDER BY id", (stream,))
        for row in cur:
            yield _to_record(row)


def _to_record(row: sqlite3.Row) -> Record:
    return Record(
        stream=row["stream"],
        id=row["id"],
        created=row["created"],
        updated=row["updated"],
        payload=json.loads(row["payload"]),
        archived=bool(row["archived"]),
    )

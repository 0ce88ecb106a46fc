"""Erasure that reaches the disk: after a deletion, the DuckDB files are rewritten so no freed block holds the person.

DuckDB deletes by marking rows gone; the blocks that held them are reused later, not overwritten, so the bytes of
`warehouse.duckdb` keep a deleted person's values (a `FORCE CHECKPOINT` included). A compaction copies the live
database into a fresh file (`COPY FROM DATABASE`: schemas, tables with their keys and defaults, sequences at their
next value, views, macros) and swaps it in with `os.replace`. The old file stays attached, and so locked, from
before the copy until the fresh file is in place: no writer can write into the file being replaced, and one that
opens the path afterwards finds the fresh file. The same is done for the alert store (`schedules/alerts.py`),
whose messages are first scrubbed of the person, as `sync.runs`' are.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import duckdb

from cdp_assets.warehouse_access import when_unlocked
from schedules.alerts import forget

LOCK_WAIT_SECONDS = 120.0  # for a command reading the warehouse to let go
# What must be the same in the copy as in the original, per kind of catalog entry: the entry's name and what
# makes it behave alike (a sequence's next value, a constraint's text, a view's query).
CATALOG_SQL = {
    "tables": "SELECT schema_name, table_name, column_count FROM duckdb_tables() WHERE database_name = $db",
    "views": "SELECT schema_name, view_name, sql FROM duckdb_views() WHERE database_name = $db AND NOT internal",
    "sequences": "SELECT schema_name, sequence_name, coalesce(last_value + increment_by, start_value), increment_by"
    " FROM duckdb_sequences() WHERE database_name = $db",
    "constraints": "SELECT schema_name, table_name, constraint_type, constraint_text FROM duckdb_constraints()"
    " WHERE database_name = $db",
    "indexes": "SELECT schema_name, table_name, index_name, sql FROM duckdb_indexes() WHERE database_name = $db",
    "macros": "SELECT schema_name, function_name, macro_definition FROM duckdb_functions() WHERE database_name = $db"
    " AND NOT internal",
}


@dataclass(frozen=True)
class Compacted:
    path: Path
    bytes_before: int
    bytes_after: int
    seconds: float

    @property
    def detail(self) -> str:
        return f"{self.path.name}: {self.bytes_before} bytes before, {self.bytes_after} after, {self.seconds:.1f}s"


def wal(path: Path) -> Path:
    return path.with_name(path.name + ".wal")


def on_disk(path: Path) -> int:
    """The bytes a database takes: its file and its write-ahead log."""
    return sum(p.stat().st_size for p in (path, wal(path)) if p.exists())


def catalog(conn: duckdb.DuckDBPyConnection, database: str) -> dict[str, list[tuple[object, ...]]]:
    """What a database holds, entry by entry, and each table's rows: two faithful copies give the same."""
    found = {kind: sorted(conn.execute(sql, {"db": database}).fetchall(), key=repr)
             for kind, sql in CATALOG_SQL.items()}  # fmt: skip
    counts = [f'SELECT \'{s}.{t}\', count(*) FROM "{database}"."{s}"."{t}"' for s, t, _ in found["tables"]]
    found["rows"] = sorted(conn.execute(" UNION ALL ".join(counts)).fetchall()) if counts else []
    return found


def compact(path: Path, memory_limit: str = "3GB") -> Compacted:
    """Rewrite the DuckDB file at `path` into a fresh one and swap it in; the original stays if the copy differs."""
    started, before = time.monotonic(), on_disk(path)
    fresh = path.with_name(path.name + ".compacting")
    for left in (fresh, wal(fresh)):  # by a compaction killed part way: the original was never replaced
        left.unlink(missing_ok=True)
    config = {"memory_limit": memory_limit, "temp_directory": str(fresh) + ".tmp"}
    with duckdb.connect(config=config) as conn:
        # Held until DETACH; a command reading the file may have it for a moment first.
        when_unlocked(lambda: conn.execute("ATTACH $path AS original", {"path": str(path)}), LOCK_WAIT_SECONDS)
        try:
            conn.execute("CHECKPOINT original")  # its log folded in, so no .wal of it is left to replay
            conn.execute("ATTACH $path AS fresh", {"path": str(fresh)})
            conn.execute("COPY FROM DATABASE original TO fresh")
            same = catalog(conn, "original") == catalog(conn, "fresh")
            conn.execute("CHECKPOINT fresh")
            conn.execute("DETACH fresh")
            if not same:
                fresh.unlink()
                raise RuntimeError(f"the copy of {path.name} differs from it; the original is kept")
            wal(path).unlink(missing_ok=True)  # checkpointed above; a stale log would replay onto the fresh file
            os.replace(fresh, path)
        finally:
            conn.execute("DETACH original")
    return Compacted(path, before, on_disk(path), time.monotonic() - started)


def after_erasure(warehouse: Path, alerts: Path, named: set[str], memory_limit: str) -> list[Compacted]:
    """The warehouse compacted, then the alert store scrubbed of the subjects' values and compacted."""
    done = [compact(warehouse, memory_limit)]
    if alerts.exists():
        forget(alerts, named)
        done.append(compact(alerts, memory_limit))
    return done

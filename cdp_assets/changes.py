"""Change logs: the keys a build rewrote, so that a build reading its table follows them instead of rebuilding whole.

A producer (a staging entity, the identity graph) logs, in the transaction that writes its rows, each key it rewrote
with the ids its old row held (`before`: a staged row's key and `*_id` columns, so a follower finds what the row hung
from before it moved), all under one number from a sequence that never goes back. A whole rewrite logs one row with
no key instead, which supersedes the producer's older rows. A follower (identifiers, person profiles) keeps, in the
transaction that writes its own rows, the number it has read through and a fingerprint of what built it: its next
build follows the keys logged since, or is whole when a producer it reads rewrote whole since, when its fingerprint
differs, or when it has no earlier build. Rows every follower has read are dropped. An erasure empties the log and
the positions (privacy/erasure.py): a key it names goes, and every follower's next build is whole.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import duckdb

LOG = "staging._changes"
POSITIONS = "staging._followers"
SETUP_SQL = f"""
CREATE SCHEMA IF NOT EXISTS staging;
CREATE SEQUENCE IF NOT EXISTS staging._change_numbers;
CREATE TABLE IF NOT EXISTS {LOG} (
    producer VARCHAR NOT NULL,  -- a staging entity ("hubspot__contacts") or "identity.graph"
    change BIGINT NOT NULL,     -- the build's number: later builds have higher ones
    key VARCHAR,                -- a rewritten row's key; NULL: the producer rewrote everything
    before JSON                 -- the ids the row held before this build (NULL: it had no row)
);
CREATE TABLE IF NOT EXISTS {POSITIONS} (
    follower VARCHAR PRIMARY KEY,
    change BIGINT NOT NULL,     -- the last change its last build read
    fingerprint VARCHAR NOT NULL
);
"""
FOLLOWED = "_followed"  # TEMP (producer, key, before): the changes a following build reads


def log(conn: duckdb.DuckDBPyConnection, producer: str, keys: str | None) -> None:
    """Log a build of `producer` in the caller's transaction: the rows of `keys` (a query of `key` and `before`),
    or, when `keys` is None, a rewrite of everything."""
    conn.execute(SETUP_SQL)
    if keys is None:
        conn.execute(f"DELETE FROM {LOG} WHERE producer = $producer", {"producer": producer})
        keys = "SELECT NULL AS key, NULL AS before"
    conn.execute(
        f"INSERT INTO {LOG} SELECT $producer, nextval('staging._change_numbers'), key, before FROM ({keys})",
        {"producer": producer},
    )


@dataclass(frozen=True)
class Position:
    """Where a following build stands: the last change it reads, and why it is whole (None: it follows FOLLOWED)."""

    follower: str
    through: int
    fingerprint: str
    whole: str | None


def follow(conn: duckdb.DuckDBPyConnection, follower: str, producers: list[str], fingerprint: str) -> Position:
    """Where `follower`'s build stands; when it follows, TEMP FOLLOWED holds the changes since its last build."""
    conn.execute(SETUP_SQL)
    [(through,)] = conn.execute(f"SELECT coalesce(max(change), 0) FROM {LOG}").fetchall()
    kept = conn.execute(f"SELECT change, fingerprint FROM {POSITIONS} WHERE follower = $f", {"f": follower}).fetchall()
    if not kept:
        return Position(follower, through, fingerprint, "no earlier build")
    if kept[0][1] != fingerprint:
        return Position(follower, through, fingerprint, "its code or rules changed")
    conn.execute(
        f"CREATE OR REPLACE TEMP TABLE {FOLLOWED} AS SELECT producer, key, before FROM {LOG}"
        " WHERE change > $since AND change <= $through AND list_contains($producers, producer)",
        {"since": kept[0][0], "through": through, "producers": producers},
    )
    rewritten = conn.execute(f"SELECT DISTINCT producer FROM {FOLLOWED} WHERE key IS NULL ORDER BY 1").fetchall()
    if rewritten:
        return Position(follower, through, fingerprint, "rewritten whole: " + ", ".join(p for (p,) in rewritten))
    return Position(follower, through, fingerprint, None)


def keep(conn: duckdb.DuckDBPyConnection, position: Position) -> None:
    """The follower's position after its build, in the caller's transaction; the log's rows every follower has
    read go."""
    conn.execute(
        f"INSERT OR REPLACE INTO {POSITIONS} VALUES ($follower, $change, $fingerprint)",
        {"follower": position.follower, "change": position.through, "fingerprint": position.fingerprint},
    )
    conn.execute(f"DELETE FROM {LOG} WHERE change <= (SELECT min(change) FROM {POSITIONS})")


def code_fingerprint(paths: list[Path], *facts: str) -> str:
    """A fingerprint of code and rules: every file under `paths` (folders searched whole), and `facts` such as the
    versions of the libraries that run it."""
    digest = hashlib.sha256("\0".join(facts).encode())
    files = {f for p in paths for f in ([p] if p.is_file() else p.rglob("*")) if f.is_file() and f.suffix != ".pyc"}
    for path in sorted(files):
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()[:16]

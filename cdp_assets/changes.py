"""Change logs: the keys a build rewrote, so that a build reading its table follows them instead of rebuilding whole.

A producer (a staging entity, the identifiers, the identity graph; person profiles, email addresses, lifecycles, the
consent ledger, consent and accounts, by the profiles they rewrote or whose rows changed) logs, in the transaction
that writes its rows, each key it rewrote with what a follower needs of its old row (`before`: a staged row's key and
its stream's `linked_ids`, so a follower finds what the row hung from before it moved; the addresses a profile's
refusals bind, for the ledger), all under one number from a sequence that never goes back. A whole rewrite logs one
row with no key instead, which supersedes the producer's older rows. A follower (identifiers, the graph's inputs,
person profiles, email addresses, accounts, lifecycles, consent, the views by profile) keeps, in the transaction that
writes its own rows, the number it has read through, a fingerprint of what built it and the moment it judged the clock
by (`as_of`, for what turns from future to past between builds): its next build follows the keys logged since, or is
whole when a producer it reads rewrote whole since, when its fingerprint differs, or when it has no earlier build.
Rows every follower has read are dropped. An erasure empties the log and the positions (privacy/erasure.py): a key it
names goes, and every follower's next build is whole.

Numbers are taken in the order producers commit because one run writes the warehouse at a time (DuckDB's one writer;
`schedules/dagster.yaml` runs one run at a time, its steps one after another): a follower never reads past a number a
producer still holds uncommitted.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

import duckdb

from cdp_assets.warehouse_access import has_tables, transaction

LOG = "staging._changes"
POSITIONS = "staging._followers"
SETUP_SQL = f"""
CREATE SCHEMA IF NOT EXISTS staging;
CREATE SEQUENCE IF NOT EXISTS staging._change_numbers;
CREATE TABLE IF NOT EXISTS {LOG} (
    producer VARCHAR NOT NULL,  -- a staging entity ("hubspot__contacts"), "identity.graph" or a table a build
                                -- writes ("identity.person_profiles", "identity.account_people")
    change BIGINT NOT NULL,     -- the build's number: later builds have higher ones
    key VARCHAR,                -- a rewritten row's key; NULL: the producer rewrote everything
    before JSON                 -- what a follower needs of the old row: a staged row's linked ids (NULL: it had no
                                -- row), the addresses a profile's refusals bind for the ledger; NULL for the others
);
CREATE TABLE IF NOT EXISTS {POSITIONS} (
    follower VARCHAR PRIMARY KEY,
    change BIGINT NOT NULL,     -- the last change its last build read
    fingerprint VARCHAR NOT NULL
);
ALTER TABLE {POSITIONS} ADD COLUMN IF NOT EXISTS as_of TIMESTAMPTZ;  -- the moment its last build judged the clock by
"""
FOLLOWED = "_followed"  # TEMP (producer, key, before): the changes a following build reads
# The ids in one column of the followed rows of a staging entity, as the rows hold them now and held them before.
LINKED_SQL = """
SELECT s.{column}::VARCHAR AS record_id FROM {followed} f JOIN {table} s ON s.{key}::VARCHAR = f.key
WHERE f.producer = $entity_{n}
UNION
SELECT json_extract_string(f.before, $path_{n}) FROM {followed} f WHERE f.producer = $entity_{n}"""


def linked(table: str, key: str, entity: str, column: str, n: int) -> tuple[str, dict[str, str]]:
    """A query of `record_id`: the ids in `column` of the followed rows of `entity` (staging `table`, keyed by `key`),
    now and before their change; and its parameters, numbered `n` so that several can stand in one query."""
    sql = LINKED_SQL.format(column=column, followed=FOLLOWED, table=table, key=key, n=n)
    return sql, {f"entity_{n}": entity, f"path_{n}": f"$.{column}"}


def log(conn: duckdb.DuckDBPyConnection, producer: str, keys: str | None) -> None:
    """Log a build of `producer` in the caller's transaction: the rows of `keys` (a query of `key` and `before`),
    or, when `keys` is None, a rewrite of everything."""
    conn.execute(SETUP_SQL)
    if keys is None:
        conn.execute(f"DELETE FROM {LOG} WHERE producer = $producer", {"producer": producer})
        keys = "SELECT NULL AS key, NULL AS before"
    [(number,)] = conn.execute("SELECT nextval('staging._change_numbers')").fetchall()
    conn.execute(f"INSERT INTO {LOG} SELECT $producer, $number, key, before FROM ({keys})",
                 {"producer": producer, "number": number})


@dataclass(frozen=True)
class Position:
    """Where a following build stands: the last change it reads, the moment it judges the clock by, and why it is
    whole (None: it follows FOLLOWED, and `since` is the moment its last build judged the clock by)."""

    follower: str
    through: int
    fingerprint: str
    as_of: datetime
    whole: str | None = None
    since: datetime | None = None

    def rebuilt(self, why: str) -> Position:
        """This position for a whole build, for the reason `why`."""
        return replace(self, whole=why, since=None)


def follow(conn: duckdb.DuckDBPyConnection, follower: str, producers: list[str], fingerprint: str,
           tables: Iterable[str] = ()) -> Position:
    """Where `follower`'s build stands, which writes `tables` ("schema.table": whole when one is missing); when it
    follows, TEMP FOLLOWED holds the changes since its last build."""
    conn.execute(SETUP_SQL)
    [(through, as_of)] = conn.execute(f"SELECT coalesce(max(change), 0), now() FROM {LOG}").fetchall()
    kept = conn.execute(f"SELECT change, fingerprint, as_of FROM {POSITIONS} WHERE follower = $f",
                        {"f": follower}).fetchall()  # fmt: skip
    position = Position(follower, max(through, kept[0][0] if kept else 0), fingerprint, as_of)
    if not kept or not all(has_tables(conn, *table.split(".")) for table in tables):
        return position.rebuilt("no earlier build")
    if kept[0][2] is None:
        return position.rebuilt("no clock kept by its last build")
    if kept[0][1] != fingerprint:
        return position.rebuilt("its code or rules changed")
    conn.execute(
        f"CREATE OR REPLACE TEMP TABLE {FOLLOWED} AS SELECT producer, key, before FROM {LOG}"
        " WHERE change > $since AND change <= $through AND list_contains($producers, producer)",
        {"since": kept[0][0], "through": position.through, "producers": producers},
    )
    rewritten = conn.execute(f"SELECT DISTINCT producer FROM {FOLLOWED} WHERE key IS NULL ORDER BY 1").fetchall()
    if rewritten:
        return position.rebuilt("rewritten whole: " + ", ".join(p for (p,) in rewritten))
    return replace(position, since=kept[0][2])


def keep(conn: duckdb.DuckDBPyConnection, position: Position) -> None:
    """The follower's position after its build, in the caller's transaction; the log's rows every follower has
    read go."""
    conn.execute(
        f"INSERT OR REPLACE INTO {POSITIONS} (follower, change, fingerprint, as_of)"
        " VALUES ($follower, $change, $fingerprint, $as_of)",
        {"follower": position.follower, "change": position.through, "fingerprint": position.fingerprint,
         "as_of": position.as_of},
    )
    conn.execute(f"DELETE FROM {LOG} WHERE change <= (SELECT min(change) FROM {POSITIONS})")


@contextmanager
def keeping(conn: duckdb.DuckDBPyConnection, position: Position, rewritten: str | None = None) -> Iterator[None]:
    """A follower's writes and its position after them, in one transaction: both or neither. With `rewritten` (a
    query of `key`: what a following build rewrote), the follower is a producer too: its build is logged for the
    builds that follow it, as those keys or, when it was whole, as a rewrite of everything."""
    with transaction(conn):
        yield
        if rewritten is not None:
            log(conn, position.follower, None if position.whole is not None else
                f"SELECT DISTINCT key, NULL::JSON AS before FROM ({rewritten}) WHERE key IS NOT NULL")
        keep(conn, position)


def replace_rows(conn: duckdb.DuckDBPyConnection, position: Position, table: str, rows: str, key: str, keys: str,
                 order: str) -> None:
    """`table` from TEMP `rows`: a following build (`position`) replaces only the rows whose `key` the query `keys`
    selects; a whole one replaces the table, in `order`."""
    if position.whole is None:
        conn.execute(f"DELETE FROM {table} WHERE {key} IN ({keys})")
        conn.execute(f"INSERT INTO {table} BY NAME FROM {rows} WHERE {key} IN ({keys})")
    else:
        conn.execute(f"CREATE OR REPLACE TABLE {table} AS FROM {rows} ORDER BY {order}")


def code_fingerprint(paths: list[Path], *facts: str) -> str:
    """A fingerprint of code and rules: every file under `paths` (folders searched whole) by its path and contents,
    and `facts` such as the versions of the libraries that run it. Taken once, as a module loads or a run starts, so
    a file saved while a run works marks its next build whole instead of vouching for this one."""
    digest = hashlib.sha256("\0".join(facts).encode())
    files = {(f.relative_to(p.parent).as_posix(), f) for p in paths
             for f in ([p] if p.is_file() else p.rglob("*")) if f.is_file() and f.suffix != ".pyc"}  # fmt: skip
    for name, path in sorted(files):
        content = path.read_bytes()
        digest.update(f"\0{name}\0{len(content)}\0".encode() + content)
    return digest.hexdigest()[:16]

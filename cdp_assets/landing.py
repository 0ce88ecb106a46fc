"""Landing pages of source records in `raw`: append-only, one row per record version.

Pages land in batches, each with the stream's cursor after its last page in one DuckDB
transaction, so a run killed anywhere resumes from the last landed batch and lands nothing twice: a
version equal to the record's current one, or to a past version of the same time,
is not appended again. A full re-pull
notes every id it sees and, once complete, marks the records the source no
longer lists as deleted; a stream whose pulls cannot see deletions does the same
each pull from a listing of ids only (`tombstone_unlisted`). Records naming a person who asked to be deleted are dropped
from each page before it lands (`cdp_assets/privacy/suppression.py`), and counted. A version that only brings
back what a sync wrote lands marked as an echo, in the same transaction (`cdp_assets/echoes.py`).
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import duckdb
import pandas as pd

from cdp_assets import echoes
from cdp_assets.contracts import PLAUSIBLE_SINCE
from resources.source import Cursor, Page, SourceRecord

# A full pull (or listing of ids) that would mark more than this share of live records deleted is more
# likely a broken source than a mass deletion; the run fails instead.
MAX_TOMBSTONE_SHARE = 0.5

SETUP_SQL = """
CREATE SCHEMA IF NOT EXISTS raw;
CREATE SEQUENCE IF NOT EXISTS raw.landing_seq;
CREATE TABLE IF NOT EXISTS raw._stream_state (
    stream VARCHAR PRIMARY KEY,
    cursor JSON,
    full_pull_started_at TIMESTAMPTZ,
    updated_at TIMESTAMPTZ,
    run_id VARCHAR
);
CREATE TABLE IF NOT EXISTS raw._full_pull_seen (stream VARCHAR NOT NULL, record_id VARCHAR NOT NULL);
"""

RAW_TABLE_SQL = """
CREATE TABLE IF NOT EXISTS {table} (
    landing_id BIGINT NOT NULL,        -- order of landing, across all streams
    record_id VARCHAR,                 -- the source's id; NULL when the source sent none
    version_at TIMESTAMPTZ NOT NULL,   -- source change time, never later than extraction
    deleted BOOLEAN NOT NULL,          -- deleted or archived at the source
    payload JSON NOT NULL,             -- the record exactly as the API served it
    payload_hash VARCHAR NOT NULL,
    source VARCHAR NOT NULL,
    stream VARCHAR NOT NULL,
    extracted_at TIMESTAMPTZ NOT NULL,
    run_id VARCHAR NOT NULL
)
"""

# Pages land in batches (LANDING_BATCH_RECORDS or LANDING_BATCH_SECONDS, whichever comes first): the batch's
# records are looked up in the table's history in one scan (HISTORY_SQL), and each page's versions are judged
# against that history and the pages before it (LAND_PAGE_SQL), exactly as if the page had landed alone. A record
# read in one page of the batch only is judged with all such records at once; one read in several pages, page by
# page.
LANDING_BATCH_RECORDS = 20_000
LANDING_BATCH_SECONDS = 5.0

HISTORY_SQL = """
CREATE OR REPLACE TEMP TABLE _history AS
SELECT record_id AS record_key, version_at, landing_id, payload_hash || ':' || deleted AS state
FROM {table} WHERE record_id IN (SELECT record_id FROM _batch WHERE record_id IS NOT NULL)
UNION ALL
SELECT '#' || payload_hash, version_at, landing_id, payload_hash || ':' || deleted
FROM {table}
WHERE record_id IS NULL AND payload_hash IN (SELECT md5(payload) FROM _batch WHERE record_id IS NULL)
"""

# The batch frame's times are ISO text (see `_frame`).
BATCH_SELECT = (
    "SELECT * REPLACE (updated_at::TIMESTAMPTZ AS updated_at, extracted_at::TIMESTAMPTZ AS extracted_at)"
    " FROM page_batch"
)

BATCH_ROWS_SQL = """
CREATE OR REPLACE TEMP TABLE _rows AS
WITH latest AS (  -- per page, each record's latest version read
    SELECT record_id, coalesce(record_id, '#' || md5(payload)) AS record_key,
           least(coalesce(updated_at, extracted_at), extracted_at) AS version_at, deleted, payload::JSON AS payload,
           md5(payload) AS payload_hash, pos, page_no, extracted_at, md5(payload) || ':' || deleted AS state
    FROM _batch
    QUALIFY row_number() OVER (PARTITION BY page_no, record_key ORDER BY version_at DESC, pos DESC) = 1
)
SELECT *, count(*) OVER (PARTITION BY record_key) > 1 AS several_pages FROM latest
"""

# The rows of records read in one page only ($page_no NULL), or of one page's records read in several.
LAND_PAGE_SQL = """
CREATE OR REPLACE TEMP TABLE _landed AS
WITH page AS (
    SELECT * FROM _rows
    WHERE CASE WHEN $page_no IS NULL THEN NOT several_pages ELSE several_pages AND page_no = $page_no END
),
-- The versions on either side of each page row in its record's history, by version time.
neighbours AS (
    SELECT p.pos,
           arg_max(h.state, (h.version_at, h.landing_id)) FILTER (WHERE h.version_at <= p.version_at) AS before,
           arg_min(h.state, (h.version_at, h.landing_id)) FILTER (WHERE h.version_at >= p.version_at) AS after
    FROM page p
    JOIN _history h USING (record_key)
    GROUP BY p.pos
)
SELECT nextval('raw.landing_seq') AS landing_id, p.record_id, p.version_at, p.deleted, p.payload, p.payload_hash,
       $source AS source, $stream AS stream, p.extracted_at, $run_id AS run_id
FROM page p
LEFT JOIN neighbours n USING (pos)
-- A version equal to the one just before or after it in time is the same version seen again (the current one
-- read again, a Stripe event's copy of what a list showed, an overlap re-read): it is already history.
-- A record that returns to an earlier state (A, B, A) lands each change.
WHERE p.state IS DISTINCT FROM n.before AND p.state IS DISTINCT FROM n.after
ORDER BY p.pos
"""
KEEP_LANDED_SQL = """
INSERT INTO {table} SELECT * FROM _landed ORDER BY landing_id;
INSERT INTO _history
SELECT coalesce(record_id, '#' || payload_hash), version_at, landing_id, payload_hash || ':' || deleted FROM _landed;
"""

MISSING_SQL = """
SELECT count(*) FILTER (WHERE NOT seen) AS missing, count(*) AS live
FROM (
    SELECT record_id, arg_max(deleted, (version_at, landing_id)) AS deleted,
           record_id IN (SELECT record_id FROM raw._full_pull_seen WHERE stream = $state_key) AS seen
    FROM {table} WHERE record_id IS NOT NULL GROUP BY record_id
)
WHERE NOT deleted
"""

TOMBSTONE_SQL = """
INSERT INTO {table}
SELECT nextval('raw.landing_seq'), record_id, $now, TRUE, payload, payload_hash, $source, $stream, $now, $run_id
FROM (
    SELECT record_id,
           arg_max(payload, (version_at, landing_id)) AS payload,
           arg_max(payload_hash, (version_at, landing_id)) AS payload_hash,
           arg_max(deleted, (version_at, landing_id)) AS deleted
    FROM {table}
    WHERE record_id IS NOT NULL
      AND record_id NOT IN (SELECT record_id FROM raw._full_pull_seen WHERE stream = $state_key)
    GROUP BY record_id
)
WHERE NOT deleted
"""


@dataclass
class LandingResult:
    """What one extraction did, for materialisation metadata."""

    full_pull: bool
    rows_fetched: int = 0
    rows_new: int = 0
    duplicates_in_pages: int = 0  # records a page held more than once; landed once
    suppressed: int = 0  # records dropped for naming a deleted person
    echoes: int = 0  # new versions that only bring back what a sync wrote
    pages: int = 0
    tombstoned: int = 0
    seconds: float = 0.0


@dataclass(frozen=True)
class StreamState:
    cursor: Cursor | None
    full_pull_in_progress: bool


def setup(conn: duckdb.DuckDBPyConnection, table: str) -> None:
    conn.execute(SETUP_SQL)
    conn.execute(echoes.SETUP_SQL)
    conn.execute(RAW_TABLE_SQL.format(table=table))


def read_state(conn: duckdb.DuckDBPyConnection, table: str) -> StreamState:
    row = conn.execute(
        "SELECT cursor, full_pull_started_at FROM raw._stream_state WHERE stream = $table", {"table": table}
    ).fetchone()
    if row is None:
        return StreamState(None, False)
    return StreamState(json.loads(row[0]) if row[0] else None, row[1] is not None)


def land_stream(
    conn: duckdb.DuckDBPyConnection,
    *,
    table: str,
    source: str,
    stream: str,
    tombstone_missing: bool,
    pages: Iterator[Page],
    full_pull: bool,
    run_id: str,
    dropped: Callable[[list[SourceRecord]], list[bool]] | None = None,
    result: LandingResult | None = None,
    echo_rule: echoes.EchoRule | None = None,
) -> LandingResult:
    """Land every page of `pages` into `table` (which also keys the stream's state).

    `full_pull` says the pages cover everything the source holds; `dropped` says, for each record of a page, whether
    it must not land (it names a deleted person): those are filtered out in Python before the page is batched.
    `result`, when given, is counted into as batches land, so a caller whose pages fail part way has the counts up to
    the failure. `echo_rule`, for a stream syncs write to, marks the versions that only bring a sync's write back.
    """
    started = time.monotonic()
    result = result if result is not None else LandingResult(full_pull=full_pull)
    params = {"source": source, "stream": stream, "run_id": run_id}
    batch: list[Page] = []
    records = 0
    try:
        for page in pages:
            if dropped is not None and page.records:
                kept = [r for r, gone in zip(page.records, dropped(page.records), strict=True) if not gone]
                result.suppressed += len(page.records) - len(kept)
                result.rows_fetched += len(page.records) - len(kept)
                page = replace(page, records=kept)
            batch.append(page)
            records += len(page.records)
            if records >= LANDING_BATCH_RECORDS or (
                datetime.now(UTC) - batch[0].fetched_at
            ).total_seconds() >= LANDING_BATCH_SECONDS:
                _land_batch(conn, table, batch, params, full_pull and tombstone_missing, result, echo_rule)
                batch, records = [], 0
        if batch:
            _land_batch(conn, table, batch, params, full_pull and tombstone_missing, result, echo_rule)
        if full_pull:
            result.tombstoned = _finish_full_pull(
                conn, table, tombstone_missing, {**params, "state_key": table, "now": datetime.now(UTC)}
            )
    finally:
        result.seconds = time.monotonic() - started
    return result


def _land_batch(
    conn: duckdb.DuckDBPyConnection,
    table: str,
    batch: list[Page],
    params: dict[str, Any],
    note_seen: bool,
    result: LandingResult,
    echo_rule: echoes.EchoRule | None,
) -> None:
    """Land the pages of `batch`, the marks of its echoes and the cursor of its last page in one transaction."""
    fetched = sum(len(page.records) for page in batch)
    echo_rule = echo_rule if echo_rule is not None and echoes.sync_state_exists(conn) else None
    conn.begin()
    try:
        if fetched:
            conn.register("page_batch", _frame(batch))
            conn.execute(f"CREATE OR REPLACE TEMP TABLE _batch AS {BATCH_SELECT}")
            conn.unregister("page_batch")
            conn.execute(HISTORY_SQL.format(table=table))
            conn.execute(BATCH_ROWS_SQL)
            pages = conn.execute("SELECT DISTINCT page_no FROM _rows WHERE several_pages ORDER BY 1").fetchall()
            for (page_no,) in [(None,), *pages]:
                conn.execute(LAND_PAGE_SQL, {**params, "page_no": page_no})
                conn.execute(KEEP_LANDED_SQL.format(table=table))
                result.rows_new += conn.execute("SELECT count(*) FROM _landed").fetchone()[0]
                if echo_rule is not None:
                    result.echoes += echo_rule.mark(conn, table, params["run_id"], "_landed")
            if note_seen:
                conn.execute(
                    "INSERT INTO raw._full_pull_seen SELECT DISTINCT $state_key, record_id FROM _batch"
                    " WHERE record_id IS NOT NULL",
                    {"state_key": table},
                )
        _save_cursor(conn, table, batch[-1].cursor, params["run_id"], full_pull_in_progress=result.full_pull)
        conn.commit()
    except BaseException:
        conn.rollback()
        raise
    for page in batch:
        ids = [r.record_id for r in page.records if r.record_id is not None]
        result.duplicates_in_pages += len(ids) - len(set(ids))
    result.rows_fetched += fetched
    result.pages += len(batch)


def tombstone_unlisted(
    conn: duckdb.DuckDBPyConnection, *, table: str, source: str, stream: str, ids: Iterator[list[str]], run_id: str
) -> int:
    """Mark deleted the records of `table` that `ids`, pages of every id the source holds now, no longer names,
    exactly as a complete full pull marks them (its share guard included); returns how many.

    For a stream whose incremental pulls cannot see deletions, after its pull: every record in `table` was landed
    before the listing began, so the source held it then, and a listing in a stable order names it unless it was
    deleted. The ids are noted where a full pull notes its own (no full pull is in progress when this runs), only
    those `table` holds: the id of a person deleted on request, which the source may still list, never lands. A
    listing broken off part way marks nothing and the next one starts over."""
    conn.execute("DELETE FROM raw._full_pull_seen WHERE stream = $table", {"table": table})
    noted: list[str] = []
    for page in ids:
        noted.extend(page)
        if len(noted) >= LANDING_BATCH_RECORDS:
            _note_listed(conn, table, noted)
            noted = []
    _note_listed(conn, table, noted)
    params = {"source": source, "stream": stream, "run_id": run_id, "state_key": table, "now": datetime.now(UTC)}
    return _finish_full_pull(conn, table, True, params)


def _note_listed(conn: duckdb.DuckDBPyConnection, table: str, ids: list[str]) -> None:
    if ids:
        conn.execute(
            f"INSERT INTO raw._full_pull_seen SELECT $table, id FROM (SELECT unnest($ids::VARCHAR[]) AS id)"
            f" WHERE id IN (SELECT record_id FROM {table})",
            {"table": table, "ids": ids},
        )


def begin_full_pull(conn: duckdb.DuckDBPyConnection, table: str, run_id: str) -> None:
    """Start a full pull from scratch: forget the ids seen by any earlier, abandoned one.

    `updated_at` stays: it says when the source was last read, and nothing has been read yet (a source that is
    down when the nightly pull starts must not look freshly read)."""
    conn.begin()
    conn.execute("DELETE FROM raw._full_pull_seen WHERE stream = $table", {"table": table})
    conn.execute(
        "INSERT INTO raw._stream_state VALUES ($table, NULL, now(), NULL, $run_id) ON CONFLICT (stream) DO UPDATE"
        " SET cursor = NULL, full_pull_started_at = now(), run_id = excluded.run_id",
        {"table": table, "run_id": run_id},
    )
    conn.commit()


def _finish_full_pull(
    conn: duckdb.DuckDBPyConnection, table: str, tombstone_missing: bool, params: dict[str, Any]
) -> int:
    conn.begin()
    tombstoned = 0
    if tombstone_missing:
        missing, live = conn.execute(MISSING_SQL.format(table=table), {"state_key": table}).fetchone()
        if live and missing > MAX_TOMBSTONE_SHARE * live:
            conn.rollback()
            raise RuntimeError(
                f"{table}: the source did not list {missing} of {live} live records; refusing to "
                f"mark more than {MAX_TOMBSTONE_SHARE:.0%} deleted. Check the source before pulling again."
            )
        tombstoned = conn.execute(TOMBSTONE_SQL.format(table=table), params).fetchone()[0]
        conn.execute("DELETE FROM raw._full_pull_seen WHERE stream = $table", {"table": table})
    conn.execute("UPDATE raw._stream_state SET full_pull_started_at = NULL WHERE stream = $table", {"table": table})
    conn.commit()
    return tombstoned


def _save_cursor(
    conn: duckdb.DuckDBPyConnection, stream: str, cursor: Cursor | None, run_id: str, full_pull_in_progress: bool
) -> None:
    conn.execute(
        """
        INSERT INTO raw._stream_state VALUES ($stream, $cursor, CASE WHEN $full THEN now() END, now(), $run_id)
        ON CONFLICT (stream) DO UPDATE SET
            cursor = excluded.cursor,
            full_pull_started_at = CASE WHEN $full
                THEN coalesce(raw._stream_state.full_pull_started_at, now()) END,
            updated_at = excluded.updated_at,
            run_id = excluded.run_id
        """,
        {
            "stream": stream,
            "cursor": json.dumps(cursor) if cursor is not None else None,
            "full": full_pull_in_progress,
            "run_id": run_id,
        },
    )


def _frame(batch: list[Page]) -> pd.DataFrame:
    """The batch's records in the order read, each with its page and the time that page was fetched.

    Times travel as ISO text and become TIMESTAMPTZ in DuckDB (BATCH_SELECT): pandas' datetime64 holds only 1677 to
    2262, a source's times anything from year 1 to 9999.
    """
    records: list[SourceRecord] = [r for page in batch for r in page.records]
    return pd.DataFrame(
        {
            "record_id": pd.Series([r.record_id for r in records], dtype="string"),
            "updated_at": pd.Series([_change_time(r) for r in records], dtype="string"),
            "deleted": pd.Series([r.deleted is True for r in records], dtype="bool"),
            "payload": pd.Series([payload_json(r.payload) for r in records], dtype="string"),
            "pos": range(len(records)),
            "page_no": [n for n, page in enumerate(batch) for _ in page.records],
            "extracted_at": pd.Series(
                [page.fetched_at.isoformat() for page in batch for _ in page.records], dtype="string"
            ),
        }
    )


def _change_time(record: SourceRecord) -> str | None:
    """The record's change time, if plausible. One before the range the contracts allow (the epoch, year 1) would
    order this version before every earlier one; without it the version is timed at extraction, and one later than
    extraction is clamped to it (BATCH_ROWS_SQL)."""
    moment = record.updated_at
    return moment.isoformat() if moment is not None and moment > PLAUSIBLE_SINCE else None


# A lone UTF-16 surrogate escape (\ud800 without its pair), which JSON parsers such as DuckDB's refuse.
LONE_SURROGATE = re.compile(r"\\ud[89ab][0-9a-f]{2}(?!\\ud[c-f])|(?<!\\ud[89ab][0-9a-f]{2})\\ud[c-f][0-9a-f]{2}")


def payload_json(payload: Any) -> str:
    """The payload as JSON text DuckDB accepts, equal to what was served where JSON can hold it: a NaN or Infinity
    (which Python's parser lets through) is kept as its text, a lone surrogate becomes U+FFFD."""
    try:
        text = json.dumps(payload, separators=(",", ":"), allow_nan=False)
    except ValueError:
        return json.dumps(_storable(payload), separators=(",", ":"))
    return json.dumps(_storable(payload), separators=(",", ":")) if LONE_SURROGATE.search(text) else text


def _storable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # "nan", "inf": a string where a number belongs, which the contracts name
    if isinstance(value, str):
        return value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    if isinstance(value, dict):
        return {_storable(key): _storable(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_storable(item) for item in value]
    return value

"""What every source connector yields: pages of records, each with the cursor to commit after it.

A connector owns its cursor's shape (a JSON-able dict) and never writes the warehouse.
The landing code (`cdp_assets/landing.py`) writes pages in batches, each with the cursor
of its last page in one transaction, so a run killed at any point resumes from the last
landed batch.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from queue import Full, Queue
from typing import Any, ClassVar

from pydantic import Field

from resources.service import ServiceResource

Cursor = dict[str, Any]


@dataclass(frozen=True)
class SourceRecord:
    """One version of one source record as the API served it."""

    record_id: str | None
    payload: Any  # the JSON value as served: an object, or whatever a broken source sent instead
    updated_at: datetime | None = None  # the source's own change time; None means "as of extraction"
    deleted: bool = False


@dataclass
class Page:
    records: list[SourceRecord]
    cursor: Cursor  # the stream's state once this page has landed
    fetched_at: datetime = field(default_factory=lambda: datetime.now(UTC))  # a record's time if it has none


READ_AHEAD_PAGES = 8  # fetched pages waiting to land: enough to keep fetching while a batch lands


def read_ahead(pages: Iterator[Page], depth: int = READ_AHEAD_PAGES) -> Iterator[Page]:
    """`pages`, fetched by a thread of their own up to `depth` ahead of the caller, so a pull waits on the API or
    on the warehouse but not on both in turn. Pages fetched but never landed are fetched again by the next run,
    as their cursor was not saved."""
    waiting: Queue[Page | BaseException | None] = Queue(maxsize=depth)
    stop = threading.Event()

    def offer(item: Page | BaseException | None) -> bool:
        while not stop.is_set():
            try:
                waiting.put(item, timeout=0.2)
                return True
            except Full:
                continue
        return False

    def fetch() -> None:
        try:
            for page in pages:
                if not offer(page):
                    return
            offer(None)
        except BaseException as error:  # handed to the caller, who raises it
            offer(error)
        finally:
            pages.close()  # by the thread that advanced it

    fetcher = threading.Thread(target=fetch, name="read-ahead", daemon=True)
    fetcher.start()
    try:
        while (item := waiting.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        fetcher.join()


@dataclass(frozen=True)
class StreamSpec:
    """A stream of one source, stated as data."""

    name: str
    entity: str  # the staging entity it feeds
    primary_key: str  # column name of the record id in staging
    description: str
    # On a full re-pull, mark records the source no longer lists as deleted. Off for
    # append-only event streams, whose records never disappear, and for exports that list
    # their deletions themselves.
    tombstone_missing: bool = True
    # For a source that shows deletions neither in its incremental answers nor as events: every incremental pull
    # first lists the ids the source holds (`SourceResource.list_ids`, ids only), and the records it no longer lists
    # are marked deleted as a complete full pull marks them, so a deletion is seen within the hour, not the night.
    list_ids_each_pull: bool = False
    # Payload paths the source moves on every change of a record (its change times): a version differing from the
    # one before only there, and in what a sync wrote, is the sync's write coming back (cdp_assets/echoes.py).
    change_times: tuple[str, ...] = ()


class SourceResource(ServiceResource):
    """Base for the source connectors: base URL and secret from the environment."""

    lookback_seconds: int = Field(
        default=60,
        description="Overlap re-read before each incremental high-water mark, for clock skew and index lag.",
    )

    streams: ClassVar[dict[str, StreamSpec]]

    def requires_full_pull(self, stream: StreamSpec, cursor: Cursor | None) -> bool:
        """Whether an incremental pull is impossible from this cursor (a first run, say)."""
        return cursor is None

    def extract(self, stream: StreamSpec, cursor: Cursor | None, full: bool) -> Iterator[Page]:
        """Pages of records after `cursor`; with `full`, every record (resuming a full pull in progress)."""
        raise NotImplementedError

    def list_ids(self, stream: StreamSpec) -> Iterator[list[str]]:
        """The id of every record the source holds in `stream` now, a page at a time, for a stream that declares
        `list_ids_each_pull`."""
        raise NotImplementedError


def dig(value: Any, *path: str | int) -> Any:
    """The value at `path` inside parsed JSON; None where the path is missing or runs through a value of another
    shape (a string where an object belongs, say), so a connector reads any record without raising."""
    for step in path:
        if isinstance(step, int) and isinstance(value, list) and -len(value) <= step < len(value):
            value = value[step]
        elif isinstance(step, str) and isinstance(value, dict):
            value = value.get(step)
        else:
            return None
    return value


def from_iso(value: Any) -> datetime | None:
    """A change time from ISO-8601 text with its zone; None for anything else, a time without a zone included
    (it could be any offset), so the version is timed at extraction and the contracts judge the payload."""
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else None


def from_unix(seconds: Any) -> datetime | None:
    """A change time from unix seconds; None for anything else, or for a number no date can hold (milliseconds
    read as seconds land in year 58,000): the contracts name the fault."""
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        return None
    try:
        return datetime.fromtimestamp(seconds, tz=UTC)
    except (ValueError, OverflowError, OSError):
        return None


def text_id(value: Any) -> str | None:
    """A record id as text; a record whose id is missing, empty or not a scalar id keeps None and is judged by
    the contracts."""
    if isinstance(value, bool) or not isinstance(value, str | int) or value == "":
        return None
    return str(value)

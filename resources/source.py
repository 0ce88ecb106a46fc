"""What every source connector yields: pages of records, each with the cursor to commit after it.

A connector owns its cursor's shape (a JSON-able dict) and never writes the warehouse.
The landing code (`cdp_assets/landing.py`) writes pages in batches, each with the cursor
of its last page in one transaction, so a run killed at any point resumes from the last
landed batch.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from functools import partial
from itertools import pairwise
from queue import Empty, Full, Queue
from typing import Any, ClassVar

from pydantic import Field

from resources.http import POOL_CONNECTIONS
from resources.service import ServiceResource

Cursor = dict[str, Any]
LATE_DAYS = 1  # recent days an export by day reads again on the next pull: late events still arrive for them


DAYS = "days"  # a cursor's entry for a run of days under way: its days, and the connector's progress through them


def days_under_way(cursor: Cursor | None, first: date, last: date) -> tuple[Cursor | None, dict[str, Any]]:
    """`cursor` without the entry of a run of days under way, and that entry where it is of the days `first` to
    `last` (the same run broken off and begun again), so it resumes; {} where it is of other days or absent."""
    held = (cursor or {}).get(DAYS) or {}
    rest = {key: value for key, value in (cursor or {}).items() if key != DAYS} or None
    return rest, (held if (held.get("first"), held.get("last")) == (first.isoformat(), last.isoformat()) else {})


def days_progress(cursor: Cursor | None, first: date, last: date, progress: dict[str, Any]) -> Cursor:
    """`cursor` carrying the progress of a run of the days `first` to `last`, for a page before its last: what
    `days_under_way` gives back when the run is begun again."""
    return {**(cursor or {}), DAYS: {"first": first.isoformat(), "last": last.isoformat(), **progress}}


def first_event_day() -> str:
    """The first day (YYYY-MM-DD) of every stream exported by day, and of its daily partitions: one for them all, as
    a scheduled run names one range of days for every such stream. `MIXPANEL_START_DATE`, its name before Klaviyo's
    events were exported by day too, is still read."""
    return os.getenv("EVENTS_START_DATE") or os.getenv("MIXPANEL_START_DATE") or "2023-01-01"


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
DONE = "done"  # a range walked to its end, in a pull's progress over its ranges

# One range of a stream (a span of creation times, say) walked from a resume point (None: its start); yields each
# page's records with the point to resume after that page, None after the range's last page.
RangeWalk = Callable[[Cursor | None], Iterator[tuple[list[SourceRecord], Cursor | None]]]


def span_cuts(low: int, high: int, count: int) -> list[int]:
    """The points cutting [low, high) into `count` spans of equal length (fewer where they would coincide, or fall on
    `low`: a span shorter than `count` holds fewer)."""
    return sorted({low + (high - low) * n // count for n in range(1, count)} - {low})


def range_walks(
    walk: Callable[[Any, Any, Cursor | None], Iterator[tuple[list[SourceRecord], Cursor | None]]],
    cuts: list[Any],
    low: Any = None,
    high: Any = None,
) -> dict[str, RangeWalk]:
    """`walk(low, high, resume)` over each range between consecutive `cuts`, keyed by position: the first from
    `low`, the last to `high` (None: open below or above), so nothing outside the cuts' span is lost."""
    edges = [low, *cuts, high]
    return {str(n): partial(walk, start, end) for n, (start, end) in enumerate(pairwise(edges))}


def _offer(waiting: Queue[Any], item: Any, stop: threading.Event) -> bool:
    """Put `item` on `waiting` unless the reader has stopped first; returns whether it was put."""
    while not stop.is_set():
        try:
            waiting.put(item, timeout=0.2)
            return True
        except Full:
            continue
    return False


def read_ahead(pages: Iterator[Page], depth: int = READ_AHEAD_PAGES) -> Iterator[Page]:
    """`pages`, fetched by a thread of their own up to `depth` ahead of the caller, so a pull waits on the API or
    on the warehouse but not on both in turn. Pages fetched but never landed are fetched again by the next run,
    as their cursor was not saved."""
    waiting: Queue[Page | BaseException | None] = Queue(maxsize=depth)
    stop = threading.Event()

    def fetch() -> None:
        try:
            for page in pages:
                if not _offer(waiting, page, stop):
                    return
            _offer(waiting, None, stop)
        except BaseException as error:  # handed to the caller, who raises it
            _offer(waiting, error, stop)
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


def side_by_side(
    walks: dict[str, RangeWalk], progress: dict[str, Any], width: int
) -> Iterator[tuple[list[SourceRecord], dict[str, Any]]]:
    """Walk the ranges of `walks`, `width` at a time, each from its point in `progress` (the resume point after its
    last landed page, DONE once walked, absent before), and yield each page's records with the progress of every
    range once that page has landed.

    One cursor cannot fill a raised rate limit when each call waits on the service: several ranges in flight can,
    and the client's one pacer, where it has one, still holds the account under its limit. A range's pages come in
    its own order, so the progress after any page names, for every range, a page all of whose predecessors came
    before it: a run killed after landing it resumes each range where it stood and fetches again only pages that
    never landed."""
    progress = dict(progress)
    starts = {key: progress.get(key) for key in walks}
    pending: Queue[str] = Queue()
    for key in walks:
        if starts[key] != DONE:
            pending.put(key)
    waiting: Queue[tuple[str, list[SourceRecord], Cursor | None] | BaseException | None] = Queue(maxsize=2 * width)
    stop = threading.Event()

    def work() -> None:
        try:
            while not stop.is_set():
                try:
                    key = pending.get_nowait()
                except Empty:
                    break
                pages = walks[key](starts[key])
                try:
                    for records, resume in pages:
                        if not _offer(waiting, (key, records, resume), stop):
                            return
                finally:
                    pages.close()  # by the thread that advanced it
            _offer(waiting, None, stop)
        except BaseException as error:  # handed to the caller, who raises it
            _offer(waiting, error, stop)

    workers = [threading.Thread(target=work, name=f"range-{n}", daemon=True) for n in range(max(1, width))]
    for worker in workers:
        worker.start()
    try:
        finished = 0
        while finished < len(workers):
            item = waiting.get()
            if item is None:
                finished += 1
                continue
            if isinstance(item, BaseException):
                raise item
            key, records, resume = item
            progress[key] = DONE if resume is None else resume
            yield records, dict(progress)
    finally:
        stop.set()
        for worker in workers:
            worker.join()


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
    # Staging columns naming the records a row hangs from (an invoice's customer), or another key it is known by (an
    # event's `$insert_id`): the change log keeps them of a row a build replaced, so what followed the row finds
    # where it hung before (cdp_assets/changes.py). Ids only: the log keeps nothing else of the row.
    linked_ids: tuple[str, ...] = ()
    # A stream the source exports by date range, from this day (ISO) on: its raw asset is partitioned by the day of
    # its records' time, so the UI shows which days have landed, and a run over some days (a schedule's window, a
    # backfill from the UI) exports exactly those (`SourceResource.extract_days`). None: not partitioned.
    first_day: str | None = None


class SourceResource(ServiceResource):
    """Base for the source connectors: base URL and secret from the environment."""

    lookback_seconds: int = Field(
        default=60,
        description="Overlap re-read before each incremental high-water mark, for clock skew and index lag.",
    )
    ranges_at_once: int = Field(
        default=4,
        ge=1,
        le=POOL_CONNECTIONS,
        description=(
            "Ranges of a full pull walked side by side where the API can cut a listing (Stripe by creation time, "
            "Klaviyo events by time). To fill a limit takes about the limit's calls a second times the API's answer "
            "time in seconds; the client's pacer, where it has one, keeps them all under the limit."
        ),
    )

    def range_count(self) -> int:
        """Ranges a listing is cut into: twice those walked at once, so an uneven range leaves no walker idle long."""
        return 2 * self.ranges_at_once

    streams: ClassVar[dict[str, StreamSpec]]

    def requires_full_pull(self, stream: StreamSpec, cursor: Cursor | None) -> bool:
        """Whether an incremental pull is impossible from this cursor (a first run, say)."""
        return cursor is None

    def extract(self, stream: StreamSpec, cursor: Cursor | None, full: bool) -> Iterator[Page]:
        """Pages of records after `cursor`; with `full`, every record (resuming a full pull in progress)."""
        raise NotImplementedError

    def extract_days(self, stream: StreamSpec, first: date, last: date, cursor: Cursor | None) -> Iterator[Page]:
        """Pages of the records of the days `first` to `last`, for a stream that declares `first_day`. The pages
        carry `cursor` on (with their progress through the days, `days_progress`, so a run of the same days broken
        off resumes), the last advanced only where the days read everything a pull from it would read."""
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

"""Klaviyo (JSON:API): profiles with their email consent, email events and metrics.

Pages are followed through `links.next`; a pull in progress keeps that link so a
killed run resumes from it. Incremental pulls filter with `greater-than(...)`, the
only comparison Klaviyo offers on these fields, from the start of the last pull.

A full pull of events, the largest stream, cuts their time into ranges (`greater-or-equal` and `less-than` on
`datetime`, from the oldest event) walked side by side by one client under its pacers: one cursor waits on every
page in turn and cannot fill a raised limit. Events are partitioned by day: a run over some days (a schedule's
window, a backfill) reads the events stamped on them, their span cut into ranges the same way. The client keeps
under Get Profiles' documented limits on every route (75 calls a second in a burst, 750 a minute steady), so it is
not Klaviyo's 429 answers that hold it back.

Klaviyo lists no deleted profiles and offers no deletion event or route to read them
(its Data Privacy API only requests deletions), so every incremental pull of profiles
first lists every profile id with a sparse fieldset, 100 a page: ceil(profiles / 100)
requests of Get Profiles (75/s burst, 750/min steady), 10,000 at a million profiles.
"""

from __future__ import annotations

import time as clock
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import partial
from typing import Any, ClassVar

from pydantic import Field

from resources.http import RateLimit
from resources.source import (
    Cursor,
    Page,
    SourceRecord,
    SourceResource,
    StreamSpec,
    days_progress,
    days_under_way,
    dig,
    first_event_day,
    from_iso,
    range_walks,
    side_by_side,
    span_cuts,
    text_id,
)

REVISION = "2024-10-15"


@dataclass(frozen=True)
class KlaviyoEndpoint:
    path: str
    page_size: int | None  # None: the endpoint is not paged by size
    changed_field: str | None  # field filtered and sorted on for incremental pulls
    params: dict[str, str]
    # A time field taking every comparison, by which a full pull cuts the listing into ranges walked side by side
    # (`updated` on profiles takes only greater-than and less-than, so profiles are walked by one cursor).
    range_field: str | None = None
    # The parameters of the listing of every id, for a stream that lists them each pull: a sparse fieldset (a
    # resource object always carries its id, and a fieldset names at least one attribute: the change time, small
    # and naming no one), sorted by id, an order no change during the listing moves a record in.
    id_listing: dict[str, str] | None = None


ENDPOINTS: dict[str, KlaviyoEndpoint] = {
    "profiles": KlaviyoEndpoint(
        "/api/profiles",
        100,
        "updated",
        {"additional-fields[profile]": "subscriptions"},
        id_listing={"fields[profile]": "updated", "sort": "id"},
    ),
    "events": KlaviyoEndpoint("/api/events", 200, "datetime", {}, range_field="datetime"),
    "metrics": KlaviyoEndpoint("/api/metrics", None, None, {}),
}

STREAMS: dict[str, StreamSpec] = {
    "profiles": StreamSpec(
        "profiles", "profiles", "profile_id", "Klaviyo profiles with email consent.", list_ids_each_pull=True
    ),
    "events": StreamSpec(
        "events",
        "events",
        "event_id",
        "Klaviyo email events (received, opened, clicked, bounced), partitioned by the day of the event.",
        tombstone_missing=False,
        linked_ids=("profile_id",),
        first_day=first_event_day(),
    ),
    "metrics": StreamSpec("metrics", "metrics", "metric_id", "Klaviyo metrics: the names of event types."),
}


class KlaviyoResource(SourceResource):
    """Klaviyo API with a private API key."""

    service_name = "klaviyo"
    credential_env = "KLAVIYO_API_KEY"
    # The steady 750 a minute over a window a second longer, and the burst's 75 a second over one 5% longer, on every
    # route: the pacers count a call as it leaves, the service as it arrives. Unpaced, the 100,000-person benchmark's
    # pulls drew 116 answers of 429.
    pace = RateLimit(745, 61)
    route_paces: ClassVar[Mapping[str, RateLimit]] = {"^/": RateLimit(71, 1.05)}
    streams = STREAMS

    api_key: str = Field(description="Private API key (pk_...), from KLAVIYO_API_KEY.")

    def auth_headers(self) -> dict[str, str]:
        return {
            "Authorization": f"Klaviyo-API-Key {self.api_key}",
            "revision": REVISION,
            "Accept": "application/vnd.api+json",
        }

    def requires_full_pull(self, stream: StreamSpec, cursor: Cursor | None) -> bool:
        # A cursor without a time to pull from: none yet, or only a run of days under way.
        return cursor is None or "changed_since" not in cursor or ENDPOINTS[stream.name].changed_field is None

    def extract(self, stream: StreamSpec, cursor: Cursor | None, full: bool) -> Iterator[Page]:
        endpoint = ENDPOINTS[stream.name]
        cursor = cursor or {}
        if full and endpoint.range_field:
            yield from self._full_by_ranges(endpoint, endpoint.range_field, cursor)
            return
        pull = cursor.get("pull")
        if not pull or "next" not in pull:  # none under way, or a full pull's by ranges, which this one cannot resume
            pull = {"started": clock.time(), "next": None}
        url: str | None = pull["next"]
        params: dict[str, Any] | None = None
        if url is None:
            url = endpoint.path
            params = dict(endpoint.params)
            if endpoint.page_size:
                params["page[size]"] = endpoint.page_size
            if endpoint.changed_field:
                params["sort"] = endpoint.changed_field
                if not full:
                    params["filter"] = f"greater-than({endpoint.changed_field},{cursor['changed_since']})"
        for body, next_url in self._follow(url, params):
            records = [_record(item, endpoint.changed_field) for item in body["data"]]
            if next_url:
                pull = {**pull, "next": next_url}
                yield Page(records, {**cursor, "pull": pull})
        yield Page(records, {"changed_since": _stamp(pull["started"] - self.lookback_seconds)})

    def _follow(self, url: str, params: dict[str, Any] | None) -> Iterator[tuple[Any, str | None]]:
        """Each page's body from `url` on, with the `links.next` that follows it (None on the last page); only the
        first call takes `params`, as the link carries every parameter."""
        next_url: str | None = url
        while next_url:
            body = self.client.fetch_json("GET", next_url, params=params)
            params = None
            next_url = (body.get("links") or {}).get("next")
            yield body, next_url

    def _full_by_ranges(self, endpoint: KlaviyoEndpoint, field: str, cursor: Cursor) -> Iterator[Page]:
        pull = cursor.get("pull") or {}
        if "bounds" not in pull:  # a new pull (or one begun by a single cursor, which starts over)
            started = clock.time()
            # The ranges' edges, the first range open below and the last above, so no item is missed.
            pull = {"started": started, "bounds": self._cuts(endpoint, field, None, started), "ranges": {}}
        walks = range_walks(partial(self._time_range, endpoint, field), pull["bounds"])
        for records, ranges in side_by_side(walks, pull["ranges"], self.ranges_at_once):
            yield Page(records, {**cursor, "pull": {**pull, "ranges": ranges}})
        yield Page([], {"changed_since": _stamp(pull["started"] - self.lookback_seconds)})

    def extract_days(self, stream: StreamSpec, first: date, last: date, cursor: Cursor | None) -> Iterator[Page]:
        """The events stamped on the days `first` to `last` (UTC), their span cut into ranges walked side by side.
        The first partition's day is open below and the day the pull began (today) open above, so an event stamped
        before the first day or ahead of the clock is still read. Each page carries each range's progress: a run of
        the same days broken off resumes each range where it stood. The cursor moves on, to this pull's start, only
        when the days run from where an incremental pull would read through that day, so a backfill of older days
        leaves it as it was."""
        endpoint = ENDPOINTS[stream.name]
        if endpoint.range_field is None or stream.first_day is None:
            raise ValueError(f"klaviyo: {stream.name} is not exported by day")
        rest, held = days_under_way(cursor, first, last)
        started = held.get("started") or clock.time()
        edges = held.get("edges") or self._day_edges(endpoint, endpoint.range_field, first, last, stream.first_day,
                                                      started)  # fmt: skip
        walk = partial(self._time_range, endpoint, endpoint.range_field)
        walks = range_walks(walk, edges[1:-1], edges[0], edges[-1])
        for records, ranges in side_by_side(walks, held.get("ranges") or {}, self.ranges_at_once):
            progress = {"started": started, "edges": edges, "ranges": ranges}
            yield Page(records, days_progress(rest, first, last, progress))
        since = from_iso((rest or {}).get("changed_since"))  # None: the next pull without days reads them all
        covered = edges[0] is None or (since is not None and first <= since.date())
        reaches = covered and edges[-1] is None  # open above: the days ran through the day the pull began
        yield Page([], {"changed_since": _stamp(started - self.lookback_seconds)} if reaches else rest)

    def _day_edges(
        self, endpoint: KlaviyoEndpoint, field: str, first: date, last: date, first_day: str, started: float
    ) -> list[str | None]:
        """The times bounding the ranges the days `first` to `last` are read in: the first open below where `first`
        is the first day (its ranges cut from the oldest item, as a full pull's), the last open above where `last`
        is the day the pull began or later."""
        today = datetime.fromtimestamp(started, UTC).date()
        low = None if first <= date.fromisoformat(first_day) else _midnight(first)
        high = None if last >= today else _midnight(last + timedelta(days=1))
        cuts = self._cuts(endpoint, field, low, high if high is not None else max(started, _midnight(first)))
        return [None if low is None else _stamp(low), *cuts, None if high is None else _stamp(high)]

    def _cuts(self, endpoint: KlaviyoEndpoint, field: str, low: float | None, high: float) -> list[str]:
        """Times cutting [low, high) into `range_count()` ranges of equal span; from the listing's oldest item where
        `low` is None; none where the span is empty."""
        if low is None:
            oldest = self._oldest(endpoint, field)
            low = high if oldest is None else oldest.timestamp()
        return [_stamp(cut) for cut in span_cuts(int(low), int(high), self.range_count())] if low < high else []

    def _oldest(self, endpoint: KlaviyoEndpoint, field: str) -> datetime | None:
        """The time of the listing's oldest item; None for an empty listing."""
        params = {**endpoint.params, "sort": field, "page[size]": 1}
        first = self.client.fetch_json("GET", endpoint.path, params=params)
        return from_iso(dig(first, "data", 0, "attributes", field))

    def _time_range(
        self, endpoint: KlaviyoEndpoint, field: str, low: str | None, high: str | None, resume: Cursor | None
    ) -> Iterator[tuple[list[SourceRecord], Cursor | None]]:
        """The items stamped in [low, high) (unbounded where None), from `resume`."""
        url: str | None = (resume or {}).get("next")
        params: dict[str, Any] | None = None
        if url is None:
            url = endpoint.path
            conditions = [f"{name}({field},{moment})" for name, moment in (("greater-or-equal", low),
                          ("less-than", high)) if moment is not None]  # fmt: skip
            params = {**endpoint.params, "sort": field, "page[size]": endpoint.page_size}
            if conditions:
                params["filter"] = conditions[0] if len(conditions) == 1 else f"and({','.join(conditions)})"
        for body, next_url in self._follow(url, params):
            records = [_record(item, endpoint.changed_field) for item in body["data"]]
            yield records, {"next": next_url} if next_url else None

    def list_ids(self, stream: StreamSpec) -> Iterator[list[str]]:
        endpoint = ENDPOINTS[stream.name]
        if endpoint.id_listing is None:
            raise ValueError(f"klaviyo: {stream.name} declares no id listing")
        params = {**endpoint.id_listing, "page[size]": endpoint.page_size}
        for body, _ in self._follow(endpoint.path, params):
            yield [record_id for item in body["data"] if (record_id := text_id(dig(item, "id"))) is not None]


def _stamp(seconds: float) -> str:
    """A moment as Klaviyo's filters take it."""
    return datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _midnight(day: date) -> float:
    """The moment a UTC day begins, in unix seconds."""
    return datetime.combine(day, time(), UTC).timestamp()


def _record(item: Any, changed_field: str | None) -> SourceRecord:
    changed = dig(item, "attributes", changed_field) if changed_field else None
    return SourceRecord(text_id(dig(item, "id")), item, from_iso(changed))

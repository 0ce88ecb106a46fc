"""Stripe: customers, subscriptions and invoices.

Stripe lists filter only on `created`, so a full pull walks the list and updates come
from `/v1/events`, which reach back 30 days; an older cursor forces a full pull.
Lists and events come newest first; a pull in progress keeps the id to continue after.
Listed objects carry no change time, so a full pull reads the events in reach first: each object is versioned
at its latest event, the time Stripe says it changed, never at extraction.
One cursor waits on every page in turn, which cannot fill a raised limit: a full pull cuts the list into `created`
ranges (from the oldest object, found by halving) and walks several side by side under the account's one pacer.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from pydantic import Field

from resources.http import RateLimit, UnpageableAnswer
from resources.source import (
    Cursor,
    Page,
    SourceRecord,
    SourceResource,
    StreamSpec,
    dig,
    from_unix,
    range_walks,
    side_by_side,
    span_cuts,
    text_id,
)

PAGE_SIZE = 100  # Stripe's maximum `limit`
OLDEST_PRECISION_SECONDS = 24 * 3600  # how closely halving finds the oldest object's creation time
EVENTS_REACH_SECONDS = 30 * 24 * 3600
EVENTS_SAFETY_SECONDS = 24 * 3600  # pull everything again well before events expire


@dataclass(frozen=True)
class StripeEndpoint:
    list_path: str
    list_params: dict[str, str]
    event_types: tuple[str, ...]
    deleted_event: str | None  # the event after which the object no longer exists


ENDPOINTS: dict[str, StripeEndpoint] = {
    "customers": StripeEndpoint(
        "/v1/customers", {}, ("customer.created", "customer.updated", "customer.deleted"), "customer.deleted"
    ),
    # Canceled subscriptions are hidden unless asked for; they are history we keep.
    "subscriptions": StripeEndpoint(
        "/v1/subscriptions",
        {"status": "all"},
        ("customer.subscription.created", "customer.subscription.updated", "customer.subscription.deleted"),
        None,
    ),
    "invoices": StripeEndpoint(
        "/v1/invoices",
        {},
        ("invoice.created", "invoice.updated", "invoice.paid", "invoice.finalized", "invoice.voided"),
        None,
    ),
}

STREAMS: dict[str, StreamSpec] = {
    "customers": StreamSpec("customers", "customers", "customer_id", "Stripe customers (billing accounts)."),
    "subscriptions": StreamSpec(
        "subscriptions", "subscriptions", "subscription_id", "Stripe subscriptions, canceled ones included.",
        linked_ids=("customer_id",),
    ),
    "invoices": StreamSpec(
        "invoices", "invoices", "invoice_id", "Stripe invoices with amounts in cents.", linked_ids=("customer_id",)
    ),
}


class _SameSecondRanks:
    """Orders events that share a second (an invoice created and paid at once, say).

    Event times have one-second resolution; the list gives newer events first. Each
    further event of the same second is placed a microsecond earlier, so the object's
    versions keep the order Stripe listed them in.
    """

    def __init__(self) -> None:
        self.second: int | None = None
        self.rank = 0

    def version_time(self, created: Any) -> datetime | None:
        self.rank = self.rank + 1 if created == self.second else 0
        self.second = created
        moment = from_unix(created)
        try:
            return moment - timedelta(microseconds=self.rank) if moment else None
        except OverflowError:  # the first microsecond of year 1: not a change time (the contracts say why)
            return None


class StripeResource(SourceResource):
    """Stripe API, authenticated with a secret key sent as a Bearer token."""

    service_name = "stripe"
    credential_env = "STRIPE_API_KEY"
    # Test mode's 25 reads a second (live mode allows 100: set requests_per_window), over a window 5% longer: ranges
    # side by side put calls in flight together, and the service counts a call when it arrives, the pacer when it
    # leaves. At the full second, a 100,000-person pull drew 21 to 26 answers of 429 in 30 s; with the margin none.
    pace = RateLimit(24, 1.05)
    streams = STREAMS

    api_key: str = Field(description="Secret key (sk_...), from STRIPE_API_KEY.")

    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}

    def requires_full_pull(self, stream: StreamSpec, cursor: Cursor | None) -> bool:
        if cursor is None or "events_since" not in cursor:
            return True
        return cursor["events_since"] < time.time() - (EVENTS_REACH_SECONDS - EVENTS_SAFETY_SECONDS)

    def extract(self, stream: StreamSpec, cursor: Cursor | None, full: bool) -> Iterator[Page]:
        endpoint = ENDPOINTS[stream.name]
        if full:
            yield from self._full(endpoint, cursor or {})
        else:
            yield from self._events(endpoint, cursor or {})

    def _full(self, endpoint: StripeEndpoint, cursor: Cursor) -> Iterator[Page]:
        resume = cursor.get("full") or {}
        if "bounds" not in resume:  # a new pull (or one begun by a single cursor, which starts over)
            started = int(time.time())
            resume = {"started": started, "bounds": self._created_bounds(endpoint, started), "ranges": {}}
        reach = resume["started"] - EVENTS_REACH_SECONDS
        changed = self._change_times(endpoint, reach, resume["started"])
        walks = range_walks(partial(self._created_range, endpoint, changed, reach), resume["bounds"])
        for records, ranges in side_by_side(walks, resume["ranges"], self.ranges_at_once):
            yield Page(records, {**cursor, "full": {**resume, "ranges": ranges}})
        # Events from the moment the full pull began cover everything after it.
        yield Page([], {"events_since": resume["started"] - self.lookback_seconds})

    def _created_bounds(self, endpoint: StripeEndpoint, started: int) -> list[int]:
        """Creation times cutting the list into `range_count()` ranges of equal span, from its oldest object (found
        by halving, one object a call) to `started`; the first range is open below and the last above, so an estimate
        loses nothing."""

        def any_before(moment: int) -> bool:
            query = {**endpoint.list_params, "limit": 1, "created[lt]": moment}
            return bool(self.client.fetch_json("GET", endpoint.list_path, params=query)["data"])

        low, high = 0, started + 1
        if not any_before(high):
            return []
        while high - low > OLDEST_PRECISION_SECONDS:
            middle = (low + high) // 2
            low, high = (low, middle) if any_before(middle) else (middle, high)
        return span_cuts(low, started, self.range_count())

    def _created_range(
        self,
        endpoint: StripeEndpoint,
        changed: dict[str | None, int],
        reach: int,
        low: int | None,
        high: int | None,
        resume: Cursor | None,
    ) -> Iterator[tuple[list[SourceRecord], Cursor | None]]:
        """The list's objects created in [low, high) (unbounded where None), from `resume`."""
        params = dict(endpoint.list_params)
        if low is not None:
            params["created[gte]"] = low
        if high is not None:
            params["created[lt]"] = high
        for items, last_id, has_more in self._list(endpoint.list_path, params, (resume or {}).get("after")):
            records = [
                SourceRecord(record_id, item, updated_at=_listed_change_time(item, changed.get(record_id), reach))
                for item in items
                for record_id in (text_id(dig(item, "id")),)
            ]
            yield records, {"after": last_id} if has_more else None

    def _change_times(self, endpoint: StripeEndpoint, since: int, until: int) -> dict[str | None, int]:
        """Object id -> unix time of its latest event since `since`, the span to `until` (open above) cut into ranges
        read side by side. Read again whole by a resumed pull, so no range's progress is kept."""
        cuts = span_cuts(since, until, self.range_count())
        walks = range_walks(partial(self._event_range, endpoint), cuts, since)
        latest: dict[str | None, int] = {}
        for events, _ in side_by_side(walks, {}, self.ranges_at_once):
            for event in events:
                created = dig(event.payload, "created")
                if isinstance(created, int) and not isinstance(created, bool):
                    latest[event.record_id] = max(created, latest.get(event.record_id, created))
        return latest

    def _event_range(
        self, endpoint: StripeEndpoint, low: int, high: int | None, resume: Cursor | None
    ) -> Iterator[tuple[list[SourceRecord], Cursor | None]]:
        """The endpoint's events created in [low, high), each as the id of its object with the whole event."""
        params: dict[str, Any] = {"created[gte]": low, "types[]": list(endpoint.event_types)}
        if high is not None:
            params["created[lt]"] = high
        for events, last_id, has_more in self._list("/v1/events", params, (resume or {}).get("after")):
            yield (
                [SourceRecord(text_id(dig(event, "data", "object", "id")), event) for event in events],
                ({"after": last_id} if has_more else None),
            )

    def _events(self, endpoint: StripeEndpoint, cursor: Cursor) -> Iterator[Page]:
        since = cursor["events_since"]
        resume = cursor.get("events") or {"after": None, "next_since": int(time.time()) - self.lookback_seconds}
        params: dict[str, Any] = {"created[gte]": since, "types[]": list(endpoint.event_types)}
        ranks = _SameSecondRanks()
        for events, last_id, has_more in self._list("/v1/events", params, resume["after"]):
            records = [_event_record(event, endpoint, ranks) for event in events]
            if has_more:
                resume = {**resume, "after": last_id}
                yield Page(records, {"events_since": since, "events": resume})
            else:
                yield Page(records, {"events_since": resume["next_since"]})

    def _list(
        self, path: str, params: dict[str, Any], after: str | None
    ) -> Iterator[tuple[list[dict[str, Any]], str | None, bool]]:
        """Walk a Stripe list newest first; yields (items, last id, has_more) per page."""
        while True:
            query = {**params, "limit": PAGE_SIZE}
            if after:
                query["starting_after"] = after
            body = self.client.fetch_json("GET", path, params=query)
            items = body["data"]
            has_more = bool(body["has_more"]) and bool(items)
            # The next page starts after the last object with a readable id; one without is served again, once.
            last = next((i for i in map(text_id, (dig(item, "id") for item in reversed(items))) if i), None)
            if has_more and last in (None, after):
                raise UnpageableAnswer(f"stripe: cannot page {path} past objects without an id (after {after})")
            after = last or after
            yield items, after, has_more
            if not has_more:
                return


def _listed_change_time(item: Any, latest_event: int | None, reach: int) -> datetime | None:
    """When a listed object last changed, as Stripe tells it: its latest event in reach. One with no event there has
    not changed since it was created or since the events' reach began, whichever is later: the latest moment Stripe
    leaves possible, which orders the version after any this pipeline read before (a later change has an event)."""
    if latest_event is not None:
        return from_unix(latest_event)
    created, since = from_unix(dig(item, "created")), from_unix(reach)
    return max(created, since) if created and since else since


def _event_record(event: Any, endpoint: StripeEndpoint, ranks: _SameSecondRanks) -> SourceRecord:
    """The object an event carries, at the event's time; an event without one lands whole, for the contracts."""
    obj = dig(event, "data", "object")
    return SourceRecord(
        record_id=text_id(dig(obj, "id")),
        payload=event if obj is None else obj,
        updated_at=ranks.version_time(dig(event, "created")),
        deleted=dig(event, "type") == endpoint.deleted_event,
    )

"""The exports by days, for any range and cursor: Mixpanel's asks for each day once, in windows the export allows;
Klaviyo's asks for the days' span once, cut into ranges of time; each moves the cursor on only when the days cover
everything an incremental pull would read. The connectors talk HTTP to stand-ins that record the query of every
call and answer with no events."""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Generator, Iterator
from datetime import UTC, date, datetime, time, timedelta
from http.server import BaseHTTPRequestHandler
from itertools import pairwise
from typing import ClassVar
from urllib.parse import parse_qs, urlencode, urlparse

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resources import klaviyo
from resources.mixpanel import EXPORT_PATH, STREAMS, WINDOW_DAYS, MixpanelResource
from resources.source import DAYS, LATE_DAYS, Cursor, Page, days_under_way
from tests.conftest import serving


class RecordingExport(BaseHTTPRequestHandler):
    """Answers every export call with an empty body, noting its (from_date, to_date)."""

    asked: ClassVar[list[tuple[date, date]]] = []

    def do_GET(self) -> None:
        url = urlparse(self.path)
        query = parse_qs(url.query)
        assert url.path == EXPORT_PATH
        type(self).asked.append((date.fromisoformat(query["from_date"][0]), date.fromisoformat(query["to_date"][0])))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def export_url() -> Iterator[str]:
    with serving(RecordingExport) as url:
        yield url


# Days as offsets back from today, which each example reads for itself: a run that crosses midnight moves today.
days_back = st.integers(min_value=-3, max_value=800)


@settings(max_examples=60, deadline=None)
@given(start_back=days_back, first_back=days_back, length=st.integers(0, 400), resumes_back=st.none() | days_back,
       broken_after=st.integers(0, 6))  # fmt: skip
def test_an_export_of_days_reads_each_day_once_and_moves_the_cursor_only_past_all_it_covers(
    export_url: str, start_back: int, first_back: int, length: int, resumes_back: int | None, broken_after: int
) -> None:
    """And a run broken off after some pages and begun again reads only the days of the windows not landed."""
    for _ in range(2):  # an export the date turned during is judged again, wholly on the new day
        today = datetime.now(UTC).date()
        start, first = today - timedelta(days=start_back), today - timedelta(days=first_back)
        resumes = None if resumes_back is None else today - timedelta(days=resumes_back)
        last = first + timedelta(days=length)
        mixpanel = MixpanelResource(base_url=export_url, service_account_username="u", service_account_secret="s",
                                    project_id="1", start_date=start.isoformat())  # fmt: skip
        cursor = None if resumes is None else {"from_date": resumes.isoformat(), "kept": "as it was"}
        RecordingExport.asked.clear()
        pages = list(mixpanel.extract_days(STREAMS["events"], first, last, cursor))
        whole = list(RecordingExport.asked)
        landed = min(broken_after, len(pages) - 1)
        kept = _broken_off(mixpanel.extract_days(STREAMS["events"], first, last, cursor), landed, cursor)
        RecordingExport.asked.clear()
        again = list(mixpanel.extract_days(STREAMS["events"], first, last, kept))
        read_again = [day for window in RecordingExport.asked for day in _days(*window)]
        RecordingExport.asked.clear()
        list(mixpanel.extract_days(STREAMS["events"], first - timedelta(days=1), last, kept))  # other days
        if datetime.now(UTC).date() == today:
            break

    read = [day for window in whole for day in _days(*window)]
    assert read == _days(first, min(last, today)), "each day of the range, in order, once"
    assert all(0 <= (to - since).days < WINDOW_DAYS for since, to in whole)
    assert all(days_under_way(page.cursor, first, last)[0] == cursor for page in pages[:-1]), "the cursor kept"
    covers = first <= (resumes or start) and last >= today
    late = {"from_date": max(start, today - timedelta(days=LATE_DAYS)).isoformat()}
    assert pages[-1].cursor == (late if covers else cursor)
    assert read_again == read[landed * WINDOW_DAYS:], "begun again, the windows not landed, each day once"
    other = [day for window in RecordingExport.asked for day in _days(*window)]
    assert other == _days(first - timedelta(days=1), min(last, today)), "a run of other days reads them all"
    assert again[-1].cursor == pages[-1].cursor


def _broken_off(pages: Generator[Page, None, None], landed: int, cursor: Cursor | None) -> Cursor | None:
    """The cursor a run kept when it was broken off after landing `landed` pages: its last landed page's."""
    kept = [page.cursor for _, page in zip(range(landed), pages, strict=False)]
    pages.close()
    return kept[-1] if kept else cursor


def _days(since: date, until: date) -> list[date]:
    return [since + timedelta(days=n) for n in range((until - since).days + 1)]


class RecordingListing(BaseHTTPRequestHandler):
    """Klaviyo's events listing over `events` (their times), sorted by time, in pages of PAGE followed by
    `links.next`; a call for the oldest event (a page of one) is answered with it. Every first page notes the span of
    time its filter asks for."""

    PAGE = 40  # several pages a range, few enough that the client's pacer (71 calls a second) holds no example long
    asked: ClassVar[list[tuple[datetime | None, datetime | None]]] = []
    events: ClassVar[list[datetime]] = []
    BOUND = re.compile(r"(greater-or-equal|less-than)\(datetime,([^()]+)\)")

    def do_GET(self) -> None:
        url = urlparse(self.path)
        query = parse_qs(url.query)
        assert url.path == klaviyo.ENDPOINTS["events"].path and query["sort"] == ["datetime"]
        bounds = dict(self.BOUND.findall(query.get("filter", [""])[0]))
        low, high = (datetime.fromisoformat(bounds[name].replace("Z", "+00:00")) if name in bounds else None
                     for name in ("greater-or-equal", "less-than"))  # fmt: skip
        offset = int(query.get("page[cursor]", ["0"])[0])
        if query["page[size]"] == ["1"]:
            served, more = self.events[:1], False
        else:
            if not offset:
                type(self).asked.append((low, high))
            held = [at for at in self.events if (low is None or at >= low) and (high is None or at < high)]
            served, more = held[offset: offset + self.PAGE], offset + self.PAGE < len(held)
        data = [{"type": "event", "id": f"ev{at.timestamp():.0f}", "attributes": {"datetime": at.isoformat()}}
                for at in served]  # fmt: skip
        following = urlencode({**{key: values[0] for key, values in query.items()}, "page[cursor]": offset + self.PAGE})
        link = f"http://{self.headers['Host']}{url.path}?{following}" if more else None
        body = json.dumps({"data": data, "links": {"next": link}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/vnd.api+json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def listing_url() -> Iterator[str]:
    with serving(RecordingListing) as url:
        yield url


@settings(max_examples=60, deadline=None)
@given(start_back=days_back, first_back=days_back, length=st.integers(0, 400), since_back=st.none() | days_back,
       oldest_back=st.none() | days_back, walked=st.integers(1, 4), broken_after=st.integers(0, 8))  # fmt: skip
def test_a_listing_of_days_reads_their_span_once_and_moves_the_cursor_only_past_all_it_covers(
    listing_url: str, start_back: int, first_back: int, length: int, since_back: int | None, oldest_back: int | None,
    walked: int, broken_after: int,
) -> None:
    """Over events of every day from the oldest through three days ahead: the events of the days, each once; and a
    run broken off after some pages and begun again reads each of them once across both."""
    for _ in range(2):  # a listing the date turned during is judged again, wholly on the new day
        today = datetime.now(UTC).date()
        start, first = today - timedelta(days=start_back), today - timedelta(days=first_back)
        last = first + timedelta(days=length)
        stream = dataclasses.replace(klaviyo.STREAMS["events"], first_day=start.isoformat())
        source = klaviyo.KlaviyoResource(base_url=listing_url, api_key="pk_test", ranges_at_once=walked,
                                         lookback_seconds=0)  # fmt: skip
        since = None if since_back is None else datetime.combine(today - timedelta(days=since_back), time(6), UTC)
        cursor = None if since is None else {"changed_since": since.strftime("%Y-%m-%dT%H:%M:%SZ"), "kept": "yes"}
        RecordingListing.events = [] if oldest_back is None else [
            datetime.combine(day, time(13, 5), UTC) for day in _days(today - timedelta(days=oldest_back),
                                                                     today + timedelta(days=3))]  # fmt: skip
        RecordingListing.asked.clear()
        pages = list(source.extract_days(stream, first, last, cursor))
        spans = sorted(RecordingListing.asked, key=lambda span: (span[0] is not None, span[0]))  # None first
        landed = min(broken_after, len(pages) - 1)
        broken = source.extract_days(stream, first, last, cursor)
        before = [page for _, page in zip(range(landed), broken, strict=False)]
        broken.close()
        kept = before[-1].cursor if before else cursor
        if before:  # broken off an hour after it began
            kept = {**kept, DAYS: {**kept[DAYS], "started": kept[DAYS]["started"] - 3600}}
        again = list(source.extract_days(stream, first, last, kept))
        if datetime.now(UTC).date() == today:
            break

    def midnight(day: date) -> datetime:
        return datetime.combine(day, time(), UTC)

    low = None if first <= start else midnight(first)
    high = None if last >= today else midnight(last + timedelta(days=1))
    assert spans[0][0] == low and spans[-1][1] == high, "the span from the first day through the last"
    assert all(this[1] == after[0] for this, after in pairwise(spans)), "each moment once"
    assert all(since < until for since, until in spans if since and until), "no range empty"
    bounds = [moment for span in spans for moment in span if moment is not None]
    assert all((low is None or low <= moment) and (high is None or moment <= high) for moment in bounds), "no other day"
    assert len(spans) <= source.range_count()
    ids = [record.record_id for page in pages for record in page.records]
    days = {f"ev{at.timestamp():.0f}" for at in RecordingListing.events
            if (low is None or at >= low) and (high is None or at < high)}  # fmt: skip
    assert sorted(ids) == sorted(days), "the days' events, each once"
    held = [sum((lo is None or at >= lo) and (hi is None or at < hi) for at in RecordingListing.events)
            for lo, hi in spans]  # fmt: skip
    if low is None:  # cut from the oldest event, not the first day, however long before it that was
        assert max(held) <= len(ids) // len(spans) + 5, "ranges of about equal span"
    assert sorted(record.record_id for page in [*before, *again] for record in page.records) == sorted(ids)
    covers = high is None and (low is None or (since is not None and since >= low))  # all a pull from `since` reads
    assert (pages[-1].cursor != cursor) == covers and (again[-1].cursor != cursor) == covers
    assert not before or cursor or source.requires_full_pull(stream, before[-1].cursor), "no time to pull from"
    if before and covers:  # begun again, the pull keeps the moment it began: what arrived since is read next time
        assert again[-1].cursor == {"changed_since": klaviyo._stamp(kept[DAYS]["started"])}
    assert all(days_under_way(page.cursor, first, last)[0] == cursor for page in pages[:-1]), "the cursor kept"
    if covers:
        moved = datetime.fromisoformat(pages[-1].cursor["changed_since"].replace("Z", "+00:00"))
        assert set(pages[-1].cursor) == {"changed_since"} and moved <= datetime.now(UTC)


def test_a_pull_without_days_begins_its_own_where_a_full_pull_by_ranges_was_broken_off(listing_url: str) -> None:
    """A cursor can keep a full pull's ranges under way past a run of days that did not cover everything (which
    ends the full pull's flag): the next pull without days reads from its time, not from the ranges."""
    source = klaviyo.KlaviyoResource(base_url=listing_url, api_key="pk_test")
    RecordingListing.events = [datetime(2026, 1, 2, 13, 5, tzinfo=UTC)]
    cursor = {"changed_since": "2026-01-01T00:00:00Z",
              "pull": {"started": 1.0, "bounds": ["2025-01-01T00:00:00Z"], "ranges": {"0": "done"}}}  # fmt: skip
    assert not source.requires_full_pull(klaviyo.STREAMS["events"], cursor)
    RecordingListing.asked.clear()
    pages = list(source.extract(klaviyo.STREAMS["events"], cursor, full=False))
    assert RecordingListing.asked == [(None, None)], "one listing after its time, no range of the full pull's"
    assert [record.record_id for page in pages for record in page.records] == ["ev1767359100"]
    assert set(pages[-1].cursor) == {"changed_since"}

"""The exports by days, for any range and cursor: Mixpanel's asks for each day once, in windows the export allows;
Klaviyo's asks for the days' span once, cut into ranges of time; each moves the cursor on only when the days cover
everything an incremental pull would read. The connectors talk HTTP to stand-ins that record the query of every
call and answer with no events."""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from http.server import BaseHTTPRequestHandler
from itertools import pairwise
from typing import ClassVar
from urllib.parse import parse_qs, urlparse

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resources import klaviyo
from resources.mixpanel import EXPORT_PATH, STREAMS, WINDOW_DAYS, MixpanelResource
from resources.source import LATE_DAYS
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
@given(start_back=days_back, first_back=days_back, length=st.integers(0, 400), resumes_back=st.none() | days_back)
def test_an_export_of_days_reads_each_day_once_and_moves_the_cursor_only_past_all_it_covers(
    export_url: str, start_back: int, first_back: int, length: int, resumes_back: int | None
) -> None:
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
        if datetime.now(UTC).date() == today:
            break

    read = [day for window in RecordingExport.asked for day in _days(*window)]
    assert read == _days(first, min(last, today)), "each day of the range, in order, once"
    assert all(0 <= (to - since).days < WINDOW_DAYS for since, to in RecordingExport.asked)
    assert all(page.cursor == cursor for page in pages[:-1]), "no page before the last moves the cursor"
    covers = first <= (resumes or start) and last >= today
    late = {"from_date": max(start, today - timedelta(days=LATE_DAYS)).isoformat()}
    assert pages[-1].cursor == (late if covers else cursor)


def _days(since: date, until: date) -> list[date]:
    return [since + timedelta(days=n) for n in range((until - since).days + 1)]


class RecordingListing(BaseHTTPRequestHandler):
    """Answers a call for Klaviyo's oldest event (a page of one) with an event stamped `oldest`, if any, and every
    other call for its events with an empty page, noting the span of time its filter asks for."""

    asked: ClassVar[list[tuple[datetime | None, datetime | None]]] = []
    oldest: ClassVar[datetime | None] = None
    BOUND = re.compile(r"(greater-or-equal|less-than)\(datetime,([^()]+)\)")

    def do_GET(self) -> None:
        url = urlparse(self.path)
        query = parse_qs(url.query)
        assert url.path == klaviyo.ENDPOINTS["events"].path
        data = []
        if query["page[size]"] == ["1"]:
            if self.oldest:
                data = [{"type": "event", "id": "e1", "attributes": {"datetime": self.oldest.isoformat()}}]
        else:
            bounds = dict(self.BOUND.findall(query.get("filter", [""])[0]))
            type(self).asked.append(tuple(  # type: ignore[arg-type]
                datetime.fromisoformat(bounds[name].replace("Z", "+00:00")) if name in bounds else None
                for name in ("greater-or-equal", "less-than")))  # fmt: skip
        body = json.dumps({"data": data, "links": {"next": None}}).encode()
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
       oldest_back=st.none() | days_back, walked=st.integers(1, 4))  # fmt: skip
def test_a_listing_of_days_reads_their_span_once_and_moves_the_cursor_only_past_all_it_covers(
    listing_url: str, start_back: int, first_back: int, length: int, since_back: int | None, oldest_back: int | None,
    walked: int,
) -> None:
    for _ in range(2):  # a listing the date turned during is judged again, wholly on the new day
        today = datetime.now(UTC).date()
        start, first = today - timedelta(days=start_back), today - timedelta(days=first_back)
        last = first + timedelta(days=length)
        stream = dataclasses.replace(klaviyo.STREAMS["events"], first_day=start.isoformat())
        source = klaviyo.KlaviyoResource(base_url=listing_url, api_key="pk_test", ranges_at_once=walked)
        since = None if since_back is None else datetime.combine(today - timedelta(days=since_back), time(6), UTC)
        cursor = None if since is None else {"changed_since": since.strftime("%Y-%m-%dT%H:%M:%SZ"), "kept": "yes"}
        RecordingListing.oldest = None if oldest_back is None else datetime.combine(
            today - timedelta(days=oldest_back), time(13, 5), UTC)
        RecordingListing.asked.clear()
        pages = list(source.extract_days(stream, first, last, cursor))
        if datetime.now(UTC).date() == today:
            break

    def midnight(day: date) -> datetime:
        return datetime.combine(day, time(), UTC)

    low = None if first <= start else midnight(first)
    high = None if last >= today else midnight(last + timedelta(days=1))
    spans = sorted(RecordingListing.asked, key=lambda span: (span[0] is not None, span[0]))
    assert spans[0][0] == low and spans[-1][1] == high, "the span from the first day through the last"
    assert all(this[1] == after[0] for this, after in pairwise(spans)), "each moment once"
    assert all(since < until for since, until in spans[1:-1] if since and until), "no range empty but at the ends"
    bounds = [moment for span in spans for moment in span if moment is not None]
    assert all((low is None or low <= moment) and (high is None or moment <= high) for moment in bounds), "no other day"
    assert len(spans) <= source.range_count()
    assert all(page.cursor == cursor for page in pages[:-1]), "no page before the last moves the cursor"
    covers = high is None and (low is None or (since is not None and first <= since.date()))
    assert (pages[-1].cursor != cursor) == covers
    if covers:
        moved = datetime.fromisoformat(pages[-1].cursor["changed_since"].replace("Z", "+00:00"))
        assert set(pages[-1].cursor) == {"changed_since"} and moved <= datetime.now(UTC)

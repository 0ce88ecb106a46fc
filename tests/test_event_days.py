"""Mixpanel's export by days, for any range and cursor: the days asked for are asked for once each, in windows the
export allows, and the cursor moves on only when the days cover everything an incremental pull would read. The
connector talks HTTP to a stand-in that records the query of every export call and answers with no events."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from http.server import BaseHTTPRequestHandler
from typing import ClassVar
from urllib.parse import parse_qs, urlparse

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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


TODAY = datetime.now(UTC).date()
days_back = st.integers(min_value=-3, max_value=800).map(lambda back: TODAY - timedelta(days=back))


@settings(max_examples=60, deadline=None)
@given(start=days_back, first=days_back, length=st.integers(0, 400), resumes=st.none() | days_back)
def test_an_export_of_days_reads_each_day_once_and_moves_the_cursor_only_past_all_it_covers(
    export_url: str, start: date, first: date, length: int, resumes: date | None
) -> None:
    last = first + timedelta(days=length)
    mixpanel = MixpanelResource(base_url=export_url, service_account_username="u", service_account_secret="s",
                                project_id="1", start_date=start.isoformat())  # fmt: skip
    cursor = None if resumes is None else {"from_date": resumes.isoformat(), "kept": "as it was"}
    RecordingExport.asked.clear()

    pages = list(mixpanel.extract_days(STREAMS["events"], first, last, cursor))

    read = [day for window in RecordingExport.asked for day in _days(*window)]
    assert read == _days(first, min(last, TODAY)), "each day of the range, in order, once"
    assert all(0 <= (to - since).days < WINDOW_DAYS for since, to in RecordingExport.asked)
    assert all(page.cursor == cursor for page in pages[:-1]), "no page before the last moves the cursor"
    covers = first <= (resumes or start) and last >= TODAY
    late = {"from_date": max(start, TODAY - timedelta(days=LATE_DAYS)).isoformat()}
    assert pages[-1].cursor == (late if covers else cursor)


def _days(since: date, until: date) -> list[date]:
    return [since + timedelta(days=n) for n in range((until - since).days + 1)]

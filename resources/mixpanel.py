"""Mixpanel raw event export: line-delimited JSON by date window.

The export has no cursor, so pulls walk date windows and re-read the most recent day, where late events still
arrive (`LATE_DAYS`). The stream is partitioned by day: a run over some days (a schedule's window, a backfill)
exports those days alone. Exports are not deduplicated; an event's identity is (event, distinct_id, time,
$insert_id), hashed into its record id. A window broken off mid-stream is read again whole; events already landed
are recognised by that id and not landed twice.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import requests
from pydantic import Field

from resources.source import (
    LATE_DAYS,
    Cursor,
    Page,
    SourceRecord,
    SourceResource,
    StreamSpec,
    days_progress,
    days_under_way,
    dig,
    first_event_day,
    from_unix,
)

EXPORT_PATH = "/api/2.0/export"
WINDOW_DAYS = 90  # days per export request; the API allows 60 requests an hour
PAGE_EVENTS = 5000  # events landed per transaction


STREAMS: dict[str, StreamSpec] = {
    "events": StreamSpec(
        "events", "events", "event_id", "Mixpanel product events (raw export), partitioned by the day of the event.",
        tombstone_missing=False, linked_ids=("insert_id",), first_day=first_event_day(),
    ),
}


class MixpanelResource(SourceResource):
    """Mixpanel export API with a service account."""

    service_name = "mixpanel"
    credential_env = "MIXPANEL_SERVICE_ACCOUNT_SECRET"
    streams = STREAMS

    service_account_username: str = Field(description="Service account user, from MIXPANEL_SERVICE_ACCOUNT.")
    service_account_secret: str = Field(description="Service account secret.")
    project_id: str = Field(description="Mixpanel project id, from MIXPANEL_PROJECT_ID.")
    start_date: str = Field(default_factory=first_event_day, description="First day a full pull exports (YYYY-MM-DD).")

    def basic_auth(self) -> tuple[str, str]:
        return (self.service_account_username, self.service_account_secret)

    def extract(self, stream: StreamSpec, cursor: Cursor | None, full: bool) -> Iterator[Page]:
        cursor = cursor or {}
        key = "full_from" if full else "from_date"
        start = date.fromisoformat(cursor.get(key) or self.start_date)
        today = _today()
        return self._export(start, today, cursor, lambda day: {**cursor, key: day.isoformat()}, self._resume(today))

    def extract_days(self, stream: StreamSpec, first: date, last: date, cursor: Cursor | None) -> Iterator[Page]:
        """The days' events; each window's last page notes the day after it, so a run of the same days broken off
        resumes at the window. The cursor moves on only when the days run from where an incremental pull would
        resume through today, so a backfill of older days leaves the next incremental pull where it was."""
        rest, held = days_under_way(cursor, first, last)
        today = _today()
        resumes = date.fromisoformat((rest or {}).get("from_date") or self.start_date)
        reaches = first <= resumes and last >= today

        def after(day: date) -> Cursor:
            return days_progress(rest, first, last, {"from": day.isoformat()})

        start = date.fromisoformat(held.get("from") or first.isoformat())
        return self._export(start, min(last, today), after(start), after, self._resume(today) if reaches else rest)

    def _resume(self, today: date) -> Cursor:
        """Where the next incremental pull starts: the most recent days again, for late events. `today` is read
        once per export, so a pull that runs past midnight judges its days and its cursor by the same day."""
        resume = max(date.fromisoformat(self.start_date), today - timedelta(days=LATE_DAYS))
        return {"from_date": resume.isoformat()}

    def _export(
        self, start: date, end: date, cursor: Cursor | None, after: Callable[[date], Cursor], final: Cursor | None
    ) -> Iterator[Page]:
        """The days `start` to `end` in windows of WINDOW_DAYS; each window's last page carries `after` the day
        past it (a pull broken off resumes at the window), the export's last page `final`."""
        while start <= end:
            stop = min(start + timedelta(days=WINDOW_DAYS - 1), end)
            # One page of look-ahead: only the window's last page may carry the advanced cursor.
            held: list[SourceRecord] = []
            for records in self._window(start, stop):
                if held:
                    yield Page(held, cursor)
                held = records
            if stop == end:
                yield Page(held, final)
                return
            start = stop + timedelta(days=1)
            cursor = after(start)
            yield Page(held, cursor)
        yield Page([], final)  # no day to read (a range after today)

    def _window(self, start: date, end: date) -> Iterator[list[SourceRecord]]:
        """The window's pages; one cut off mid-stream is asked for whole again (its events land once, by id)."""
        params = {"from_date": start.isoformat(), "to_date": end.isoformat(), "project_id": self.project_id}
        return self.client.stream("GET", EXPORT_PATH, _pages, params=params, stream=True)


def _today() -> date:
    return datetime.now(UTC).date()


def _pages(response: requests.Response) -> Iterator[list[SourceRecord]]:
    """Pages of the export's events. A line that is not JSON is a bad event when more lines follow it (it lands as
    its text, for staging to quarantine); as the body's last line it is a body cut short, raised to be read again."""
    page: list[SourceRecord] = []
    unreadable: str | None = None
    for line in response.iter_lines():
        if not line:
            continue
        if unreadable is not None:
            page.append(_record(unreadable))
            unreadable = None
        try:
            page.append(_record(json.loads(line)))
        except json.JSONDecodeError:
            unreadable = line.decode(errors="replace") if isinstance(line, bytes) else line
        if len(page) >= PAGE_EVENTS:
            yield page
            page = []
    if unreadable is not None:
        raise json.JSONDecodeError("the export broke off mid-line", unreadable, 0)
    yield page


def _record(event: Any) -> SourceRecord:
    properties = dig(event, "properties")
    if isinstance(properties, dict):
        parts = (dig(event, "event"), *(properties.get(key) for key in ("distinct_id", "time", "$insert_id")))
        identity = "\x1f".join(map(str, parts))
    else:  # an event the export could not have deduplicated either: known by its whole text
        identity = json.dumps(event, sort_keys=True)
    digest = hashlib.md5(identity.encode(errors="surrogatepass")).hexdigest()  # a lone surrogate is text too
    return SourceRecord(digest, event, from_unix(dig(properties, "time")))

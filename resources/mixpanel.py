"""Mixpanel raw event export: line-delimited JSON by date window.

The export has no cursor, so pulls walk date windows and re-read the most recent
day, where late events still arrive. Exports are not deduplicated; an event's
identity is (event, distinct_id, time, $insert_id), hashed into its record id.
A window broken off mid-stream is read again whole; events already landed are
recognised by that id and not landed twice.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import requests
from pydantic import Field

from resources.http import BODY_READ_ERRORS, ServiceError
from resources.source import Cursor, Page, SourceRecord, SourceResource, StreamSpec, dig, from_unix

EXPORT_PATH = "/api/2.0/export"
WINDOW_DAYS = 90  # days per export request; the API allows 60 requests an hour
PAGE_EVENTS = 5000  # events landed per transaction
REREAD_DAYS = 1  # recent days read again on the next pull, for late events

STREAMS: dict[str, StreamSpec] = {
    "events": StreamSpec(
        "events", "events", "event_id", "Mixpanel product events (raw export).", tombstone_missing=False,
        linked_ids=("insert_id",),
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
    start_date: str = Field(default="2023-01-01", description="First day a full pull exports (YYYY-MM-DD).")

    def basic_auth(self) -> tuple[str, str]:
        return (self.service_account_username, self.service_account_secret)

    def extract(self, stream: StreamSpec, cursor: Cursor | None, full: bool) -> Iterator[Page]:
        cursor = cursor or {}
        key = "full_from" if full else "from_date"
        start = date.fromisoformat(cursor.get(key) or self.start_date)
        today = datetime.now(UTC).date()
        while True:
            end = min(start + timedelta(days=WINDOW_DAYS - 1), today)
            last_window = end == today
            # One page of look-ahead: only the window's last page may carry the advanced cursor.
            held: list[SourceRecord] = []
            for records in self._window(start, end):
                if held:
                    yield Page(held, cursor)
                held = records
            if last_window:
                resume = max(date.fromisoformat(self.start_date), today - timedelta(days=REREAD_DAYS))
                yield Page(held, {"from_date": resume.isoformat()})
                return
            start = end + timedelta(days=1)
            cursor = {**cursor, key: start.isoformat()}
            yield Page(held, cursor)

    def _window(self, start: date, end: date) -> Iterator[list[SourceRecord]]:
        params = {"from_date": start.isoformat(), "to_date": end.isoformat(), "project_id": self.project_id}
        for attempt in range(self.max_retries + 1):
            try:
                response = self.client.request("GET", EXPORT_PATH, params=params, stream=True)
                yield from _pages(response)
                return
            except (*BODY_READ_ERRORS, json.JSONDecodeError) as exc:  # cut off mid-stream, or mid-line
                if attempt == self.max_retries:
                    raise ServiceError(f"mixpanel: export {start}..{end} kept breaking off: {exc}") from exc
                self.client.count(retries=1)


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

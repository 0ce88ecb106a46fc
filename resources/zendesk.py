"""Zendesk Support: users and tickets through the cursor-based incremental export.

The first call sends `start_time`, every later one only the `cursor`; the last
`after_cursor` is kept so the next run continues exactly where this one stopped.
Deleted users stay in the export as inactive, deleted tickets with status `deleted`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from pydantic import Field

from resources.http import RateLimit
from resources.source import Cursor, Page, SourceRecord, SourceResource, StreamSpec, dig, from_iso, text_id

PAGE_SIZE = 1000  # the export's `per_page` maximum

EXPORT_PATHS = {
    "users": "/api/v2/incremental/users/cursor.json",
    "tickets": "/api/v2/incremental/tickets/cursor.json",
}
IS_DELETED: dict[str, Callable[[Any], bool]] = {
    "users": lambda user: dig(user, "active") is False,
    "tickets": lambda ticket: dig(ticket, "status") == "deleted",
}

# The export lists deletions itself, and holds back what changed in its last minute: a full pull that marked
# every record it did not list as deleted would delete whatever changed just before it (a sync's write, say).
STREAMS: dict[str, StreamSpec] = {
    "users": StreamSpec(
        "users", "users", "user_id", "Zendesk end users (requesters).", tombstone_missing=False,
        change_times=("updated_at",),
    ),
    "tickets": StreamSpec(
        "tickets", "tickets", "ticket_id", "Zendesk support tickets.", tombstone_missing=False,
        linked_ids=("requester_id",),
    ),
}


# The account's calls a minute (400 on Growth and Professional plans), shared by the source's exports and the
# destination's writes and job polls (one pacer). The incremental exports' own 10 a minute is left to the service's
# 429s and their `Retry-After`: a pull makes one export call at a time.
PACE = RateLimit(360, 60.0)


class ZendeskResource(SourceResource):
    """Zendesk API with an agent email and API token (Basic `email/token:api_token`)."""

    service_name = "zendesk"
    credential_env = "ZENDESK_API_TOKEN"
    pace = PACE
    streams = STREAMS

    email: str = Field(description="Agent email the API token belongs to, from ZENDESK_EMAIL.")
    api_token: str = Field(description="API token, from ZENDESK_API_TOKEN.")

    def basic_auth(self) -> tuple[str, str]:
        return (f"{self.email}/token", self.api_token)

    def extract(self, stream: StreamSpec, cursor: Cursor | None, full: bool) -> Iterator[Page]:
        cursor = cursor or {}
        key = "full_cursor" if full else "after_cursor"
        after = cursor.get(key)
        is_deleted = IS_DELETED[stream.name]
        while True:
            params: dict[str, Any] = {"per_page": PAGE_SIZE}
            if after:
                params["cursor"] = after
            else:
                params["start_time"] = 0
            body = self.client.fetch_json("GET", EXPORT_PATHS[stream.name], params=params)
            records = [_record(item, is_deleted) for item in body[stream.name]]
            after = body.get("after_cursor") or after
            if body["end_of_stream"]:
                yield Page(records, {"after_cursor": after})
                return
            yield Page(records, {**cursor, key: after})


def _record(item: Any, is_deleted: Callable[[Any], bool]) -> SourceRecord:
    return SourceRecord(text_id(dig(item, "id")), item, from_iso(dig(item, "updated_at")), is_deleted(item))

"""HubSpot CRM v3: contacts, companies and the contact-to-company associations.

Incremental pulls use the search endpoint, which returns at most 10,000 results per
query. Rather than paging by offset up to that cap (and skipping records when the
result set shifts under the offset), every request is a fresh keyset query:
modified since the mark, `hs_object_id` above the last id seen, sorted by id.
Search never returns archived objects, so archivals come from the `archived=true` list. Search has a limit of
its own (4 calls a second) beside the account's, and is paced under both.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Any, ClassVar

from pydantic import Field

from resources.http import RateLimit, UnpageableAnswer
from resources.source import Cursor, Page, SourceRecord, SourceResource, StreamSpec, dig, from_iso, text_id

LIST_PAGE_SIZE = 100  # maximum `limit` of the list endpoint
SEARCH_PAGE_SIZE = 200  # maximum `limit` of the search endpoint
ASSOCIATION_BATCH = 100  # contact ids per association batch read

PROPERTIES: dict[str, list[str]] = {
    "contacts": [
        "email",
        "firstname",
        "lastname",
        "phone",
        "company",
        "jobtitle",
        "lifecyclestage",
        "city",
        "country",
        "address",
        "zip",
        "date_of_birth",
        "hs_email_optout",
        "createdate",
        "lastmodifieddate",
    ],
    "companies": [
        "name",
        "domain",
        "industry",
        "city",
        "country",
        "numberofemployees",
        "createdate",
        "hs_lastmodifieddate",
    ],
}
# The property that moves when an object changes differs by object type.
MODIFIED_PROPERTY = {"contacts": "lastmodifieddate", "companies": "hs_lastmodifieddate"}

STREAMS: dict[str, StreamSpec] = {
    "contacts": StreamSpec(
        "contacts", "contacts", "contact_id", "HubSpot CRM contacts.",
        change_times=("updatedAt", f"properties.{MODIFIED_PROPERTY['contacts']}"),
    ),
    "companies": StreamSpec("companies", "companies", "company_id", "HubSpot CRM companies."),
    "contact_companies": StreamSpec(
        "contact_companies",
        "contact_companies",
        "contact_id",
        "Which companies each HubSpot contact is associated with.",
    ),
}


# The account's 100 calls per 10 seconds, shared by the source's pulls and the destination's writes (one pacer).
PACE = RateLimit(95, 10)


class HubSpotResource(SourceResource):
    """HubSpot API with a private-app access token."""

    service_name = "hubspot"
    credential_env = "HUBSPOT_ACCESS_TOKEN"
    pace = PACE
    # Search's own 4 a second, over a window 5% longer: the pacers count a call as it leaves, the service as it
    # arrives, so a first call slower on the wire than the fifth would put both in the service's second.
    route_paces: ClassVar[Mapping[str, RateLimit]] = {r"/search$": RateLimit(4, 1.05)}
    streams = STREAMS

    access_token: str = Field(description="Private app token, from HUBSPOT_ACCESS_TOKEN.")

    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token}"}

    def extract(self, stream: StreamSpec, cursor: Cursor | None, full: bool) -> Iterator[Page]:
        cursor = cursor or {}
        state = cursor.get("pull") or {
            "started_ms": int(time.time() * 1000),
            "phase": "list" if full else "search",
            "after": None,
        }
        if state["phase"] in ("list", "search"):
            pages = (
                self._list(stream.name, state)
                if state["phase"] == "list"
                else self._search(stream.name, cursor["modified_since_ms"], state)
            )
            for records, after in pages:
                state = {**state, "after": after}
                yield Page(records, {**cursor, "pull": state})
            state = {**state, "phase": "archived", "after": None}
        # Archived objects since the mark (all of them on a full pull).
        since_ms = 0 if full else cursor.get("modified_since_ms", 0)
        for records, after in self._archived(stream.name, state, since_ms):
            state = {**state, "after": after}
            yield Page(records, {**cursor, "pull": state})
        yield Page([], {"modified_since_ms": state["started_ms"] - self.lookback_seconds * 1000})

    def _list(self, object_type: str, state: Cursor) -> Iterator[tuple[list[SourceRecord], str | None]]:
        yield from self._walk_list(object_type, state["after"], archived=False, since_ms=0)

    def _archived(
        self, object_type: str, state: Cursor, since_ms: int
    ) -> Iterator[tuple[list[SourceRecord], str | None]]:
        yield from self._walk_list(object_type, state["after"], archived=True, since_ms=since_ms)

    def _walk_list(
        self, object_type: str, after: str | None, archived: bool, since_ms: int
    ) -> Iterator[tuple[list[SourceRecord], str | None]]:
        while True:
            params: dict[str, Any] = {
                "limit": LIST_PAGE_SIZE,
                "properties": ",".join(PROPERTIES[object_type]),
                "archived": str(archived).lower(),
            }
            if after:
                params["after"] = after
            body = self.client.fetch_json("GET", f"/crm/v3/objects/{object_type}", params=params)
            after = ((body.get("paging") or {}).get("next") or {}).get("after")
            records = [_record(obj) for obj in body["results"] if not archived or _archived_ms(obj) >= since_ms]
            yield records, after
            if not after:
                return

    def _search(
        self, object_type: str, since_ms: int, state: Cursor
    ) -> Iterator[tuple[list[SourceRecord], str | None]]:
        last_id = state["after"] or "0"
        while True:
            body = {
                "filterGroups": [
                    {
                        "filters": [
                            {"propertyName": MODIFIED_PROPERTY[object_type], "operator": "GTE", "value": str(since_ms)},
                            {"propertyName": "hs_object_id", "operator": "GT", "value": last_id},
                        ]
                    }
                ],
                "sorts": [{"propertyName": "hs_object_id", "direction": "ASCENDING"}],
                "properties": PROPERTIES[object_type],
                "limit": SEARCH_PAGE_SIZE,
            }
            found = self.client.fetch_json("POST", f"/crm/v3/objects/{object_type}/search", json=body)
            results = found["results"]
            if not results:
                return
            # The next query starts above the last readable id; an object without one is read again, once.
            last = next((i for i in map(text_id, (dig(obj, "id") for obj in reversed(results))) if i), None)
            if last is None or last == last_id:
                raise UnpageableAnswer(f"hubspot: cannot search {object_type} past objects without an id")
            last_id = last
            yield [_record(obj) for obj in results], last_id
            if found.get("total", 0) <= len(results):  # `total` counts every match of this query
                return

    def associations(self, contact_ids: list[str]) -> list[SourceRecord]:
        """The companies of each contact; a contact with none comes back with an empty list."""
        body = {"inputs": [{"id": contact_id} for contact_id in contact_ids]}
        found = self.client.fetch_json("POST", "/crm/v4/associations/contacts/companies/batch/read", json=body)
        by_contact = {text_id(dig(result, "from", "id")): result for result in found.get("results", [])}
        return [
            SourceRecord(contact_id, by_contact.get(contact_id, {"from": {"id": contact_id}, "to": []}))
            for contact_id in contact_ids
        ]


def _record(obj: Any) -> SourceRecord:
    return SourceRecord(
        record_id=text_id(dig(obj, "id")),
        payload=obj,
        updated_at=_changed(obj),
        deleted=dig(obj, "archived") is True,
    )


def _changed(obj: Any) -> datetime | None:
    return from_iso(dig(obj, "archivedAt") or dig(obj, "updatedAt"))


def _archived_ms(obj: Any) -> int:
    archived_at = _changed(obj)
    return int(archived_at.timestamp() * 1000) if archived_at else 0

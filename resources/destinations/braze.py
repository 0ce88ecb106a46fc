"""Braze user attributes through `/users/track`: up to 75 attribute objects per call, by `external_id`.

A user who enters the view is opted in to email; a change leaves their subscription as Braze
has it (they may have unsubscribed there); a user who leaves a mirrored view is unsubscribed
and loses the attributes the sync set, but keeps the address, so Braze goes on honouring it.
Braze reports objects it could not use as non-fatal errors, by index; the rest are
processed. Every answer carries `X-RateLimit-*` headers; a 429 is retried at the reset time.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import Field

from resources.destinations import REMOVE, UPSERT, BatchRefused, Delivery, DestinationResource, Erasure, SyncRecord
from resources.http import RateLimit

TRACK_PATH, DELETE_PATH = "/users/track", "/users/delete"
DELETE_BATCH = 50  # external ids per /users/delete
BATCH_SIZE = 75  # attribute objects per /users/track call
# 3,000 calls per 3 seconds for /users/track.
PACE = RateLimit(2700, 3.0)
KEPT_ON_REMOVAL = ("email",)


class BrazeUsersDestination(DestinationResource):
    """Braze REST API with a key that has the users.track permission."""

    service_name = "braze"
    credential_env = "BRAZE_API_KEY"
    modes = frozenset({"upsert", "mirror"})
    batch_size = BATCH_SIZE
    pace = PACE

    api_key: str = Field(description="REST API key, from BRAZE_API_KEY.")

    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}

    def submit(self, operation: str, records: list[SyncRecord], options: Mapping[str, str]) -> Delivery:
        if operation not in (UPSERT, REMOVE):
            raise ValueError(f"braze users take upserts and removals, not {operation}")
        attributes = [_attributes(r) if operation == UPSERT else _unsubscribed(r) for r in records]
        response, body = self.client.fetch("POST", TRACK_PATH, json={"attributes": attributes}, tolerate=(400,))
        if response.status_code == 400:
            raise BatchRefused(f"Braze: {body.get('message')}: {body.get('errors')}")
        refused = {e["index"]: e.get("type", "refused") for e in body.get("errors", []) if "index" in e}
        delivery = Delivery()
        for index, record in enumerate(records):
            if index in refused:
                delivery.rejected[record.key] = f"Braze: {refused[index]}"
            else:
                delivery.acknowledged[record.key] = None
        return delivery


    def erase(self, erasure: Erasure) -> dict[str, int]:
        """Delete the person's users (by every profile id they had), with all Braze holds of them."""
        ids, deleted = erasure.profile_ids, 0
        for start in range(0, len(ids), DELETE_BATCH):
            body = self.client.fetch_json("POST", DELETE_PATH, json={"external_ids": ids[start : start + DELETE_BATCH]})
            deleted += int(body.get("deleted", 0))
        return {"users_deleted": deleted, "already_gone": len(ids) - deleted}


def _attributes(record: SyncRecord) -> dict[str, Any]:
    entering = {"email_subscribe": "opted_in"} if record.change == "add" else {}
    return {"external_id": record.key, **record.values, **entering}


def _unsubscribed(record: SyncRecord) -> dict[str, Any]:
    cleared = {name: None for name in record.values if name not in KEPT_ON_REMOVAL}
    return {"external_id": record.key, **cleared, "email_subscribe": "unsubscribed"}

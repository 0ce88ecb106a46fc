"""HubSpot contacts batch upsert by email: the CRM the HubSpot source reads, written back.

`POST /crm/v3/objects/contacts/batch/upsert` takes up to 100 inputs, each
`{"id": <email>, "idProperty": "email", "properties": {...}}`; HubSpot updates the
contact with that address or creates one. One invalid property value refuses the whole
batch with a 400 `VALIDATION_ERROR`, which the sync engine splits to find the row.
Every property value is sent as text, as HubSpot stores it; a null clears the property.
A batch whose answer was lost to a kill is read back (`batch/read` by email) rather than sent again.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import Field

from cdp_assets.identity import normalise
from cdp_assets.identity import rules as identity_rules
from resources.destinations import UPSERT, BatchRefused, Delivery, DestinationResource, Erasure, SyncRecord
from resources.http import ServiceError
from resources.hubspot import PACE

UPSERT_PATH = "/crm/v3/objects/contacts/batch/upsert"
READ_PATH = "/crm/v3/objects/contacts/batch/read"  # by `idProperty: email`, the properties asked for
GDPR_DELETE_PATH = "/crm/v3/objects/contacts/gdpr-delete"  # one contact a call, deleted for good
BATCH_SIZE = 100  # inputs per batch upsert


class HubSpotContactsDestination(DestinationResource):
    """HubSpot with a private-app access token (the same account and token as the source)."""

    service_name = "hubspot"
    credential_env = "HUBSPOT_ACCESS_TOKEN"
    modes = frozenset({"upsert"})
    batch_size = BATCH_SIZE
    pace = PACE  # the account's, which the source's pulls share
    echo_stream = "hubspot.contacts"
    echo_path = "properties.{field}"

    access_token: str = Field(description="Private app token, from HUBSPOT_ACCESS_TOKEN.")

    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token}"}

    def submit(self, operation: str, records: list[SyncRecord], options: Mapping[str, str]) -> Delivery:
        if operation != UPSERT:
            raise ValueError(f"hubspot contacts take upserts only, not {operation}")
        inputs = [
            {"id": r.key, "idProperty": "email", "properties": {k: _text(v) for k, v in r.values.items()}}
            for r in records
        ]
        response, body = self.client.fetch("POST", UPSERT_PATH, json={"inputs": inputs}, tolerate=(400,))
        if response.status_code == 400:
            if body.get("category") == "VALIDATION_ERROR":
                raise BatchRefused(f"HubSpot: {body.get('message')}")
            raise ServiceError(f"hubspot: batch upsert answered 400: {response.text[:500]}")
        by_email = {_address(str(obj["properties"].get("email", ""))): obj["id"] for obj in body["results"]}
        delivery = Delivery()
        for record in records:
            found = by_email.get(_address(record.key))
            if found is not None:
                delivery.acknowledged[record.key] = str(found)
            else:
                delivery.rejected[record.key] = "HubSpot's answer did not include this contact"
        return delivery

    def recover(self, operation: str, records: list[SyncRecord], receipt: str | None) -> Delivery:
        """A batch whose answer a kill lost: the contacts read back by email; one holding every value sent is
        acknowledged, the others were not taken (or changed since) and are sent again."""
        names = sorted({name for record in records for name in record.values} | {"email"})
        inputs = [{"id": record.key} for record in records]
        body = self.client.fetch_json(
            "POST", READ_PATH, json={"idProperty": "email", "properties": names, "inputs": inputs}, tolerate=(404,)
        )  # 404: none of them found
        held = {_address(str(obj["properties"].get("email") or "")): obj for obj in body.get("results", [])}
        delivery = Delivery()
        for record in records:
            contact = held.get(_address(record.key))
            if contact is not None and all(
                (contact["properties"].get(name) or "") == (_text(value) or "") for name, value in record.values.items()
            ):  # HubSpot reads an empty property back as null or "", as the null that cleared it
                delivery.acknowledged[record.key] = str(contact["id"])
        return delivery

    def erase(self, erasure: Erasure) -> dict[str, int]:
        done = {"contacts_deleted": 0, "already_gone": 0}
        for contact_id in erasure.records.get("hubspot.contacts", []):
            response = self.client.request("POST", GDPR_DELETE_PATH, json={"objectId": contact_id}, tolerate=(404,))
            done["already_gone" if response.status_code == 404 else "contacts_deleted"] += 1
        return done


def _address(value: str) -> str:
    """An address in the one normal form, so HubSpot's spelling of it (lowercased, its own IDN form) meets ours."""
    return normalise.email(value, identity_rules.load()) or value


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)

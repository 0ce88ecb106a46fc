"""What the destination accounts hold, and the writes that change it.

HubSpot and Zendesk take writes on the same accounts their source APIs serve, so a
contact a sync creates or updates is in the next pull. Braze users and Meta custom
audience members live in tables of their own in ``world.db``, never served by a source.
Writes are serialised by one lock, and ids for new records come from the world's
counters under churn's lock, so a write and a tick never hand out the same id.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from sandbox import churn
from sandbox.clock import hubspot_time, zendesk_time
from sandbox.ids import contact_id, zendesk_user_id
from sandbox.store import Record, WorldStore

SCHEMA = """
CREATE TABLE IF NOT EXISTS braze_users (
    external_id TEXT PRIMARY KEY,
    attributes  TEXT NOT NULL,     -- JSON object of the user's attributes
    updated     INTEGER NOT NULL   -- unix ms of the last write
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta_audience_members (
    audience_id TEXT NOT NULL,
    email_hash  TEXT NOT NULL,     -- '' when the member was sent without one
    phone_hash  TEXT NOT NULL,
    added       INTEGER NOT NULL,
    PRIMARY KEY (audience_id, email_hash, phone_hash)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS meta_members_by_phone ON meta_audience_members (audience_id, phone_hash);
CREATE TABLE IF NOT EXISTS received_writes (
    stream TEXT NOT NULL,          -- hubspot.contacts or zendesk.users
    email  TEXT NOT NULL,          -- normalised
    writes INTEGER NOT NULL,       -- upserts applied for this address: what tests count "sent once" by
    PRIMARY KEY (stream, email)
) WITHOUT ROWID;
"""


def normalised_email(value: Any) -> str | None:
    return value.strip().lower() if isinstance(value, str) and value.strip() else None


class EmailIndex:
    """Live records of one stream by normalised email, kept current by reading what changed since last time.

    Churn writes records without telling anyone; ``records_by_updated`` finds them cheaply.
    """

    def __init__(self, store: WorldStore, stream: str, path: str) -> None:
        self.store, self.stream, self.path = store, stream, path
        self.ids: dict[str, set[str]] = {}
        self.email_of: dict[str, str] = {}
        self.updated: dict[str, int] = {}
        self.watermark = -1  # updated ms already read; equal stamps are read again (idempotent)

    def refresh(self) -> None:
        rows = self.store.connect().execute(
            "SELECT id, updated, archived, json_extract(payload, ?) FROM records"
            " WHERE stream = ? AND updated >= ? ORDER BY updated",
            (self.path, self.stream, self.watermark),
        )
        for record_id, updated, archived, email in rows:
            self.note(record_id, None if archived else normalised_email(email), updated)
            self.watermark = max(self.watermark, updated)

    def note(self, record_id: str, email: str | None, updated: int = 0) -> None:
        old = self.email_of.pop(record_id, None)
        if old is not None:
            self.ids[old].discard(record_id)
        self.updated[record_id] = updated
        if email is not None:
            self.email_of[record_id] = email
            self.ids.setdefault(email, set()).add(record_id)

    def find(self, email: str) -> str | None:
        """The live record with this address changed last (duplicates exist), the lowest id among equals."""
        found = self.ids.get(email)
        return min(found, key=lambda i: (-self.updated[i], i)) if found else None


@dataclass
class Accounts:
    """The destination side of one world: lookups, storage and the write lock."""

    store: WorldStore
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        with self.store.connect() as conn:
            conn.executescript(SCHEMA)
        self.contacts = EmailIndex(self.store, "hubspot.contacts", "$.properties.email")
        self.users = EmailIndex(self.store, "zendesk.users", "$.email")

    # -- HubSpot contacts and Zendesk users ------------------------------------------
    def upsert_contacts(self, inputs: list[tuple[str, dict[str, str]]]) -> list[tuple[Record, bool]]:
        """Update the contact with each email, or create one; returns each contact and whether it is new."""
        now_ms = int(time.time() * 1000)
        stamp = hubspot_time(now_ms)

        def new(number: int, email: str) -> Record:
            cid = contact_id(number)
            properties = {"email": email, "createdate": stamp, "hs_object_id": cid}
            payload = {"id": cid, "properties": properties, "createdAt": stamp, "archived": False}
            return Record("hubspot.contacts", cid, now_ms // 1000, now_ms, payload)

        def update(payload: dict[str, Any], properties: dict[str, str]) -> None:
            payload["properties"].update(properties, lastmodifieddate=stamp)
            payload["updatedAt"] = stamp

        return self._upsert(self.contacts, "contact", new, update, inputs, now_ms)

    def upsert_users(self, users: list[dict[str, Any]]) -> list[tuple[Record, bool]]:
        """create_or_update by email: each user's record and whether it was created."""
        now_ms = int(time.time() * 1000)
        stamp = zendesk_time(now_ms // 1000)

        def new(number: int, email: str) -> Record:
            uid = zendesk_user_id(number)
            return Record("zendesk.users", str(uid), now_ms // 1000, now_ms, _new_user(uid, email, stamp))

        def update(payload: dict[str, Any], user: dict[str, Any]) -> None:
            payload.update({name: user[name] for name in ("name", "phone") if name in user})
            payload["user_fields"] = {**(payload.get("user_fields") or {}), **user.get("user_fields", {})}
            payload["updated_at"] = stamp

        items = [(normalised_email(user["email"]) or "", user) for user in users]  # the API checked the addresses
        return self._upsert(self.users, "zd_user", new, update, items, now_ms)

    def _upsert(
        self,
        index: EmailIndex,
        counter: str,
        new: Callable[[int, str], Record],
        update: Callable[[dict[str, Any], Any], None],
        items: list[tuple[str, Any]],
        now_ms: int,
    ) -> list[tuple[Record, bool]]:
        """Apply each item to the live record with its email, or to a new one numbered from `counter`."""
        with self.lock:
            index.refresh()
            missing = {email for email, _ in items if index.find(email) is None}
            numbers = iter(churn.take_numbers(self.store, counter, len(missing)))
            written: dict[str, Record] = {}
            results = []
            for email, item in items:
                record = written.get(email)
                created = record is None and index.find(email) is None
                if record is None:
                    found = index.find(email)
                    record = new(next(numbers), email) if found is None else self.store.get(index.stream, found)
                assert record is not None
                update(record.payload, item)
                record = Record(record.stream, record.id, record.created, now_ms, record.payload)
                written[email] = record
                index.note(record.id, email, now_ms)
                results.append((record, created))
            self.store.upsert(written.values())
            with self.store.connect() as conn:
                conn.executemany(
                    "INSERT INTO received_writes VALUES (?, ?, 1)"
                    " ON CONFLICT (stream, email) DO UPDATE SET writes = writes + 1",
                    [(index.stream, email) for email, _ in items],
                )
        return results

    def contact_ids(self, emails: list[str]) -> dict[str, str]:
        """The live contact each address leads to (as an upsert by email would), for those that lead to one."""
        with self.lock:
            self.contacts.refresh()
            found = {email: self.contacts.find(email) for email in emails}
        return {email: contact for email, contact in found.items() if contact is not None}

    def forget_contact(self, contact_id: str) -> bool:
        """HubSpot's GDPR delete: the contact and its associations are gone for good."""
        with self.lock:
            self.contacts.note(contact_id, None)
            keys = [("hubspot.contacts", contact_id), ("hubspot.contact_companies", contact_id)]
            return bool(self.store.delete(keys))

    def delete_user(self, user_id: str, permanently: bool) -> dict[str, Any] | None:
        """Zendesk: a deleted user turns inactive; a permanently deleted one keeps no personal data."""
        with self.lock:
            record = self.store.get("zendesk.users", user_id)
            if record is None or (permanently and not record.archived):
                return None
            payload = record.payload
            payload.update(active=False, updated_at=zendesk_time(int(time.time())))
            if permanently:
                payload.update(name="Permanently deleted user", email=None, phone=None, external_id=None,
                               user_fields={}, tags=[])  # fmt: skip
            self.users.note(user_id, None)
            now_ms = int(time.time() * 1000)
            self.store.upsert([Record(record.stream, record.id, record.created, now_ms, payload, archived=True)])
            return payload

    # -- Braze users ---------------------------------------------------------------
    def track_attributes(self, objects: Iterable[dict[str, Any]]) -> int:
        """Merge attribute objects into their users (null removes an attribute); returns users written."""
        now_ms = int(time.time() * 1000)
        with self.lock:
            conn = self.store.connect()
            merged: dict[str, dict[str, Any]] = {}
            for obj in objects:
                external_id = obj["external_id"]
                if external_id not in merged:
                    row = conn.execute(
                        "SELECT attributes FROM braze_users WHERE external_id = ?", (external_id,)
                    ).fetchone()
                    merged[external_id] = json.loads(row[0]) if row else {}
                attributes = merged[external_id]
                for name, value in obj.items():
                    if name in ("external_id", "_update_existing_only"):
                        continue
                    if value is None:
                        attributes.pop(name, None)
                    else:
                        attributes[name] = value
            with conn:
                conn.executemany(
                    "INSERT OR REPLACE INTO braze_users (external_id, attributes, updated) VALUES (?, ?, ?)",
                    [(k, json.dumps(v, separators=(",", ":")), now_ms) for k, v in merged.items()],
                )
        return len(merged)

    def delete_braze_users(self, external_ids: list[str]) -> int:
        with self.lock, self.store.connect() as conn:
            return sum(
                conn.execute("DELETE FROM braze_users WHERE external_id = ?", (external_id,)).rowcount
                for external_id in external_ids
            )

    def braze_users(self) -> dict[str, dict[str, Any]]:
        rows = self.store.connect().execute("SELECT external_id, attributes FROM braze_users ORDER BY 1")
        return {external_id: json.loads(attributes) for external_id, attributes in rows}

    # -- Meta custom audiences -----------------------------------------------------
    def add_members(self, audience_id: str, members: list[tuple[str, str]]) -> None:
        now_ms = int(time.time() * 1000)
        with self.lock, self.store.connect() as conn:
            conn.executemany(
                "INSERT OR IGNORE INTO meta_audience_members VALUES (?, ?, ?, ?)",
                [(audience_id, email, phone, now_ms) for email, phone in members],
            )

    def remove_members(self, audience_id: str, members: list[tuple[str, str]]) -> None:
        """Remove every member matched by any of the hashes given, as Meta matches people."""
        with self.lock, self.store.connect() as conn:
            for email, phone in members:
                if email:
                    conn.execute(
                        "DELETE FROM meta_audience_members WHERE audience_id = ? AND email_hash = ?",
                        (audience_id, email),
                    )
                if phone:
                    conn.execute(
                        "DELETE FROM meta_audience_members WHERE audience_id = ? AND phone_hash = ?",
                        (audience_id, phone),
                    )

    def audience_members(self) -> dict[str, list[tuple[str, str]]]:
        rows = self.store.connect().execute(
            "SELECT audience_id, email_hash, phone_hash FROM meta_audience_members ORDER BY 1, 2, 3"
        )
        held: dict[str, list[tuple[str, str]]] = {}
        for audience_id, email, phone in rows:
            held.setdefault(audience_id, []).append((email, phone))
        return held


def _new_user(uid: int, email: str, stamp: str) -> dict[str, Any]:
    return {
        "id": uid,
        "url": f"https://sandbox.zendesk.com/api/v2/users/{uid}.json",
        "name": email,
        "email": email,
        "phone": None,
        "external_id": None,
        "role": "end-user",
        "active": True,
        "suspended": False,
        "organization_id": None,
        "tags": [],
        "user_fields": {},
        "time_zone": None,
        "locale": None,
        "created_at": stamp,
        "updated_at": stamp,
    }

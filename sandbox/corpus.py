"""A fixed corpus of bad records, written into a world on demand (``POST /_sandbox/corpus``).

Data contracts must be tested against what broken sources really send, served over
HTTP by the same APIs as everything else. Every corpus record is well formed except
for its one case, belongs to no person (no truth rows), is listed in ``anomalies.csv``
with its kind, and is stamped ``updated = now`` so incremental pulls pick it up. Stripe
objects also get a ``*.created`` event, because Stripe increments come from events.
Injecting again rewrites the same ids with fresh times: nothing is duplicated. Each case
carries the quarantine reason it must get (a part of the reason the pipeline's staging
gives, see ``cdp_assets/mappings.py`` and ``cdp_assets/contracts.py``), or None when the
record is valid and must reach staging.

Ids say where they come from: Stripe ``cus_corpus00000001`` (``sub_``/``in_``/``evt_``
with 18 digits), HubSpot 9000000001+, Zendesk 9900000000001+, Klaviyo
``01C0RPVS`` + 18 digits (Crockford base32 has no O or U) and Mixpanel ``corpus-0001``.

Cases (kind: stream field = value):

- ``wrong_type``: Stripe customer ``created`` as ISO text, invoice ``amount_due`` "12.50",
  Zendesk user ``active`` "yes".
- ``null_required``: invoice ``customer``, ticket ``requester_id``, and a Klaviyo profile's
  ``email``, ``phone_number`` and ``external_id`` all null (no identifier left).
- ``invalid_email``: "not-an-email" (Stripe, Klaviyo), "a@@b.com" (HubSpot), "ann@" (Zendesk).
- ``future_timestamp``: 30 days ahead: ticket ``created_at``, Klaviyo event ``timestamp`` and
  ``datetime``, Mixpanel ``time`` (the export serves it only for a window holding that day).
- ``negative_amount``: invoice ``amount_paid`` -500.
- ``unknown_enum``: subscription ``status`` "paused_forever", ticket ``status`` "escalated_x".
- ``oversized_string``: 1,048,576 characters in HubSpot ``firstname`` and ticket ``description``.
- ``non_ascii``: accents, emoji, CJK, RTL, combining marks and ZWJ sequences in names
  (Stripe, Zendesk, Klaviyo) and a Mixpanel ``utm_campaign``: valid, must survive intact.
- ``sql_like`` / ``html_like``: HubSpot ``lastname`` with a DROP TABLE, ticket ``subject``
  ``<script>``: valid text, to be stored verbatim and never executed.
- ``nested_object``: Stripe customer ``email`` {"address": …}, HubSpot ``phone`` {"number": …}.
- ``duplicate_id``: one clean Stripe customer and one clean Zendesk user (``DUPLICATED``) that the
  list endpoints serve twice when config ``duplicates.stripe`` / ``duplicates.zendesk`` is on:
  twice in a row on their page and again at the top of the next page.

Hostile records, which once stopped a pull before any contract saw them:

- ``unix_milliseconds``: a Stripe customer ``created`` (and its event's ``created``) and a Mixpanel
  ``properties.time`` in milliseconds (the event is filed under today, so today's export serves it).
- ``unix_seconds``: a Klaviyo event ``datetime`` as unix seconds where ISO text belongs.
- ``sentinel_date``: ticket ``updated_at`` 9999-12-31T23:59:59Z; ``far_future_date``: Klaviyo
  profile ``updated`` 2300-01-01; ``year_one_date``: HubSpot contact ``updatedAt`` 0001-01-01.
- ``zoneless_timestamp``: a Klaviyo event ``datetime`` without a zone.
- ``string_for_object``: a Klaviyo profile whose ``attributes`` is a string;
  ``list_for_object``: a Mixpanel event whose ``properties`` is a list of key/value pairs.
- ``id_above_2_63``: a Zendesk user id of 2^63 + 7, an invoice ``amount_due`` of 2^64 + 1.
- ``control_character``: a NUL in a HubSpot ``email``, an escape sequence and a bell in a ticket
  ``subject``.
"""

from __future__ import annotations

import csv
import threading
import uuid
from dataclasses import dataclass
from typing import Any

from sandbox.clock import DAY, hubspot_time, klaviyo_time, zendesk_time
from sandbox.render_klaviyo import email_marketing, event_payload, links
from sandbox.store import ANOMALIES_FILE, Record, WorldStore

FUTURE_SECONDS = 30 * DAY
HUGE_ID = 2**63 + 7  # above every signed 64-bit integer
CONTROL = "Order \x1b[31m#1234\x1b[0m shipped\x07"  # an ANSI colour escape and a bell
OVERSIZED = ("oversized " * 104_858)[:1_048_576]  # 1 MiB of ASCII
NAME = "Zoë 🚀 Ñandú 李小龙"
SCRIPTS = "e\u0301té 👩\u200d👩\u200d👧 مرحبا Привет"  # combining accent, ZWJ emoji, Arabic, Cyrillic
SQL = "Robert'); DROP TABLE staging.hubspot__contacts;--"
HTML = "<script>alert(1)</script>"
EVENT_TYPES = {  # the event a new Stripe object of each stream announces itself with, without ".created"
    "stripe.customers": "customer",
    "stripe.subscriptions": "customer.subscription",
    "stripe.invoices": "invoice",
}
_LOCK = threading.Lock()  # one injection at a time, so anomalies.csv gets each row once


def cus(n: int) -> str:
    return f"cus_corpus{n:08d}"


def stripe_id(prefix: str, n: int) -> str:
    """``sub_``, ``in_`` or ``evt_``: 24 characters after the prefix, like the world's."""
    return f"{prefix}_corpus{n:018d}"


def hubspot_id(n: int) -> str:
    return str(9_000_000_000 + n)


def zendesk_id(n: int) -> str:
    return str(9_900_000_000_000 + n)


def klaviyo_id(n: int) -> str:
    return f"01C0RPVS{n:018d}"


DUPLICATED: dict[str, str] = {"stripe.customers": cus(1), "zendesk.users": zendesk_id(1)}


@dataclass(frozen=True)
class Case:
    """One bad record: its kind, where it lives and which field(s) of the payload are bad."""

    kind: str
    stream: str
    id: str
    field: str  # dotted path(s), comma-separated
    payload: Any
    reason: str | None  # what staging's quarantine reason must say; None: valid, it must be staged
    created: int | None = None  # records.created (unix seconds) when it is not now: a bad event time
    event_created: int | None = None  # a Stripe object's event `created` when not now (a bad unit, say)


def inject_corpus(store: WorldStore, now_ms: int) -> dict[str, list[dict[str, str | None]]]:
    """Write (or re-stamp) every corpus record at ``now_ms``; returns {kind: [{stream, id, field}]}."""
    metrics = store.scan("klaviyo.metrics")
    metric = next((m.id for m in metrics if m.payload.get("attributes", {}).get("name") == "Received Email"), "C0RPVS")
    cases = corpus(now_ms // 1000, metric)
    records = [Record(c.stream, c.id, c.created or now_ms // 1000, now_ms, c.payload) for c in cases]
    with _LOCK:
        store.upsert([*records, *_stripe_events(cases, now_ms // 1000)])
        listed = _listed(store)
        store.append_anomalies([(c.stream, c.id, c.kind) for c in cases if (c.stream, c.id, c.kind) not in listed])
    summary: dict[str, list[dict[str, str | None]]] = {}
    for c in cases:
        summary.setdefault(c.kind, []).append({"stream": c.stream, "id": c.id, "field": c.field, "reason": c.reason})
    return summary


def corpus(now: int, metric: str) -> list[Case]:
    """Every case at ``now`` (unix seconds); ``metric`` is the Klaviyo metric the bad event points at."""
    later, ms = now + FUTURE_SECONDS, now * 1000
    customer, user, profile = cus(5), int(zendesk_id(4)), klaviyo_id(3)  # the clean records others point at
    return [
        _case("duplicate_id", "stripe.customers", cus(1), _customer(cus(1), now), {}, None),
        _case(
            "wrong_type", "stripe.customers", cus(2), _customer(cus(2), now), {"created": zendesk_time(now)},
            "created: expected unix seconds, got a string",
        ),
        _case(
            "invalid_email", "stripe.customers", cus(3), _customer(cus(3), now), {"email": "not-an-email"},
            "email: not an email address",
        ),
        _case(
            "nested_object", "stripe.customers", cus(4), _customer(cus(4), now), {"email": {"address": "x@y.com"}},
            "email: expected a string, got an object",
        ),
        _case("non_ascii", "stripe.customers", customer, _customer(customer, now), {"name": NAME}, None),
        _case(
            "unix_milliseconds", "stripe.customers", cus(6), _customer(cus(6), now), {"created": ms},
            "created: unix time in milliseconds", event_created=ms,
        ),
        _case(
            "unknown_enum",
            "stripe.subscriptions",
            stripe_id("sub", 1),
            _subscription(stripe_id("sub", 1), customer, now),
            {"status": "paused_forever"},
            "status: not an allowed value",
        ),
        *(
            _case(kind, "stripe.invoices", stripe_id("in", n), _invoice(stripe_id("in", n), customer, now), bad, why)
            for n, kind, bad, why in (
                (1, "wrong_type", {"amount_due": "12.50"}, "amount_due: expected a 64-bit integer, got a string"),
                (2, "null_required", {"customer": None}, "customer: missing"),
                (3, "negative_amount", {"amount_paid": -500}, "amount_paid: below the minimum"),
                (4, "id_above_2_63", {"amount_due": 2**64 + 1}, "amount_due: expected a 64-bit integer, got an "
                 "integer above 2^63"),
            )
        ),
        *(
            _case(kind, "hubspot.contacts", hubspot_id(n), _contact(hubspot_id(n), ms), bad, why)
            for n, kind, bad, why in (
                (1, "invalid_email", {"properties.email": "a@@b.com"}, "properties.email: not an email address"),
                (2, "oversized_string", {"properties.firstname": OVERSIZED}, "firstname: longer than allowed"),
                (3, "sql_like", {"properties.lastname": SQL}, None),
                (4, "nested_object", {"properties.phone": {"number": "+14155550100"}},
                 "properties.phone: expected a string, got an object"),
                (5, "year_one_date", {"updatedAt": "0001-01-01T00:00:00Z"}, "updatedAt: outside 1970..2100"),
                (6, "control_character", {"properties.email": "corpus\x00nul@example.com"},
                 "properties.email: control character"),
            )
        ),
        *(
            _case(kind, "zendesk.users", zendesk_id(n), _user(int(zendesk_id(n)), now), bad, why)
            for n, kind, bad, why in (
                (1, "duplicate_id", {}, None),
                (2, "wrong_type", {"active": "yes"}, "active: expected a boolean, got a string"),
                (3, "invalid_email", {"email": "ann@"}, "email: not an email address"),
                (4, "non_ascii", {"name": NAME}, None),
            )
        ),
        _case(
            "id_above_2_63", "zendesk.users", str(HUGE_ID), _user(HUGE_ID, now), {},
            "id: not a 64-bit integer id",
        ),
        *(
            _case(kind, "zendesk.tickets", zendesk_id(n), _ticket(int(zendesk_id(n)), user, now), bad, why, created)
            for n, kind, bad, why, created in (
                (1, "null_required", {"requester_id": None}, "requester_id: missing", None),
                (2, "future_timestamp", {"created_at": zendesk_time(later)}, "created_at: in the future", later),
                (3, "unknown_enum", {"status": "escalated_x"}, "status: not an allowed value", None),
                (4, "oversized_string", {"description": OVERSIZED}, "description: longer than allowed", None),
                (5, "html_like", {"subject": HTML}, None, None),
                (6, "sentinel_date", {"updated_at": "9999-12-31T23:59:59Z"}, "updated_at: outside 1970..2100", None),
                (7, "control_character", {"subject": CONTROL}, "subject: control character", None),
            )
        ),
        *(
            _case(kind, "klaviyo.profiles", klaviyo_id(n), _profile(klaviyo_id(n), now), bad, why)
            for n, kind, bad, why in (
                (1, "null_required", {f"attributes.{k}": None for k in ("email", "phone_number", "external_id")},
                 "no email, phone number or external id"),
                (2, "invalid_email", {"attributes.email": "not-an-email"}, "attributes.email: not an email address"),
                (3, "non_ascii", {"attributes.first_name": "Zoë 🚀", "attributes.last_name": "Ñandú 李小龙"}, None),
                (4, "far_future_date", {"attributes.updated": "2300-01-01T00:00:00+00:00"},
                 "attributes.updated: outside 1970..2100"),
                (5, "string_for_object", {"attributes": "email=corpus-5@example.com; first_name=Corpus"},
                 "attributes: expected an object, got a string"),
            )
        ),
        *(
            _case(kind, "klaviyo.events", klaviyo_id(n), _klaviyo_event(klaviyo_id(n), profile, metric, now), bad, why,
                  created)
            for n, kind, bad, why, created in (
                (1, "future_timestamp", {"attributes.timestamp": later, "attributes.datetime": klaviyo_time(later)},
                 "attributes.datetime: in the future", later),
                (2, "unix_seconds", {"attributes.datetime": now}, "attributes.datetime: expected ISO-8601 text, got "
                 "an integer", None),
                (3, "zoneless_timestamp", {"attributes.datetime": klaviyo_time(now).removesuffix("+00:00")},
                 "attributes.datetime: time without a zone", None),
            )
        ),
        *(
            _case(kind, "mixpanel.events", f"corpus-{n:04d}", _mixpanel(f"corpus-{n:04d}", now), bad, why, created)
            for n, kind, bad, why, created in (
                (1, "future_timestamp", {"properties.time": later}, "properties.time: in the future", later),
                (2, "non_ascii", {"properties.utm_campaign": SCRIPTS}, None, None),
                (3, "unix_milliseconds", {"properties.time": ms}, "properties.time: unix time in milliseconds", None),
                (4, "list_for_object", {}, "properties: expected an object, got an array", None),
            )
        ),
    ]


def _case(
    kind: str,
    stream: str,
    rid: str,
    payload: dict[str, Any],
    bad: dict[str, Any],
    reason: str | None,
    created: int | None = None,
    event_created: int | None = None,
) -> Case:
    """Spoil ``payload`` at each dotted path of ``bad`` (none: the record itself is the case)."""
    for path, value in bad.items():
        *parents, leaf = path.split(".")
        holder = payload
        for key in parents:
            holder = holder[key]
        holder[leaf] = value
    if kind == "list_for_object":  # properties as a list of key/value pairs, as some SDKs serialise a map
        payload["properties"] = [{"key": key, "value": value} for key, value in payload["properties"].items()]
        return Case(kind, stream, rid, "properties", payload, reason, created, event_created)
    return Case(kind, stream, rid, ",".join(bad) or "id", payload, reason, created, event_created)


def _listed(store: WorldStore) -> set[tuple[str, ...]]:
    path = store.folder / ANOMALIES_FILE
    if not path.exists():
        return set()
    with path.open(newline="") as f:
        return {tuple(row) for row in csv.reader(f)}


def _stripe_events(cases: list[Case], now: int) -> list[Record]:
    """A ``*.created`` event per Stripe object; ``updated`` orders the events of one second."""
    events = []
    for rank, case in enumerate(c for c in cases if c.stream in EVENT_TYPES):
        eid = stripe_id("evt", rank + 1)
        body = {
            "id": eid,
            "object": "event",
            "type": f"{EVENT_TYPES[case.stream]}.created",
            "created": case.event_created or now,
            "api_version": "2024-06-20",
            "data": {"object": case.payload},
        }
        events.append(Record("stripe.events", eid, now, now * 1000 + rank, body))
    return events


# -- clean payloads, shaped like the world's (docs/sandbox-world.md) ------------------------
def _email(rid: str) -> str:
    return f"corpus-{rid.lower()}@example.com"


def _customer(cid: str, now: int) -> dict[str, Any]:
    address = {"line1": "1 Corpus Way", "city": "Testville", "postal_code": "00001", "country": "US"}
    return {
        "id": cid, "object": "customer", "created": now, "email": _email(cid), "name": "Corpus Customer",
        "phone": None, "address": address, "currency": "usd", "balance": 0, "livemode": False, "metadata": {},
    }


def _subscription(sid: str, customer: str, now: int) -> dict[str, Any]:
    price = {
        "id": stripe_id("price", 1), "product": f"prod_corpus{1:08d}", "unit_amount": 4900, "currency": "usd",
        "recurring": {"interval": "month"},
    }
    item = {
        "id": f"si_corpus{1:08d}", "quantity": 1, "current_period_start": now,
        "current_period_end": now + FUTURE_SECONDS, "price": price,
    }
    return {
        "id": sid, "object": "subscription", "customer": customer, "status": "active", "created": now,
        "canceled_at": None, "cancel_at_period_end": False, "currency": "usd",
        "items": {"object": "list", "data": [item]}, "metadata": {},
    }


def _invoice(iid: str, customer: str, now: int) -> dict[str, Any]:
    return {
        "id": iid, "object": "invoice", "customer": customer, "subscription": stripe_id("sub", 1), "status": "paid",
        "amount_due": 4900, "amount_paid": 4900, "currency": "usd", "created": now, "period_start": now,
        "period_end": now + FUTURE_SECONDS,
    }


def _contact(hid: str, now_ms: int) -> dict[str, Any]:
    stamp = hubspot_time(now_ms)
    properties = {
        "email": _email(f"hubspot-{hid}"), "firstname": "Corpus", "lastname": "Contact", "phone": None,
        "company": None, "jobtitle": None, "lifecyclestage": "lead", "city": None, "country": None,
        "address": None, "zip": None, "date_of_birth": None,
        "createdate": stamp, "lastmodifieddate": stamp, "hs_object_id": hid, "hs_email_optout": "false",
    }
    return {"id": hid, "properties": properties, "createdAt": stamp, "updatedAt": stamp, "archived": False}


def _user(uid: int, now: int) -> dict[str, Any]:
    return {
        "id": uid, "url": f"https://sandbox.zendesk.com/api/v2/users/{uid}.json", "name": "Corpus User",
        "email": _email(f"zendesk-{uid}"), "phone": None, "external_id": None, "role": "end-user", "active": True,
        "suspended": False, "organization_id": None, "tags": [], "user_fields": {}, "time_zone": "UTC",
        "locale": "en-US", "created_at": zendesk_time(now), "updated_at": zendesk_time(now),
    }


def _ticket(tid: int, requester: int, now: int) -> dict[str, Any]:
    return {
        "id": tid, "url": f"https://sandbox.zendesk.com/api/v2/tickets/{tid}.json", "subject": "Corpus ticket",
        "description": "A ticket from the bad-input corpus.", "status": "open", "priority": "normal", "type": None,
        "requester_id": requester, "submitter_id": requester, "assignee_id": None, "organization_id": None,
        "tags": [], "via": {"channel": "api"}, "satisfaction_rating": {"score": "unoffered"}, "custom_fields": [],
        "created_at": zendesk_time(now), "updated_at": zendesk_time(now),
    }


def _profile(pid: str, now: int) -> dict[str, Any]:
    location = {"address1": None, "city": None, "country": None, "region": None, "zip": None, "timezone": None}
    marketing = email_marketing("NEVER_SUBSCRIBED", None, None)
    attributes = {
        "email": _email(f"klaviyo-{pid}"), "phone_number": None, "external_id": None, "first_name": "Corpus",
        "last_name": "Profile", "organization": None, "title": None, "locale": "en-US",
        "created": klaviyo_time(now), "updated": klaviyo_time(now), "last_event_date": None, "location": location,
        "properties": {}, "subscriptions": {"email": {"marketing": marketing}},
    }
    return {"type": "profile", "id": pid, "attributes": attributes, "links": links("profiles", pid)}


def _klaviyo_event(eid: str, profile: str, metric: str, now: int) -> dict[str, Any]:
    props = {"Campaign Name": "Corpus", "Subject": "Corpus", "$message": "C0RPVS"}
    return event_payload(eid, now, str(uuid.uuid5(uuid.NAMESPACE_URL, eid)), props, profile, metric)


def _mixpanel(iid: str, now: int) -> dict[str, Any]:
    device = str(uuid.uuid5(uuid.NAMESPACE_URL, iid))
    properties = {
        "time": now, "distinct_id": f"$device:{device}", "$device_id": device, "$insert_id": iid,
        "mp_processing_time_ms": now * 1000, "$os": "Linux", "$browser": "Firefox", "mp_lib": "web",
        "$current_url": "https://www.example.com/",
    }
    return {"event": "Page Viewed", "properties": properties}

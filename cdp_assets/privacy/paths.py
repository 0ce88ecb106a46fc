"""Where each stream's payload names a person, as data, and those values read out and normalised.

The record's own id, the addresses, numbers and logins it carries, and the parent records a
child points at (a subscription's customer, a ticket's requester). Values are read out of the payload as the
source wrote them, from Python payloads (`named`, for pages being pulled) and from landed rows in SQL
(`identify`), both driven by these paths and reading alike, and normalised in Python by the one normaliser
(identity's `value_forms`; `identify` through identity's memo), so privacy matches exactly what identity
stored: SQL only joins.
"""

from __future__ import annotations

import json
import re
from typing import Any

import duckdb

from cdp_assets.identity.identifiers import known_forms, value_forms
from cdp_assets.identity.rules import Rules
from cdp_assets.mappings import MAPPINGS

# Per stream: identifier type -> JSON paths (dots between keys) where its payload holds one. `record:<stream>`
# is a record id of that stream: the stream's own (the first) or a parent's. A device counts only on an event
# with no login, since others share devices.
PERSON_PATHS: dict[str, dict[str, tuple[str, ...]]] = {
    "stripe.customers": {"record:stripe.customers": ("id",), "email": ("email",), "phone": ("phone",),
                         "user_id": ("metadata.product_user_id",)},
    "hubspot.contacts": {"record:hubspot.contacts": ("id",), "email": ("properties.email",),
                         "phone": ("properties.phone",)},
    "zendesk.users": {"record:zendesk.users": ("id",), "email": ("email",), "phone": ("phone",),
                      "user_id": ("external_id",)},
    "klaviyo.profiles": {"record:klaviyo.profiles": ("id",), "email": ("attributes.email",),
                         "phone": ("attributes.phone_number",), "user_id": ("attributes.external_id",)},
    "mixpanel.events": {"record:mixpanel.events": ("properties.$insert_id",), "user_id": ("properties.$user_id",),
                        "email": ("properties.email",), "device_id": ("properties.$device_id",)},
    "stripe.subscriptions": {"record:stripe.customers": ("customer",)},
    "stripe.invoices": {"record:stripe.customers": ("customer",)},
    "hubspot.contact_companies": {"record:hubspot.contacts": ("from.id",)},
    "zendesk.tickets": {"record:zendesk.users": ("requester_id",)},
    "klaviyo.events": {"record:klaviyo.profiles": ("relationships.profile.data.id",)},
}  # fmt: skip
PERSON_STREAMS = tuple(s for s, paths in PERSON_PATHS.items() if next(iter(paths)) == f"record:{s}")
ESCAPE = re.compile(r"\\\\|\\u00[0-9a-f]{2}")  # an escaped backslash (kept), or a control character's escape
ANONYMOUS_UNLESS = {"device_id": "user_id"}  # a device identifies the person only where no login does


def json_path(dotted: str) -> str:
    """`properties.$user_id` -> `$.properties."$user_id"` (DuckDB quotes keys that are not plain names)."""
    return "$." + ".".join(f'"{key}"' if not key.isidentifier() else key for key in dotted.split("."))


def region_path(stream: str, rules: Rules) -> str | None:
    """The dotted payload path of the column the identity rules read a phone's country from, found in the stream's
    mapping, so privacy reads a number with the region identity read it with."""
    source = next((s for s in rules.sources if s.stream == stream), None)
    if source is None or source.phone_region is None:
        return None
    column = next(c for c in MAPPINGS[source.table.split(".", 1)[1]] if c.name == source.phone_region)
    return ".".join(key.strip('"') for key in column.path.removeprefix("$.").split("."))


def payload_value(payload: Any, dotted: str) -> str | None:
    """The value at `dotted`, as DuckDB's json_extract_string reads it: text as is, other values as compact JSON
    with control characters escaped in upper-case hex (floats in exponent form excepted: no identifier is one)."""
    for key in dotted.split("."):
        payload = payload.get(key) if isinstance(payload, dict) else None
    if isinstance(payload, str) or payload is None:
        return payload
    text = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
    return ESCAPE.sub(lambda m: m[0][:2] + m[0][2:].upper(), text)


Named = tuple[str, str, str | None]  # (identifier type, raw value, phone region hint)


def named(stream: str, payload: Any, where: str | None) -> list[Named]:
    """Every identifier a payload of `stream` names, raw, with the region hint of its phones, read at `where` (the
    stream's `region_path`, found once by the caller rather than once a record)."""
    paths = PERSON_PATHS[stream]
    found = []
    for id_type, dotted_paths in paths.items():
        blocker = ANONYMOUS_UNLESS.get(id_type)
        if blocker and payload_value(payload, paths[blocker][0]) is not None:
            continue
        region = payload_value(payload, where) if where and id_type == "phone" else None
        found += [(id_type, raw, region) for d in dotted_paths if (raw := payload_value(payload, d)) is not None]
    return found


def forms(value: Named, rules: Rules) -> list[tuple[str, str]]:
    """The (type, value) pairs identity holds for one raw identifier (an address may also give its provider's
    canonical form); record ids are taken as written."""
    id_type, raw, region = value
    return [(id_type, raw)] if id_type.startswith("record:") else value_forms(id_type, raw, region, rules)


def identify(conn: duckdb.DuckDBPyConnection, table: str, stream: str, rules: Rules) -> None:
    """Add to the temp table `_payload_identifiers(raw_table, stream, landing_id, id_type, value, region)` every
    identifier the landed rows of `table` name, normalised, with the region hint a phone was read with: the raw
    values are read in SQL, their distinct ones normalised in Python, and joined back."""
    paths = PERSON_PATHS[stream]
    where = region_path(stream, rules)
    params: dict[str, str] = {}
    selects = []
    for id_type, dotted_paths in paths.items():
        blocker = ANONYMOUS_UNLESS.get(id_type)
        guard = ""
        if blocker:
            params[f"guard_{id_type}"] = json_path(paths[blocker][0])
            guard = f" WHERE json_extract_string(payload, $guard_{id_type}) IS NULL"
        region = "NULL"
        if where and id_type == "phone":
            params["region"], region = json_path(where), "json_extract_string(payload, $region)"
        for dotted in dotted_paths:
            name = f"_{len(params)}"
            params[f"type{name}"], params[f"path{name}"] = id_type, json_path(dotted)
            selects.append(f"SELECT landing_id, $type{name} AS id_type, json_extract_string(payload, $path{name})"
                           f" AS raw_value, {region}::VARCHAR AS region FROM {table}{guard}")  # fmt: skip
    conn.execute(
        f"CREATE OR REPLACE TEMP TABLE _payload_raw AS SELECT * FROM ({' UNION ALL '.join(selects)})"
        " WHERE raw_value IS NOT NULL",
        params,
    )
    forms = known_forms(conn, "(SELECT * FROM _payload_raw WHERE NOT starts_with(id_type, 'record:'))", rules)
    conn.register("_payload_forms", forms.astype("string"))
    try:
        conn.execute(
            """
            INSERT INTO _payload_identifiers
            SELECT $table, $stream, r.landing_id, f.id_type, f.value, r.region
            FROM _payload_raw r
            JOIN _payload_forms f ON f.source_type = r.id_type AND f.raw_value = r.raw_value
                                 AND f.region IS NOT DISTINCT FROM r.region
            UNION ALL
            SELECT $table, $stream, landing_id, id_type, raw_value, NULL FROM _payload_raw
            WHERE starts_with(id_type, 'record:')
            """,
            {"table": table, "stream": stream},
        )
    finally:
        conn.unregister("_payload_forms")

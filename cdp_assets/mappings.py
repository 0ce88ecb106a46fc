"""How each staging column is read from a raw payload, as data: a JSON path and the JSON kind it must have.

The staging engine builds its SQL from these mappings. A value it cannot read as promised is not cast away: a
field of the wrong JSON kind (a string where the API promises a number, an object where a scalar belongs, a
string where the object holding the field belongs) is named in `wrong_type_fields`, a time in another unit,
without a zone, unreadable or outside the contract's plausible range in `time_faults`, each with a reason the
data team can act on, and the row's contract sends it to quarantine. No such value reaches a typed column. A lenient
kind is the exception: an optional field whose noise must not cost the record (and so the person) its place in
staging reads as NULL when it cannot be read, and is never named as a fault.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Kind:
    accepted: tuple[str, ...]  # the JSON kinds (JSON_KIND) the API may send
    cast: str  # how such a value becomes the column's type ({j}: the value; {v}: a time's moment)
    expected: str  # what the API promises, as a reason says it
    time: str | None = None  # "unix" or "iso": held to the plausible range as well
    lenient: bool = False  # a value it cannot read is NULL, never a fault of the record


# A date of birth no living customer predates; one before it, or in the future, is a placeholder or a typing slip.
EARLIEST_BIRTH = "1900-01-01"
BIRTH_DATE = "TRY_CAST({j}->>'$' AS DATE)"
KINDS: dict[str, Kind] = {
    "text": Kind(("VARCHAR",), "{j}->>'$'", "a string"),
    "id": Kind(("VARCHAR", "INTEGER"), "{j}->>'$'", "a string or a 64-bit integer"),  # some APIs send ids as numbers
    "integer": Kind(("INTEGER",), "TRY_CAST({j}->>'$' AS BIGINT)", "a 64-bit integer"),
    "boolean": Kind(("BOOLEAN",), "TRY_CAST({j}->>'$' AS BOOLEAN)", "a boolean"),
    "text_boolean": Kind(("VARCHAR",), "TRY_CAST({j}->>'$' AS BOOLEAN)", "a string"),  # HubSpot: every property text
    "text_integer": Kind(("VARCHAR",), "TRY_CAST({j}->>'$' AS BIGINT)", "a string"),
    "unix_time": Kind(("INTEGER", "WIDE_INTEGER", "DOUBLE"), "to_timestamp({v})", "unix seconds", "unix"),
    "iso_time": Kind(("VARCHAR",), "{v}", "ISO-8601 text", "iso"),
    "text_list": Kind(("ARRAY",), "CAST({j}->>'$[*]' AS VARCHAR[])", "an array"),
    "association_ids": Kind(("ARRAY",), "CAST({j}->>'$[*].toObjectId' AS VARCHAR[])", "an array"),
    "json": Kind(("OBJECT", "ARRAY"), "{j}", "an object or an array"),
    # HubSpot sends a date property as YYYY-MM-DD text; people type birth dates badly, and a bad one loses nobody.
    "birth_date": Kind(
        ("VARCHAR",),
        # Bounded by the UTC day the record was last fetched, not the build's: the same raw types alike in every build.
        f"CASE WHEN {BIRTH_DATE} BETWEEN DATE '{EARLIEST_BIRTH}' AND timezone('UTC', extracted_at)::DATE "
        f"THEN {BIRTH_DATE} END",
        "a date as text",
        lenient=True,
    ),
}
# A value's JSON kind, with integers apart from other numbers and those beyond 64 bits apart from the rest: DuckDB
# reads every positive integer as UBIGINT, and one too wide for it as DOUBLE (its text kept whole).
JSON_KIND = (
    "CASE WHEN json_type({x}) IN ('BIGINT', 'UBIGINT') AND TRY_CAST({x}->>'$' AS BIGINT) IS NOT NULL THEN 'INTEGER'"
    " WHEN json_type({x}) IN ('UBIGINT', 'DOUBLE') AND regexp_full_match({x}::VARCHAR, '-?[0-9]+') THEN 'WIDE_INTEGER'"
    " ELSE json_type({x}) END"
)
# A JSON kind as a reason says it.
DESCRIBED_KIND = (
    "CASE {k} WHEN 'VARCHAR' THEN 'a string' WHEN 'BOOLEAN' THEN 'a boolean' WHEN 'OBJECT' THEN 'an object'"
    " WHEN 'ARRAY' THEN 'an array' WHEN 'INTEGER' THEN 'an integer' WHEN 'DOUBLE' THEN 'a number'"
    " WHEN 'WIDE_INTEGER' THEN CASE WHEN starts_with({j}::VARCHAR, '-') THEN 'an integer below -2^63'"
    " ELSE 'an integer above 2^63' END ELSE lower({k}) END"
)
# ISO-8601 text with a zone after its time of day (`Z`, `+02:00`, `-0500`); a date alone has none either.
ZONED = r"[0-9]{2}:[0-9]{2}(:[0-9]{2}([.,][0-9]+)?)?\s*([zZ]|[+-][0-9]{2}(:?[0-9]{2})?)$"
# The candidates query's parameters: the contract's plausible range (`cdp_assets/contracts.py`).
SINCE, UNTIL, SPAN = "$plausible_since", "$plausible_until", "$plausible_span"


@dataclass(frozen=True)
class Column:
    name: str
    path: str  # a DuckDB JSON path into the payload; keys starting with $ are quoted
    kind: str


def columns(*specs: tuple[str, str, str]) -> tuple[Column, ...]:
    return tuple(Column(name, path, kind) for name, path, kind in specs)


MAPPINGS: dict[str, tuple[Column, ...]] = {
    "stripe__customers": columns(
        ("email", "$.email", "text"),
        ("name", "$.name", "text"),
        ("phone", "$.phone", "text"),
        ("address_line1", "$.address.line1", "text"),
        ("address_city", "$.address.city", "text"),
        ("address_postal_code", "$.address.postal_code", "text"),
        ("address_country", "$.address.country", "text"),
        ("currency", "$.currency", "text"),
        ("balance_cents", "$.balance", "integer"),
        ("product_user_id", "$.metadata.product_user_id", "text"),
        ("created_at", "$.created", "unix_time"),
    ),
    "stripe__subscriptions": columns(
        ("customer_id", "$.customer", "text"),
        ("status", "$.status", "text"),
        ("price_id", "$.items.data[0].price.id", "text"),
        ("product_id", "$.items.data[0].price.product", "text"),
        ("unit_amount_cents", "$.items.data[0].price.unit_amount", "integer"),
        ("quantity", "$.items.data[0].quantity", "integer"),
        ("currency", "$.items.data[0].price.currency", "text"),
        ("billing_interval", "$.items.data[0].price.recurring.interval", "text"),
        ("cancel_at_period_end", "$.cancel_at_period_end", "boolean"),
        ("created_at", "$.created", "unix_time"),
        ("canceled_at", "$.canceled_at", "unix_time"),
        ("current_period_start", "$.items.data[0].current_period_start", "unix_time"),
        ("current_period_end", "$.items.data[0].current_period_end", "unix_time"),
    ),
    "stripe__invoices": columns(
        ("customer_id", "$.customer", "text"),
        ("subscription_id", "$.subscription", "text"),
        ("status", "$.status", "text"),
        ("amount_due_cents", "$.amount_due", "integer"),
        ("amount_paid_cents", "$.amount_paid", "integer"),
        ("currency", "$.currency", "text"),
        ("created_at", "$.created", "unix_time"),
        ("period_start", "$.period_start", "unix_time"),
        ("period_end", "$.period_end", "unix_time"),
    ),
    "hubspot__contacts": columns(
        ("email", "$.properties.email", "text"),
        ("first_name", "$.properties.firstname", "text"),
        ("last_name", "$.properties.lastname", "text"),
        ("phone", "$.properties.phone", "text"),
        ("company_name", "$.properties.company", "text"),
        ("job_title", "$.properties.jobtitle", "text"),
        ("lifecycle_stage", "$.properties.lifecyclestage", "text"),
        ("city", "$.properties.city", "text"),
        ("country", "$.properties.country", "text"),
        ("street_address", "$.properties.address", "text"),
        ("postal_code", "$.properties.zip", "text"),
        ("date_of_birth", "$.properties.date_of_birth", "birth_date"),
        ("email_opt_out", "$.properties.hs_email_optout", "text_boolean"),
        ("created_at", "$.createdAt", "iso_time"),
        ("updated_at", "$.updatedAt", "iso_time"),
    ),
    "hubspot__companies": columns(
        ("name", "$.properties.name", "text"),
        ("domain", "$.properties.domain", "text"),
        ("industry", "$.properties.industry", "text"),
        ("city", "$.properties.city", "text"),
        ("country", "$.properties.country", "text"),
        ("employee_count", "$.properties.numberofemployees", "text_integer"),
        ("created_at", "$.createdAt", "iso_time"),
        ("updated_at", "$.updatedAt", "iso_time"),
    ),
    "hubspot__contact_companies": columns(
        ("company_ids", "$.to", "association_ids"),
        ("primary_company_id", "$.to[0].toObjectId", "id"),
    ),
    "zendesk__users": columns(
        ("email", "$.email", "text"),
        ("name", "$.name", "text"),
        ("phone", "$.phone", "text"),
        ("external_id", "$.external_id", "text"),
        ("role", "$.role", "text"),
        ("is_active", "$.active", "boolean"),
        ("is_suspended", "$.suspended", "boolean"),
        ("organization_id", "$.organization_id", "id"),
        ("tags", "$.tags", "text_list"),
        ("time_zone", "$.time_zone", "text"),
        ("locale", "$.locale", "text"),
        ("created_at", "$.created_at", "iso_time"),
        ("updated_at", "$.updated_at", "iso_time"),
    ),
    "zendesk__tickets": columns(
        ("subject", "$.subject", "text"),
        ("description", "$.description", "text"),
        ("status", "$.status", "text"),
        ("priority", "$.priority", "text"),
        ("ticket_type", "$.type", "text"),
        ("requester_id", "$.requester_id", "id"),
        ("submitter_id", "$.submitter_id", "id"),
        ("assignee_id", "$.assignee_id", "id"),
        ("organization_id", "$.organization_id", "id"),
        ("channel", "$.via.channel", "text"),
        ("satisfaction_score", "$.satisfaction_rating.score", "text"),
        ("tags", "$.tags", "text_list"),
        ("created_at", "$.created_at", "iso_time"),
        ("updated_at", "$.updated_at", "iso_time"),
    ),
    "klaviyo__profiles": columns(
        ("email", "$.attributes.email", "text"),
        ("phone_number", "$.attributes.phone_number", "text"),
        ("external_id", "$.attributes.external_id", "text"),
        ("first_name", "$.attributes.first_name", "text"),
        ("last_name", "$.attributes.last_name", "text"),
        ("organization", "$.attributes.organization", "text"),
        ("title", "$.attributes.title", "text"),
        ("locale", "$.attributes.locale", "text"),
        ("city", "$.attributes.location.city", "text"),
        ("country", "$.attributes.location.country", "text"),
        ("street_address", "$.attributes.location.address1", "text"),
        ("postal_code", "$.attributes.location.zip", "text"),
        ("time_zone", "$.attributes.location.timezone", "text"),
        ("email_marketing_consent", "$.attributes.subscriptions.email.marketing.consent", "text"),
        ("email_marketing_consent_at", "$.attributes.subscriptions.email.marketing.consent_timestamp", "iso_time"),
        ("created_at", "$.attributes.created", "iso_time"),
        ("updated_at", "$.attributes.updated", "iso_time"),
        ("last_event_at", "$.attributes.last_event_date", "iso_time"),
    ),
    "klaviyo__events": columns(
        ("profile_id", "$.relationships.profile.data.id", "text"),
        ("metric_id", "$.relationships.metric.data.id", "text"),
        ("occurred_at", "$.attributes.datetime", "iso_time"),
        ("event_uuid", "$.attributes.uuid", "text"),
        ("properties", "$.attributes.event_properties", "json"),
    ),
    "klaviyo__metrics": columns(
        ("name", "$.attributes.name", "text"),
        ("integration", "$.attributes.integration.name", "text"),
        ("created_at", "$.attributes.created", "iso_time"),
        ("updated_at", "$.attributes.updated", "iso_time"),
    ),
    "mixpanel__events": columns(
        ("event_name", "$.event", "text"),
        ("distinct_id", "$.properties.distinct_id", "text"),
        ("device_id", '$.properties."$device_id"', "text"),
        ("user_id", '$.properties."$user_id"', "text"),
        ("insert_id", '$.properties."$insert_id"', "text"),
        ("occurred_at", "$.properties.time", "unix_time"),
        ("utm_source", "$.properties.utm_source", "text"),
        ("utm_medium", "$.properties.utm_medium", "text"),
        ("utm_campaign", "$.properties.utm_campaign", "text"),
        ("email", "$.properties.email", "text"),
        ("properties", "$.properties", "json"),
    ),
}


@dataclass(frozen=True)
class Selects:
    """The parts of an entity's candidates query; they read `j`, the entity's paths extracted from the payload in
    one parse (`paths_sql`: the columns, then the objects and arrays holding them), `k`, their JSON kinds, and `t`,
    the faults of its times."""

    kinds: str  # the JSON kind of each of `j`, as `k`
    time_checks: str  # per time column, why it cannot be read as a plausible moment (or NULL), as `t`
    columns: str  # the typed columns
    wrong_types: str  # a list expression: each field of the wrong JSON kind, with the reason
    time_faults: str  # a list expression: each time at fault, with the reason


def select_sql(entity: str) -> Selects:
    mapped = MAPPINGS[entity]
    values, wrong, times = [], [], []
    for position, column in enumerate(mapped, start=1):
        kind, j, k, field = KINDS[column.kind], f"j[{position}]", f"k[{position}]", _field(column.path)
        accepted = ", ".join(f"'{name}'" for name in kind.accepted)
        cast = kind.cast.format(j=j, v=_time_value(kind, j))
        readable = f"{k} IN ({accepted})"
        if kind.time:
            times.append(f"CASE WHEN {readable} THEN {_time_fault(kind, j, field)} END")
            readable += f" AND t[{len(times)}] IS NULL"
        values.append(f"CASE WHEN {readable} THEN {cast} END AS {column.name}")
        if not kind.lenient:
            wrong.append(_wrong_kind(j, k, field, accepted, kind.expected))
    for position, (path, json_kind) in enumerate(_containers(entity).items(), start=len(mapped) + 1):
        expected = "an object" if json_kind == "OBJECT" else "an array"
        wrong.append(_wrong_kind(f"j[{position}]", f"k[{position}]", _field(path), f"'{json_kind}'", expected))
    kinds = f"list_transform(j, lambda x: {JSON_KIND.format(x='x')})"
    time_checks = f"[{', '.join(times)}]::VARCHAR[]"
    faults = "list_filter(t, lambda m: m IS NOT NULL)"
    return Selects(kinds, time_checks, ",\n".join(values), _present(wrong), faults)


def paths_sql(entity: str) -> str:
    paths = [column.path for column in MAPPINGS[entity]] + list(_containers(entity))
    return "[" + ", ".join(f"'{path}'" for path in paths) + "]"


STEP = re.compile(r'\.("[^"]*"|[^.\[]+)|\[([0-9]+)\]')


def _containers(entity: str) -> dict[str, str]:
    """Every object or array a mapped path runs through (the whole record included), with the JSON kind it must
    have: a string where the API promises an object hides every field inside it."""
    found: dict[str, str] = {}
    for column in MAPPINGS[entity]:
        steps = list(STEP.finditer(column.path))
        for n, step in enumerate(steps):
            parent = "$" + "".join(s.group(0) for s in steps[:n])
            found.setdefault(parent, "ARRAY" if step.group(2) is not None else "OBJECT")
    return found


def source_fields(entity: str) -> dict[str, str]:
    """Staging column -> the field of the source's record it is read from, as quarantine reasons name it."""
    return {"record_id": "id", **{column.name: _field(column.path) for column in MAPPINGS[entity]}}


def _field(path: str) -> str:
    """A path as the source names the field: `properties.$device_id`; the whole record is `record`."""
    return path.removeprefix("$").removeprefix(".").replace('"', "") or "record"


def _wrong_kind(j: str, k: str, field: str, accepted: str, expected: str) -> str:
    got = DESCRIBED_KIND.format(j=j, k=k)
    return (
        f"CASE WHEN {k} NOT IN ('NULL', {accepted})"
        f" THEN '{field}: expected {expected}, got ' || {got} || ': ' || left({j}::VARCHAR, 200) END"
    )


def _time_value(kind: Kind, j: str) -> str:
    """The moment a time field holds, before the range is checked."""
    if kind.time == "unix":
        return f"TRY_CAST({j}->>'$' AS DOUBLE)"
    return f"TRY_CAST({j}->>'$' AS TIMESTAMPTZ)" if kind.time == "iso" else ""


def _time_fault(kind: Kind, j: str, field: str) -> str:
    """Why a time of an accepted JSON kind cannot be read as a plausible moment, or NULL."""
    value, text = _time_value(kind, j), f"left({j}->>'$', 200)"
    outside = f"'{field}: outside ' || {SPAN} || ': ' || {text}"
    if kind.time == "unix":
        plausible = f"{value} > epoch({SINCE}) AND {value} < epoch({UNTIL})"
        milliseconds = f"{value} / 1000 > epoch({SINCE}) AND {value} / 1000 < epoch({UNTIL})"
        return (
            f"CASE WHEN {plausible} THEN NULL WHEN {milliseconds} THEN '{field}: unix time in milliseconds: ' || {text}"
            f" ELSE {outside} END"
        )
    return (
        f"CASE WHEN {value} IS NULL THEN '{field}: not an ISO-8601 time: ' || {text}"
        f" WHEN NOT regexp_matches({j}->>'$', '{ZONED}') THEN '{field}: time without a zone: ' || {text}"
        f" WHEN {value} <= {SINCE} OR {value} >= {UNTIL} THEN {outside} END"
    )


def _present(markers: list[str]) -> str:
    return f"list_filter([{', '.join(markers)}], lambda m: m IS NOT NULL)" if markers else "[]::VARCHAR[]"

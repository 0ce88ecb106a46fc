"""How each staging column is read from a raw payload, as data: a JSON path and the JSON kind it must have.

The staging engine builds its SQL from these mappings. A value of the wrong JSON kind
(a string where the API promises a number, an object where a scalar belongs) is not
cast away: the row carries it in `_wrong_types` and its contract sends it to quarantine.
"""

from __future__ import annotations

from dataclasses import dataclass

# JSON kinds accepted per column kind, and how a value of that kind becomes the column's type ({j}: the value).
KINDS: dict[str, tuple[tuple[str, ...], str]] = {
    "text": (("VARCHAR",), "{j}->>'$'"),
    "id": (("VARCHAR", "BIGINT", "UBIGINT"), "{j}->>'$'"),  # ids some APIs send as numbers
    "integer": (("BIGINT", "UBIGINT"), "TRY_CAST({j}->>'$' AS BIGINT)"),
    "boolean": (("BOOLEAN",), "TRY_CAST({j}->>'$' AS BOOLEAN)"),
    "text_boolean": (("VARCHAR",), "TRY_CAST({j}->>'$' AS BOOLEAN)"),  # HubSpot sends every property as text
    "text_integer": (("VARCHAR",), "TRY_CAST({j}->>'$' AS BIGINT)"),
    "unix_time": (("BIGINT", "UBIGINT", "DOUBLE"), "TRY(to_timestamp(TRY_CAST({j}->>'$' AS DOUBLE)))"),
    "iso_time": (("VARCHAR",), "TRY_CAST({j}->>'$' AS TIMESTAMPTZ)"),
    "text_list": (("ARRAY",), "CAST({j}->>'$[*]' AS VARCHAR[])"),
    "association_ids": (("ARRAY",), "CAST({j}->>'$[*].toObjectId' AS VARCHAR[])"),
    "json": (("OBJECT", "ARRAY"), "{j}"),
}


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


def select_sql(entity: str) -> tuple[str, str]:
    """The typed columns of an entity, and a list expression naming every value of the wrong JSON kind.

    Both read `j`, the list of the entity's paths extracted from the payload in one parse.
    """
    values, markers = [], []
    for position, column in enumerate(MAPPINGS[entity], start=1):
        accepted, cast = KINDS[column.kind]
        j = f"j[{position}]"
        kinds = ", ".join(f"'{kind}'" for kind in accepted)
        values.append(f"CASE WHEN json_type({j}) IN ({kinds}) THEN {cast.format(j=j)} END AS {column.name}")
        markers.append(
            f"CASE WHEN json_type({j}) NOT IN ('NULL', {kinds})"
            f" THEN '{column.name}: ' || json_type({j}) || ' ' || left({j}::VARCHAR, 200) END"
        )
    return ",\n".join(values), f"list_filter([{', '.join(markers)}], lambda m: m IS NOT NULL)"


def paths_sql(entity: str) -> str:
    return "[" + ", ".join(f"'{column.path}'" for column in MAPPINGS[entity]) + "]"

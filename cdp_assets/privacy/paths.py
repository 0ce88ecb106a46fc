"""Where each stream's payload names a person, as data, and the SQL that reads those places.

The record's own id, the addresses, numbers and logins it carries, and the parent records a
child points at (a subscription's customer, a ticket's requester). Values are read as the
subject tables hold them: addresses trimmed and lowercased, phones as their digits.
"""

from __future__ import annotations

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
CHILD_STREAMS = tuple(s for s in PERSON_PATHS if s not in PERSON_STREAMS)
ANONYMOUS_UNLESS = {"device_id": "user_id"}  # a device identifies the person only where no login does


def json_path(dotted: str) -> str:
    """`properties.$user_id` -> `$.properties."$user_id"` (DuckDB quotes keys that are not plain names)."""
    return "$." + ".".join(f'"{key}"' if not key.isidentifier() else key for key in dotted.split("."))


def normalised_sql(id_type: str, path_param: str) -> str:
    """The SQL reading one path of `payload` as the identity layer would hold the value for matching."""
    text = f"json_extract_string(payload, ${path_param})"
    if id_type == "email":
        return f"lower(trim({text}))"
    if id_type == "phone":
        return f"regexp_replace({text}, '[^0-9]', '', 'g')"
    return text


def typed_values(stream: str, params: dict[str, str]) -> list[tuple[str, str]]:
    """(parameter naming the matched type, SQL of the value) for every place `stream`'s payload names a person,
    as the subject tables hold it (phones as digits); paths and types are added to `params`."""
    found = []
    paths = PERSON_PATHS[stream]
    for id_type, dotted_paths in paths.items():
        for dotted in dotted_paths:
            path, kind = f"_path_{len(params)}", f"_type_{len(params)}"
            params[path] = json_path(dotted)
            params[kind] = "phone_digits" if id_type == "phone" else id_type
            value = normalised_sql(id_type, path)
            blocker = ANONYMOUS_UNLESS.get(id_type)
            if blocker:
                guard = f"_path_{len(params)}"
                params[guard] = json_path(paths[blocker][0])
                value = f"CASE WHEN json_extract_string(payload, ${guard}) IS NULL THEN {value} END"
            found.append((kind, value))
    return found

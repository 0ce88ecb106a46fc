"""HubSpot CRM v3 objects (list + search + contacts batch upsert and read) and the v4 contact->company batch read.

Lists page by numeric id; search pages by offset and refuses to go past the
configured cap (10,000), which is what forces connectors to re-anchor their queries.
The batch upsert writes into the same account the lists serve, and refuses a whole
batch when one input names an undefined property or a value outside its options.
"""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime
from functools import partial
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from sandbox.apis import (
    COLUMNS,
    ApiError,
    Context,
    Service,
    bearer,
    decode_cursor,
    encode_cursor,
    int_param,
    iso_ms,
    keyset,
    parse_json,
    to_ms,
)
from sandbox.faults import Quota
from sandbox.store import ID_WIDTH, NUMERIC_ID, numeric_id

OBJECTS = {  # object -> (stream, its last-modified property)
    "contacts": ("hubspot.contacts", "lastmodifieddate"),
    "companies": ("hubspot.companies", "hs_lastmodifieddate"),
}
BY_ID = (NUMERIC_ID,)  # numeric id order through records_by_numeric_id_key
COMPARISONS = {"EQ": "=", "NEQ": "!=", "GT": ">", "GTE": ">=", "LT": "<", "LTE": "<="}
# What the `query` field searches: each object's default searchable properties.
SEARCHABLE = {
    "contacts": ("firstname", "lastname", "email", "phone", "hs_additional_emails", "fax", "mobilephone", "company"),
    "companies": ("name", "domain", "website", "phone"),
}
PROPERTY_NAME = re.compile(r"^[A-Za-z0-9_]+$")
GLOB_SPECIAL = re.compile(r"([\[?])")  # taken literally in a token; `*` stays a wildcard
PROPERTY = "json_extract(payload, ?)"  # a property's value; the parameter is its JSON path
# Contact properties every portal has, with the options of the enumerations among them.
STANDARD_CONTACT_PROPERTIES: dict[str, tuple[str, ...]] = {
    "email": (), "firstname": (), "lastname": (), "phone": (), "company": (), "jobtitle": (), "city": (),
    "country": (), "hs_email_optout": ("true", "false"),
    "lifecyclestage": ("subscriber", "lead", "marketingqualifiedlead", "salesqualifiedlead", "opportunity",
                       "customer", "evangelist", "other"),
}  # fmt: skip
READ_ONLY_PROPERTIES = ("createdate", "lastmodifieddate", "hs_object_id")
NO_AUTH = (
    "Authentication credentials not found. This API supports OAuth 2.0 authentication and you can find "
    "more details at https://developers.hubspot.com/docs/methods/auth/oauth-overview"
)


def service(ctx: Context) -> Service:
    endpoints: list[Any] = []
    for name in OBJECTS:
        endpoints.append((f"/crm/v3/objects/{name}", partial(_list, ctx, name), ("GET",)))
        endpoints.append((f"/crm/v3/objects/{name}/search", partial(_search, ctx, name), ("POST",)))
    endpoints.append(("/crm/v4/associations/contacts/companies/batch/read", partial(_associations, ctx), ("POST",)))
    endpoints.append(("/crm/v3/objects/contacts/batch/upsert", partial(_upsert, ctx), ("POST",)))
    endpoints.append(("/crm/v3/objects/contacts/batch/read", partial(_read, ctx), ("POST",)))
    endpoints.append(("/crm/v3/objects/contacts/gdpr-delete", partial(_gdpr_delete, ctx), ("POST",)))
    return Service(
        name="hubspot",
        endpoints=endpoints,
        authenticate=partial(_authenticate, ctx),
        render=_render,
        throttled=_throttled,
        # Writes count against the same account limit as reads.
        limits=lambda path: ("ten_secondly", "search") if path.endswith("/search") else ("ten_secondly",),
        headers=_quota_headers,
    )


def _authenticate(ctx: Context, request: Request) -> None:
    if bearer(request) != ctx.config.credentials.hubspot.token:
        raise ApiError(401, NO_AUTH)


def _render(exc: ApiError) -> Response:
    body = {
        "status": "error",
        "message": exc.message,
        "correlationId": str(uuid.uuid4()),
        "category": _category(exc.status),
    }
    return JSONResponse(body, status_code=exc.status)


def _category(status: int) -> str:
    return {401: "INVALID_AUTHENTICATION", 404: "OBJECT_NOT_FOUND"}.get(
        status, "VALIDATION_ERROR" if status < 500 else "INTERNAL_ERROR"
    )


def _throttled(limit: str, retry_after: float) -> Response:
    """No Retry-After: HubSpot only names the policy that was exhausted."""
    policy, label = ("SECONDLY", "secondly") if limit == "search" else ("TEN_SECONDLY_ROLLING", "ten_secondly_rolling")
    body = {
        "status": "error",
        "message": f"You have reached your {label} limit.",
        "errorType": "RATE_LIMIT",
        "correlationId": str(uuid.uuid4()),
        "policyName": policy,
    }
    return JSONResponse(body, status_code=429)


def _quota_headers(quotas: list[Quota]) -> dict[str, str]:
    for q in quotas:
        if q.name == "ten_secondly":
            return {
                "X-HubSpot-RateLimit-Max": str(q.max),
                "X-HubSpot-RateLimit-Remaining": str(q.remaining),
                "X-HubSpot-RateLimit-Interval-Milliseconds": str(int(q.seconds * 1000)),
            }
    return {}


def _list(ctx: Context, name: str, request: Request, body: bytes) -> Response:
    stream, modified = OBJECTS[name]
    query = request.query_params
    limit = int_param(query.get("limit"), "limit", 10, 1, ctx.config.page_sizes.hubspot_list)
    archived = query.get("archived", "false").lower() == "true"
    position = None
    if query.get("after"):
        last = str(decode_cursor(query["after"], "after"))
        if not (last.isascii() and last.isdigit()) or len(last) > ID_WIDTH:
            raise ApiError(400, "Invalid after token.", param="after")
        position = (numeric_id(last),)
    rows, has_more = keyset(
        ctx.store, stream, BY_ID, limit, where="archived = ?", params=(int(archived),), after=position
    )
    wanted = _wanted(query.getlist("properties"), modified)
    page: dict[str, Any] = {"results": [_shape(row, wanted) for row in rows]}
    if has_more:
        token = encode_cursor(rows[-1]["id"])
        page["paging"] = {"next": {"after": token, "link": str(request.url.include_query_params(after=token))}}
    return JSONResponse(page)


def _wanted(requested: list[str], modified: str) -> set[str] | None:
    names = {p.strip() for item in requested for p in item.split(",") if p.strip()}
    return names | {"hs_object_id", "createdate", modified} if names else None


def _shape(row: Any, wanted: set[str] | None) -> dict[str, Any]:
    obj = json.loads(row["payload"])
    if wanted is not None:
        props = obj.get("properties", {})
        obj["properties"] = {p: props.get(p) for p in sorted(wanted)}
    if row["archived"]:
        obj["archived"] = True
        obj.setdefault("archivedAt", iso_ms(row["updated"]))
    return obj


def _search(ctx: Context, name: str, request: Request, body: bytes) -> Response:
    stream, modified = OBJECTS[name]
    spec = _object_body(body)
    _check_search_shape(spec)
    limit = int_param(spec.get("limit"), "limit", 10, 1, ctx.config.page_sizes.hubspot_search)
    offset = int_param(spec.get("after"), "after", 0, 0)
    cap = ctx.config.hubspot_search_cap
    if offset >= cap:
        raise ApiError(400, f"Search results are capped at {cap} per query; narrow the filters to read further.")
    count, page_sql, params = search_sql(stream, spec, modified)
    conn = ctx.store.connect()
    total = conn.execute(count, params).fetchone()[0]
    take = min(limit, cap - offset)
    rows = conn.execute(page_sql, (*params, take, offset)).fetchall()
    wanted = _wanted(spec.get("properties") or [], modified)
    page: dict[str, Any] = {"total": total, "results": [_shape(row, wanted) for row in rows]}
    if offset + len(rows) < total:
        page["paging"] = {"next": {"after": str(offset + len(rows))}}
    return JSONResponse(page)


def _object_body(body: bytes) -> dict[str, Any]:
    spec = parse_json(body)
    if not isinstance(spec, dict):
        raise ApiError(400, "Invalid input JSON: the request body must be a JSON object.")
    return spec


def _check_search_shape(spec: dict[str, Any]) -> None:
    """A search body's fields have the kinds HubSpot's schema gives them, else a 400 naming the field."""
    groups, properties = spec.get("filterGroups") or [], spec.get("properties") or []
    if not isinstance(groups, list) or not all(isinstance(g, dict) for g in groups):
        raise ApiError(400, "Invalid input JSON: filterGroups must be a list of objects.")
    for group in groups:
        filters = group.get("filters") or []
        if not isinstance(filters, list) or not all(isinstance(f, dict) for f in filters):
            raise ApiError(400, "Invalid input JSON: filterGroups[].filters must be a list of objects.")
        if not all(isinstance(f.get("operator", ""), str) for f in filters):
            raise ApiError(400, "Invalid input JSON: a filter's operator must be a string.")
    if not isinstance(properties, list) or not all(isinstance(p, str) for p in properties):
        raise ApiError(400, "Invalid input JSON: properties must be a list of strings.")


def search_sql(stream: str, spec: dict[str, Any], modified: str) -> tuple[str, str, list[Any]]:
    """A search over `stream`'s live objects: its count, its page (LIMIT and OFFSET left as the last two
    parameters) and the parameters both share."""
    where, params = _filter_groups(spec.get("filterGroups") or [], modified)
    text = spec.get("query")
    if text is not None:
        where = f"({where}) AND ({_full_text(stream, text, params)})"
    base = f"FROM records WHERE stream = ? AND archived = 0 AND ({where})"
    order = _order(spec.get("sorts") or [], modified)
    return f"SELECT COUNT(*) {base}", f"SELECT {COLUMNS} {base} ORDER BY {order} LIMIT ? OFFSET ?", [stream, *params]


def _full_text(stream: str, text: Any, params: list[Any]) -> str:
    """`query`: objects with the text, in any case, inside one of their default searchable properties."""
    if not isinstance(text, str):
        raise ApiError(400, "query must be a string.")
    names = SEARCHABLE[stream.removeprefix("hubspot.")]
    for name in names:
        params.extend([f'$.properties."{name}"', text.lower()])
    return " OR ".join(["instr(lower(json_extract(payload, ?)), ?) > 0"] * len(names))


def _filter_groups(groups: list[Any], modified: str) -> tuple[str, list[Any]]:
    """OR of groups, AND within a group, with HubSpot's documented size limits."""
    if len(groups) > 5 or sum(len(g.get("filters") or []) for g in groups) > 25:
        raise ApiError(400, "At most 5 filterGroups with 25 filters in total are allowed.")
    ors: list[str] = []
    params: list[Any] = []
    for group in groups:
        filters = group.get("filters") or []
        if len(filters) > 10:
            raise ApiError(400, "At most 10 filters per filterGroup are allowed.")
        ands = [_filter(f, modified, params) for f in filters]
        ors.append(" AND ".join(ands) or "1")
    return (" OR ".join(f"({o})" for o in ors) or "1"), params


def _filter(spec: dict[str, Any], modified: str, params: list[Any]) -> str:
    """One filter as SQL. Values compare as HubSpot keeps them, as text, except ids and the two dates."""
    prop, operator = spec.get("propertyName", ""), spec.get("operator", "")
    if not isinstance(prop, str) or not PROPERTY_NAME.match(prop):
        raise ApiError(400, f"Unsupported filter: {json.dumps(spec)}")
    column, value_of = _operand(prop, modified)
    if column == PROPERTY:
        params.append(f'$.properties."{prop}"')

    def values(*keys: str) -> list[Any]:
        found = [spec.get(key) for key in keys]
        if any(v is None or isinstance(v, dict | list) for v in found):
            raise ApiError(400, f"Filter {operator} on {prop} needs {' and '.join(keys)}: {json.dumps(spec)}")
        return [value_of(v) for v in found]

    if operator in COMPARISONS:
        params.extend(values("value"))
        return f"{column} {COMPARISONS[operator]} ?"
    if operator == "BETWEEN":
        params.extend(values("value", "highValue"))
        return f"{column} BETWEEN ? AND ?"
    if operator in ("IN", "NOT_IN"):
        listed = spec.get("values")
        if not isinstance(listed, list) or not listed or any(v is None or isinstance(v, dict | list) for v in listed):
            raise ApiError(400, f"Filter {operator} on {prop} needs a non-empty list of values: {json.dumps(spec)}")
        params.extend(value_of(v) for v in listed)
        marks = ", ".join("?" * len(listed))
        return f"{column} IN ({marks})" if operator == "IN" else f"COALESCE({column}, '') NOT IN ({marks})"
    if operator in ("HAS_PROPERTY", "NOT_HAS_PROPERTY"):
        has = f"COALESCE({column}, '') != ''"
        return has if operator == "HAS_PROPERTY" else f"NOT ({has})"
    if operator in ("CONTAINS_TOKEN", "NOT_CONTAINS_TOKEN"):
        # Tokens are the words of the value; `*` in the filter's value stands for any text.
        [token] = values("value")
        params.append("* " + GLOB_SPECIAL.sub(r"[\1]", str(token).lower()) + " *")
        contains = f"(' ' || lower(COALESCE({column}, '')) || ' ') GLOB ?"
        return contains if operator == "CONTAINS_TOKEN" else f"NOT ({contains})"
    raise ApiError(400, f"Unsupported filter operator {operator!r}: {json.dumps(spec)}")


def _operand(prop: str, modified: str) -> tuple[str, Any]:
    """The SQL a property is read with, and how a filter value becomes a comparable parameter."""
    if prop == "hs_object_id":
        return NUMERIC_ID, _object_id
    if prop == modified:
        return "updated", lambda value: to_ms(value, prop)
    if prop == "createdate":
        return "created * 1000", lambda value: to_ms(value, prop)
    return PROPERTY, _property_text


def _object_id(value: Any) -> str:
    digits = str(value)
    if not (digits.isascii() and digits.isdigit()) or len(digits) > ID_WIDTH:
        raise ApiError(400, f"hs_object_id must be numeric, got {value!r}")
    return numeric_id(digits)


def _order(sorts: Any, modified: str) -> str:
    """One sort, as an object (`propertyName`, `direction`) or, as the SDKs declare it, a property name
    (`-` before it for descending)."""
    if not isinstance(sorts, list) or len(sorts) > 1:
        raise ApiError(400, "sorts must be a list of at most one sort.")
    sort = sorts[0] if sorts else "hs_object_id"
    if isinstance(sort, str):
        prop, descending = sort.removeprefix("-"), sort.startswith("-")
    elif isinstance(sort, dict) and sort.get("direction", "ASCENDING") in ("ASCENDING", "DESCENDING"):
        prop, descending = sort.get("propertyName"), sort.get("direction") == "DESCENDING"
    else:
        raise ApiError(400, f"Invalid sort: {json.dumps(sort)}")
    keys = {"hs_object_id": BY_ID, modified: ("updated", "id"), "createdate": ("created", "id")}.get(prop)
    if keys is None:
        raise ApiError(400, f"Sorting by {prop!r} is not supported.")
    direction = "DESC" if descending else "ASC"
    return ", ".join(f"{k} {direction}" for k in keys)


def _associations(ctx: Context, request: Request, body: bytes) -> Response:
    started = datetime.now(UTC)
    spec = parse_json(body)
    inputs = spec.get("inputs") if isinstance(spec, dict) else None
    if not isinstance(inputs, list) or not all(isinstance(i, dict) and "id" in i for i in inputs):
        raise ApiError(400, 'Body must look like {"inputs": [{"id": "..."}]}.')
    if len(inputs) > ctx.config.page_sizes.hubspot_batch:
        raise ApiError(400, f"Batch read takes at most {ctx.config.page_sizes.hubspot_batch} inputs.")
    ids = [str(i["id"]) for i in inputs]
    sql = f"SELECT id, payload FROM records WHERE stream = ? AND archived = 0 AND id IN ({','.join('?' * len(ids))})"
    found = dict(ctx.store.connect().execute(sql, ("hubspot.contact_companies", *ids)).fetchall()) if ids else {}
    results = [json.loads(found[i]) for i in dict.fromkeys(ids) if i in found]
    stamp = "%Y-%m-%dT%H:%M:%S.%fZ"
    return JSONResponse(
        {
            "status": "COMPLETE",
            "results": results,
            "startedAt": started.strftime(stamp),
            "completedAt": datetime.now(UTC).strftime(stamp),
        }
    )


def _upsert(ctx: Context, request: Request, body: bytes) -> Response:
    """`POST /crm/v3/objects/contacts/batch/upsert` with `idProperty: email`: update by address, else create."""
    started = datetime.now(UTC)
    spec = parse_json(body)
    inputs = spec.get("inputs") if isinstance(spec, dict) else None
    if not isinstance(inputs, list) or not inputs:
        raise ApiError(400, 'Body must look like {"inputs": [{"id": "...", "idProperty": "email", "properties": {}}]}.')
    if len(inputs) > ctx.config.page_sizes.hubspot_upsert:
        raise ApiError(400, f"Batch upsert takes at most {ctx.config.page_sizes.hubspot_upsert} inputs.")
    options = {**STANDARD_CONTACT_PROPERTIES, **ctx.config.accounts.hubspot_contact_properties}
    problems: list[dict[str, Any]] = []
    upserts: list[tuple[str, dict[str, str]]] = []
    for item in inputs:
        if not isinstance(item, dict) or item.get("idProperty") != "email" or not isinstance(item.get("id"), str):
            raise ApiError(400, "Every input needs an `id` and `idProperty: email`.")
        email = item["id"].strip().lower()
        properties = item.get("properties") or {}
        if not email or not isinstance(properties, dict):
            raise ApiError(400, "Every input needs a non-empty `id` and an object of `properties`.")
        values = {name: _property_text(value) for name, value in properties.items()}
        problems += [_invalid(name, value, options) for name, value in values.items()]
        upserts.append((email, values))
    problems = [p for p in problems if p is not None]
    if problems:
        raise ApiError(400, f"Property values were not valid: {json.dumps(problems)}")
    stamp = "%Y-%m-%dT%H:%M:%S.%fZ"
    results = [
        {
            "id": record.id,
            "new": new,
            "properties": record.payload["properties"],
            "createdAt": record.payload["createdAt"],
            "updatedAt": record.payload["updatedAt"],
            "archived": False,
        }
        for record, new in ctx.accounts.upsert_contacts(upserts)
    ]
    return JSONResponse(
        {
            "status": "COMPLETE",
            "results": results,
            "requestedAt": started.strftime(stamp),
            "startedAt": started.strftime(stamp),
            "completedAt": datetime.now(UTC).strftime(stamp),
        }
    )


def _read(ctx: Context, request: Request, body: bytes) -> Response:
    """`POST /crm/v3/objects/contacts/batch/read`: contacts by id, or by a unique property (`idProperty: email`),
    with the properties asked for (null when unset) and the defaults; ids not found are listed in a 207's errors."""
    started = datetime.now(UTC)
    spec = parse_json(body)
    inputs = spec.get("inputs") if isinstance(spec, dict) else None
    if not isinstance(inputs, list) or not all(isinstance(i, dict) and isinstance(i.get("id"), str) for i in inputs):
        raise ApiError(400, 'Body must look like {"inputs": [{"id": "..."}], "properties": ["..."]}.')
    if len(inputs) > ctx.config.page_sizes.hubspot_upsert:  # the v3 object batch endpoints take 100 inputs
        raise ApiError(400, f"Batch read takes at most {ctx.config.page_sizes.hubspot_upsert} inputs.")
    id_property, wanted = spec.get("idProperty") or "hs_object_id", spec.get("properties") or []
    if id_property not in ("hs_object_id", "email") or not all(isinstance(p, str) for p in wanted):
        raise ApiError(400, f"Cannot read contacts by {id_property!r}; `properties` must be a list of names.")
    ids = list(dict.fromkeys(i["id"] for i in inputs))
    if id_property == "email":
        found = ctx.accounts.contact_ids([i.strip().lower() for i in ids])
        by_id = {i: found.get(i.strip().lower()) for i in ids}
    else:
        by_id = {i: i for i in ids}
    results, missing = [], []
    for given, contact_id in by_id.items():
        record = ctx.store.get("hubspot.contacts", contact_id) if contact_id else None
        if record is None or record.archived:
            missing.append(given)
            continue
        held = record.payload["properties"]
        properties = {name: held.get(name) for name in (*READ_ONLY_PROPERTIES, *wanted)}
        results.append({"id": record.id, "properties": properties, "createdAt": record.payload["createdAt"],
                        "updatedAt": record.payload.get("updatedAt", record.payload["createdAt"]),
                        "archived": False})  # fmt: skip
    stamp = "%Y-%m-%dT%H:%M:%S.%fZ"
    answer: dict[str, Any] = {"status": "COMPLETE", "results": results, "startedAt": started.strftime(stamp),
                              "completedAt": datetime.now(UTC).strftime(stamp)}  # fmt: skip
    if missing:
        answer["numErrors"] = 1
        answer["errors"] = [{"status": "error", "category": "OBJECT_NOT_FOUND", "context": {"ids": missing},
                             "message": "Could not get some CONTACT objects, they may be deleted or not exist. "
                                        "Check that ids are valid."}]  # fmt: skip
    return JSONResponse(answer, status_code=207 if missing else 200)


def _property_text(value: Any) -> str:
    """HubSpot keeps every property value as text; null clears it."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def _invalid(name: str, value: str, options: dict[str, Any]) -> dict[str, Any] | None:
    if name in READ_ONLY_PROPERTIES:
        return {"isValid": False, "message": f"{name} is a read only property; its value cannot be set.",
                "error": "READ_ONLY_VALUE", "name": name}  # fmt: skip
    if name not in options:
        return {"isValid": False, "message": f'Property "{name}" does not exist', "error": "PROPERTY_DOESNT_EXIST",
                "name": name}  # fmt: skip
    allowed = options[name]
    if allowed and value != "" and value not in allowed:
        return {"isValid": False, "message": f"{value} was not one of the allowed options: {', '.join(allowed)}",
                "error": "INVALID_OPTION", "name": name}  # fmt: skip
    return None


def _gdpr_delete(ctx: Context, request: Request, body: bytes) -> Response:
    """`POST /crm/v3/objects/contacts/gdpr-delete` `{"objectId": ...}`: the contact is deleted for good."""
    spec = _object_body(body)
    object_id = str(spec.get("objectId", ""))
    if spec.get("idProperty") == "email":
        ctx.accounts.contacts.refresh()
        object_id = ctx.accounts.contacts.find(object_id.strip().lower()) or ""
    if not object_id or not ctx.accounts.forget_contact(object_id):
        raise ApiError(404, f"Object not found. objectId are usually numeric. {object_id!r}")
    return Response(status_code=204)

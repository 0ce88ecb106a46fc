"""Klaviyo JSON:API: profiles, events and metrics with ``page[cursor]`` links.

Connectors follow ``links.next`` until it is null, so the links are absolute URLs
built from the request itself, exactly as a client sent it, or as a proxy in front
forwarded it (``X-Forwarded-Proto``, which uvicorn applies, and ``X-Forwarded-Host``).
The klaviyo-api SDK takes a cursor only out of an https link, so behind TLS it pages too.
"""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from starlette.datastructures import URL
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from sandbox.apis import (
    ApiError,
    Context,
    Service,
    decode_cursor,
    encode_cursor,
    int_param,
    is_int64,
    keyset,
    payloads,
    to_ms,
)
from sandbox.faults import Quota

HOST = re.compile(r"(?:[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?")
CALL = re.compile(r"(greater-than|greater-or-equal|less-than|less-or-equal)\((\w+),\s*\"?([^,()\"]+)\"?\)")
OPS = {"greater-than": ">", "greater-or-equal": ">=", "less-than": "<", "less-or-equal": "<="}
TITLES = {
    "not_authenticated": "Authentication credentials were not provided.",
    "authentication_failed": "Incorrect authentication credentials.",
    "invalid": "Invalid input.",
    "not_found": "Not found.",
    "method_not_allowed": "Method not allowed.",
    "throttled": "Request was throttled.",
    "error": "A server error occurred.",
}


@dataclass(frozen=True)
class Listing:
    """One paged collection: its stream, sort options, filterable time field, page sizes and sparse fieldset."""

    stream: str
    time_field: str  # maps to records.updated
    operators: tuple[str, ...]
    default_size: int
    max_size: Callable[[Context], int]
    sorts: tuple[str, ...]  # `updated` sorts by the time field, `id` by the id
    resource: str  # the JSON:API type a sparse fieldset names (`fields[profile]`)
    fields: frozenset[str]  # attributes a sparse fieldset may name, by their first segment


PROFILES = Listing(
    "klaviyo.profiles",
    "updated",
    ("greater-than", "less-than"),
    20,
    lambda ctx: ctx.config.page_sizes.klaviyo_profiles,
    ("updated", "-updated", "id", "-id"),
    "profile",
    frozenset({"created", "email", "external_id", "first_name", "image", "last_event_date", "last_name", "locale",
               "location", "organization", "phone_number", "predictive_analytics", "properties", "subscriptions",
               "title", "updated"}),
)  # fmt: skip
EVENTS = Listing(
    "klaviyo.events",
    "datetime",
    tuple(OPS),
    200,
    lambda ctx: ctx.config.page_sizes.klaviyo_events,
    ("datetime", "-datetime"),
    "event",
    frozenset({"timestamp", "event_properties", "datetime", "uuid"}),
)
FIELD = re.compile(r"[a-z_]+(?:\.[a-z_]+)*")  # `location.city`: no spaces around the commas between them
_ABSENT = object()  # an attribute a record does not have, told apart from a null one


def service(ctx: Context) -> Service:
    return Service(
        name="klaviyo",
        endpoints=[
            ("/api/profiles", partial(_page, ctx, PROFILES), ("GET",)),
            ("/api/events", partial(_page, ctx, EVENTS), ("GET",)),
            ("/api/metrics", partial(_metrics, ctx), ("GET",)),
        ],
        authenticate=partial(_authenticate, ctx),
        render=_render,
        throttled=_throttled,
        limits=lambda path: ("burst", "steady"),
        headers=_quota_headers,
    )


def _authenticate(ctx: Context, request: Request) -> None:
    scheme, _, key = request.headers.get("authorization", "").partition(" ")
    if scheme != "Klaviyo-API-Key" or not key.strip():
        raise ApiError(
            401, "Missing or invalid authorization scheme. Please use Klaviyo-API-Key.", code="not_authenticated"
        )
    if key.strip() != ctx.config.credentials.klaviyo.api_key:
        raise ApiError(401, "Incorrect authentication credentials.", code="authentication_failed")
    if not request.headers.get("revision"):
        raise ApiError(
            400, "The 'revision' header is required (e.g. revision: 2024-10-15).", code="invalid", param="revision"
        )


def _render(exc: ApiError) -> Response:
    code = exc.code if exc.code in TITLES else ("error" if exc.status >= 500 else "invalid")
    error = {
        "id": str(uuid.uuid4()),
        "status": exc.status,
        "code": code,
        "title": TITLES[code],
        "detail": exc.message,
        "source": {"parameter": exc.param} if exc.param else {},
    }
    return JSONResponse({"errors": [error]}, status_code=exc.status)


def _throttled(limit: str, retry_after: float) -> Response:
    """A 429 carries only Retry-After, no RateLimit-* headers."""
    wait = max(1, math.ceil(retry_after))
    response = _render(ApiError(429, f"Request was throttled. Expected available in {wait} second.", code="throttled"))
    response.headers["Retry-After"] = str(wait)
    return response


def _quota_headers(quotas: list[Quota]) -> dict[str, str]:
    if not quotas:
        return {}
    tight = min(quotas, key=lambda q: q.remaining)
    return {
        "RateLimit-Limit": str(tight.max),
        "RateLimit-Remaining": str(tight.remaining),
        "RateLimit-Reset": str(math.ceil(tight.reset)),
    }


def _page(ctx: Context, listing: Listing, request: Request, body: bytes) -> Response:
    query = request.query_params
    size = int_param(query.get("page[size]"), "page[size]", listing.default_size, 1, listing.max_size(ctx))
    sort = query.get("sort", "")
    if sort and sort not in listing.sorts:
        raise ApiError(400, f"Invalid sort {sort!r}; use one of {', '.join(listing.sorts)}.", param="sort")
    keys = ("id",) if sort.lstrip("-") in ("", "id") else ("updated", "id")
    descending = sort.startswith("-")
    fields = _fieldset(query.get(f"fields[{listing.resource}]"), listing)
    where, params = _filter(query.get("filter"), listing)
    position, backwards = _position(query.get("page[cursor]"), sort, len(keys))
    rows, more = keyset(
        ctx.store,
        listing.stream,
        keys,
        size,
        where=where,
        params=params,
        after=position,
        descending=descending != backwards,
    )
    rows = rows[::-1] if backwards else rows
    has_next, has_prev = (True, more) if backwards else (more, position is not None)
    data = payloads(rows)
    if listing is PROFILES and query.get("additional-fields[profile]") != "subscriptions":
        for profile in data:
            if isinstance(profile.get("attributes"), dict):  # the corpus serves one whose attributes are a string
                profile["attributes"].pop("subscriptions", None)
    if fields is not None:
        for item in data:
            if isinstance(item.get("attributes"), dict):
                item["attributes"] = _sparse(item["attributes"], fields)

    url = _public_url(request)

    def link(**position: Any) -> str:
        token = encode_cursor({"sort": sort, **position})
        return str(url.include_query_params(**{"page[cursor]": token}))

    def key(row: Any) -> list[Any]:
        return [row[k] for k in keys]

    links = {
        "self": str(url),
        "next": link(after=key(rows[-1])) if has_next and rows else None,
        "prev": link(before=key(rows[0])) if has_prev and rows else None,
    }
    return JSONResponse({"data": data, "links": links})


def _fieldset(text: str | None, listing: Listing) -> list[list[str]] | None:
    """The attribute paths of a sparse fieldset (``fields[profile]=email,location.city``), or None for every one."""
    if text is None:
        return None
    names = text.split(",")
    wrong = [n for n in names if not FIELD.fullmatch(n) or n.split(".")[0] not in listing.fields]
    if wrong:
        raise ApiError(
            400, f"Invalid field(s) for {listing.resource}: {', '.join(map(repr, wrong))}.",
            param=f"fields[{listing.resource}]",
        )  # fmt: skip
    return [name.split(".") for name in names]


def _sparse(attributes: dict[str, Any], fields: list[list[str]]) -> dict[str, Any]:
    """Only the named attributes (a dotted path keeps that part of an object); the id, type and links stay."""
    kept: dict[str, Any] = {}
    for path in fields:
        value: Any = attributes
        for key in path:
            value = value.get(key, _ABSENT) if isinstance(value, dict) else _ABSENT
        if value is _ABSENT:
            continue
        node = kept
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value
    return kept


def _public_url(request: Request) -> URL:
    """The request's URL with the host a proxy forwarded; a header that names no host is left out."""
    host = request.headers.get("x-forwarded-host", "").split(",")[0].strip()
    return request.url.replace(netloc=host) if HOST.fullmatch(host) else request.url


def _position(token: str | None, sort: str, width: int) -> tuple[list[Any] | None, bool]:
    """The sort key a ``page[cursor]`` points at, and whether it pages backwards.

    The klaviyo-api SDK cuts the cursor out of a link just after ``page[cursor]``, so it sends the ``=`` too."""
    if not token:
        return None, False
    cursor = decode_cursor(token.removeprefix("="), "page[cursor]")
    position = cursor.get("before", cursor.get("after")) if isinstance(cursor, dict) else None
    kinds = (is_int64, _is_text)[-width:]  # (updated, id) or (id,): a forged cursor holds anything
    if (not isinstance(position, list) or len(position) != width or cursor.get("sort") != sort
            or not all(fits(value) for fits, value in zip(kinds, position, strict=True))):  # fmt: skip
        raise ApiError(400, "page[cursor] does not belong to this query.", param="page[cursor]")
    return position, "before" in cursor


def _is_text(value: Any) -> bool:
    return isinstance(value, str)


def _filter(text: str | None, listing: Listing) -> tuple[str, list[Any]]:
    """``greater-than(updated,ISO)``-style conditions, alone, comma-joined or inside ``and(...)``."""
    if not text:
        return "archived = 0", []
    inner = text[4:-1] if text.startswith("and(") and text.endswith(")") else text
    calls = CALL.findall(inner)
    if not calls or CALL.sub("", inner).replace(",", "").strip():
        raise ApiError(400, f"Invalid filter: {text}", param="filter")
    clauses, params = ["archived = 0"], []
    for op, field, value in calls:
        if field != listing.time_field or op not in listing.operators:
            raise ApiError(400, f"Filter {op}({field}) is not supported here.", param="filter")
        clauses.append(f"updated {OPS[op]} ?")
        params.append(to_ms(value.strip(), "filter"))
    return " AND ".join(clauses), params


def _metrics(ctx: Context, request: Request, body: bytes) -> Response:
    sql = "SELECT payload FROM records WHERE stream = 'klaviyo.metrics' AND archived = 0 ORDER BY id"
    data = payloads(ctx.store.connect().execute(sql).fetchall())
    return JSONResponse({"data": data, "links": {"self": str(_public_url(request)), "next": None, "prev": None}})

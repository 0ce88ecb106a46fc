"""Stripe ``/v1`` list endpoints: newest first, ``starting_after``/``ending_before`` cursors.

Lists filter only on creation time, as the real API does; updates reach connectors
through ``/v1/events`` (30 days of history).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from sandbox.apis import ApiError, Context, Service, basic, bearer, int_param, keyset, payloads, with_duplicate
from sandbox.corpus import DUPLICATED

PARAMETER = re.compile(r"^([a-z_]+)(?:\[([a-z0-9_]*)\])?$")


FIELD = "json_extract(payload, '$.{}') = ?"
PRICE = "EXISTS (SELECT 1 FROM json_each(payload, '$.items.data') WHERE json_extract(value, '$.price.id') = ?)"


def equal_fields(*names: str) -> dict[str, str]:
    """Equality filters on top-level payload fields."""
    return {name: FIELD.format(name) for name in names}


@dataclass(frozen=True)
class Listing:
    """One list endpoint: its stream, the object name for "No such ..." errors and the parameters it takes."""

    stream: str
    noun: str
    filters: dict[str, str] = field(default_factory=dict)  # parameter -> SQL condition on one value
    own: tuple[str, ...] = ()  # other parameters this list filters on
    # Documented filters on fields the sandbox's objects do not carry: refused (as unsupported), never ignored.
    unsupported: tuple[str, ...] = ()


RESOURCES: dict[str, Listing] = {
    "customers": Listing("stripe.customers", "customer", equal_fields("email"), unsupported=("test_clock",)),
    "subscriptions": Listing(
        "stripe.subscriptions", "subscription", {**equal_fields("customer"), "price": PRICE}, ("status",),
        ("automatic_tax", "collection_method", "current_period_end", "current_period_start", "test_clock"),
    ),
    "invoices": Listing(
        "stripe.invoices", "invoice", equal_fields("customer", "subscription", "status"), (),
        ("collection_method", "due_date"),
    ),
    "events": Listing("stripe.events", "event", {}, ("type", "types"), ("delivery_success",)),
}  # fmt: skip
PAGING = ("limit", "starting_after", "ending_before", "expand", "created")
LISTS = ("expand", "types")  # array parameters: `types[]=a` or, as the SDKs send them, `types[0]=a`
RANGE = ("gt", "gte", "lt", "lte")  # the keys of `created[...]`

EVENT_HISTORY_SECONDS = 30 * 86400
ENDED = "json_extract(payload, '$.status') IN ('canceled', 'incomplete_expired')"
NO_KEY = (
    "You did not provide an API key. You need to provide your API key in the Authorization header, "
    "using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY'). "
    "See https://stripe.com/docs/api#authentication for details."
)


def service(ctx: Context) -> Service:
    return Service(
        name="stripe",
        endpoints=[(f"/v1/{name}", partial(_list, ctx, name), ("GET",)) for name in RESOURCES],
        authenticate=partial(_authenticate, ctx),
        render=_render,
        throttled=_throttled,
        limits=lambda path: ("requests",),
    )


def _authenticate(ctx: Context, request: Request) -> None:
    key = bearer(request) or (basic(request) or ("", ""))[0]
    if not key:
        raise ApiError(401, NO_KEY)
    if key != ctx.config.credentials.stripe.api_key:
        raise ApiError(401, f"Invalid API Key provided: {_mask(key)}")


def _mask(key: str) -> str:
    prefix = key[: key.rfind("_") + 1] if "_" in key else ""
    return prefix + "*" * max(len(key) - len(prefix) - 4, 0) + key[-4:]


def _render(exc: ApiError) -> Response:
    error: dict[str, Any] = {"type": "api_error" if exc.status >= 500 else "invalid_request_error"}
    error.update({k: v for k, v in (("code", exc.code), ("param", exc.param)) if v is not None})
    error["message"] = exc.message
    return JSONResponse({"error": error}, status_code=exc.status)


def _throttled(limit: str, retry_after: float) -> Response:
    """Stripe documents no Retry-After; the body's ``code`` says ``rate_limit``."""
    message = "Request rate limit exceeded. Learn more about rate limits here https://stripe.com/docs/rate-limits."
    return _render(ApiError(429, message, code="rate_limit"))


def _list(ctx: Context, resource: str, request: Request, body: bytes) -> Response:
    listing = RESOURCES[resource]
    stream, noun = listing.stream, listing.noun
    query = request.query_params
    arrays = _check_parameters(listing, query)
    limit = int_param(query.get("limit"), "limit", 10, 1, ctx.config.page_sizes.stripe)
    after, before = query.get("starting_after"), query.get("ending_before")
    if after and before:
        message = "You may only specify one of these parameters: ending_before, starting_after."
        raise ApiError(400, message, param="ending_before")
    clauses, params = _created_filters(query)
    for name, condition in listing.filters.items():
        if query.get(name):
            clauses.append(condition)
            params.append(query[name])
    clauses.append(_resource_filter(resource, query, arrays.get("types", []), params))
    where = " AND ".join(clauses)
    position = None
    if after or before:
        record = ctx.store.get(stream, after or before)
        if record is None:
            param = "starting_after" if after else "ending_before"
            raise ApiError(400, f"No such {noun}: '{after or before}'", code="resource_missing", param=param)
        position = (record.updated, record.id) if resource == "events" else (record.created, record.id)
    # Events of one second come in the order they happened (kept in `updated`, see
    # sandbox/context.py); ending_before walks towards newer items, then shows them
    # newest first like every page.
    keys = ("updated", "id") if resource == "events" else ("created", "id")
    rows, has_more = keyset(
        ctx.store, stream, keys, limit, where=where, params=params, after=position, descending=not before
    )
    if resource == "customers" and ctx.config.duplicates.stripe and not before:
        dup = DUPLICATED[stream]  # a buggy API's repeat, on request (see sandbox/corpus.py)
        data = with_duplicate(
            ctx.store, stream, dup, rows, limit, keys=keys, where=where, params=params, after=position, descending=True
        )
    else:
        data = payloads(rows[::-1] if before else rows)
    return JSONResponse({"object": "list", "url": f"/v1/{resource}", "has_more": has_more, "data": data})


def _created_filters(query: Any) -> tuple[list[str], list[Any]]:
    clauses: list[str] = []
    params: list[Any] = []
    for suffix, op in (("", "="), ("[gt]", ">"), ("[gte]", ">="), ("[lt]", "<"), ("[lte]", "<=")):
        name = f"created{suffix}"
        if query.get(name) is not None:
            clauses.append(f"created {op} ?")
            params.append(int_param(query[name], name, 0, 0))
    return clauses, params


def _check_parameters(listing: Listing, query: Any) -> dict[str, list[str]]:
    """Refuse any parameter the list does not take, as Stripe does; returns the array parameters' values.

    ``expand`` is taken and left unapplied: objects are served as stored."""
    arrays: dict[str, list[str]] = {}
    for key, value in query.multi_items():
        match = PARAMETER.match(key)
        name, index = match.groups() if match else (key, None)
        if name in listing.unsupported:  # Stripe takes it; the sandbox says so rather than ignore it
            raise ApiError(400, f"The sandbox does not support the {name} filter.", param=name)
        if not _takes(listing, name, index):
            raise ApiError(400, f"Received unknown parameter: {key}", code="parameter_unknown", param=key)
        if name in LISTS:
            arrays.setdefault(name, []).append(value)
    return arrays


def _takes(listing: Listing, name: str, index: str | None) -> bool:
    if name == "created":
        return index is None or index in RANGE
    if name in LISTS:
        return name in (*PAGING, *listing.own) and index is not None and (index == "" or index.isdigit())
    return index is None and name in (*PAGING, *listing.filters, *listing.own)


def _resource_filter(resource: str, query: Any, types: list[str], params: list[Any]) -> str:
    """Subscriptions hide ended ones unless ``status`` says otherwise; events keep 30 days."""
    if resource == "customers":
        return "archived = 0"
    if resource == "subscriptions":
        status = query.get("status")
        if status == "all":
            return "1"
        if status == "ended":
            return ENDED
        if status:
            params.append(status)
            return "json_extract(payload, '$.status') = ?"
        return f"NOT {ENDED}"
    if resource == "events":
        types = types or ([query["type"]] if query.get("type") else [])
        if len(types) > 20:
            raise ApiError(400, "You may pass at most 20 values in types.", param="types")
        params.append(int(time.time()) - EVENT_HISTORY_SECONDS)
        if not types:
            return "created >= ?"
        params.extend(types)  # GLOB gives Stripe's "customer.*" wildcard
        matches = " OR ".join(["json_extract(payload, '$.type') GLOB ?"] * len(types))
        return f"created >= ? AND ({matches})"
    return "1"

"""Stripe ``/v1`` list endpoints: newest first, ``starting_after``/``ending_before`` cursors.

Lists filter only on creation time, as the real API does; updates reach connectors
through ``/v1/events`` (30 days of history).
"""

from __future__ import annotations

import time
from functools import partial
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from sandbox.apis import ApiError, Context, Service, basic, bearer, int_param, keyset, payloads, with_duplicate
from sandbox.corpus import DUPLICATED

# resource -> (stream, object name for "No such ..." errors, payload fields usable as equality filters)
RESOURCES: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "customers": ("stripe.customers", "customer", ("email",)),
    "subscriptions": ("stripe.subscriptions", "subscription", ("customer",)),
    "invoices": ("stripe.invoices", "invoice", ("customer", "subscription", "status")),
    "events": ("stripe.events", "event", ()),
}
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
    stream, noun, equal_fields = RESOURCES[resource]
    query = request.query_params
    limit = int_param(query.get("limit"), "limit", 10, 1, ctx.config.page_sizes.stripe)
    after, before = query.get("starting_after"), query.get("ending_before")
    if after and before:
        message = "You may only specify one of these parameters: ending_before, starting_after."
        raise ApiError(400, message, param="ending_before")
    clauses, params = _created_filters(query)
    for name in equal_fields:
        if query.get(name):
            clauses.append(f"json_extract(payload, '$.{name}') = ?")
            params.append(query[name])
    clauses.append(_resource_filter(resource, query, params))
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


def _resource_filter(resource: str, query: Any, params: list[Any]) -> str:
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
        types = query.getlist("types[]") or ([query["type"]] if query.get("type") else [])
        if len(types) > 20:
            raise ApiError(400, "You may pass at most 20 values in types.", param="types")
        params.append(int(time.time()) - EVENT_HISTORY_SECONDS)
        if not types:
            return "created >= ?"
        params.extend(types)  # GLOB gives Stripe's "customer.*" wildcard
        matches = " OR ".join(["json_extract(payload, '$.type') GLOB ?"] * len(types))
        return f"created >= ? AND ({matches})"
    return "1"

"""Braze REST `/users/track`: attribute objects per user, with `X-RateLimit-*` headers on every answer.

A request with more attribute objects than allowed is refused whole (400). An object
Braze cannot use (no `external_id`, an address that is not one) is a non-fatal error:
the others are processed and the answer lists the bad ones by index.
"""

from __future__ import annotations

import math
import re
import time
from functools import partial
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from sandbox.apis import ApiError, Context, Service, bearer, parse_json
from sandbox.faults import Quota

EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
SUBSCRIPTION_STATES = ("opted_in", "subscribed", "unsubscribed")
DELETE_BATCH = 50  # external ids per /users/delete


def service(ctx: Context) -> Service:
    return Service(
        name="braze",
        endpoints=[
            ("/users/track", partial(_track, ctx), ("POST",)),
            ("/users/delete", partial(_delete, ctx), ("POST",)),
        ],
        authenticate=partial(_authenticate, ctx),
        render=_render,
        throttled=_throttled,
        limits=lambda path: ("users_track",) if path.endswith("/track") else ("users_delete",),
        headers=_quota_headers,
    )


def _authenticate(ctx: Context, request: Request) -> None:
    if bearer(request) != ctx.config.credentials.braze.api_key:
        raise ApiError(401, "Invalid API key: the key is missing, wrong or lacks the users.track permission.")


def _render(exc: ApiError) -> Response:
    return JSONResponse({"message": exc.message, "errors": [exc.message]}, status_code=exc.status)


def _throttled(limit: str, retry_after: float) -> Response:
    """Braze names no Retry-After; the reset time is in X-RateLimit-Reset (epoch seconds)."""
    response = JSONResponse({"message": "API rate limit exceeded", "errors": ["rate limit exceeded"]}, status_code=429)
    response.headers["X-RateLimit-Reset"] = str(math.ceil(time.time() + retry_after))
    response.headers["X-RateLimit-Remaining"] = "0"
    return response


def _quota_headers(quotas: list[Quota]) -> dict[str, str]:
    if not quotas:
        return {}
    q = quotas[0]
    return {
        "X-RateLimit-Limit": str(q.max),
        "X-RateLimit-Remaining": str(q.remaining),
        "X-RateLimit-Reset": str(math.ceil(time.time() + q.reset)),
    }


def _track(ctx: Context, request: Request, body: bytes) -> Response:
    spec = parse_json(body)
    if not isinstance(spec, dict):
        raise ApiError(400, "The request body must be a JSON object.")
    attributes = spec.get("attributes") or []
    limit = ctx.config.page_sizes.braze_attributes
    if not isinstance(attributes, list) or len(attributes) > limit:
        raise ApiError(400, f"'attributes' must be an array of at most {limit} objects.")
    errors, good = [], []
    for index, obj in enumerate(attributes):
        problem = _problem(obj)
        if problem:
            errors.append({"type": problem, "input_array": "attributes", "index": index})
        else:
            good.append(obj)
    ctx.accounts.track_attributes(good)
    answer: dict[str, Any] = {"message": "success", "attributes_processed": len(good)}
    if errors:
        answer["errors"] = errors
    return JSONResponse(answer, status_code=201)


def _problem(obj: Any) -> str | None:
    if not isinstance(obj, dict):
        return "Attribute objects must be JSON objects"
    if not isinstance(obj.get("external_id"), str) or not obj["external_id"]:
        return "Attribute objects must name the user by 'external_id'"
    email = obj.get("email")
    if email is not None and (not isinstance(email, str) or not EMAIL.match(email)):
        return f"'{email}' is not a valid email address"
    state = obj.get("email_subscribe")
    if state is not None and state not in SUBSCRIPTION_STATES:
        return f"'email_subscribe' must be one of {', '.join(SUBSCRIPTION_STATES)}"
    return None


def _delete(ctx: Context, request: Request, body: bytes) -> Response:
    """`POST /users/delete` `{"external_ids": [...]}` (at most 50): the users and all they hold are gone."""
    spec = parse_json(body)
    external_ids = spec.get("external_ids") if isinstance(spec, dict) else None
    if not isinstance(external_ids, list) or not external_ids or len(external_ids) > DELETE_BATCH:
        raise ApiError(400, f"'external_ids' must be an array of 1 to {DELETE_BATCH} ids.")
    return JSONResponse({"deleted": ctx.accounts.delete_braze_users([str(e) for e in external_ids]),
                         "message": "success"}, status_code=201)  # fmt: skip

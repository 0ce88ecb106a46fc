"""Zendesk cursor-based incremental exports for users and tickets.

Items changed in the last ``zendesk_recent_exclusion_seconds`` are held back, as the
real export does, so ``after_cursor`` always points at a stable position the
connector can store and resume from later.
"""

from __future__ import annotations

import math
import time
from functools import partial

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from sandbox.apis import (
    ApiError,
    Context,
    Service,
    basic,
    bearer,
    decode_cursor,
    encode_cursor,
    int_param,
    keyset,
    payloads,
    with_duplicate,
)
from sandbox.corpus import DUPLICATED
from sandbox.faults import Quota

EXPORTS = {"users": "zendesk.users", "tickets": "zendesk.tickets"}


def service(ctx: Context) -> Service:
    return Service(
        name="zendesk",
        endpoints=[
            (f"/api/v2/incremental/{kind}/cursor.json", partial(_export, ctx, kind), ("GET",)) for kind in EXPORTS
        ],
        authenticate=partial(_authenticate, ctx),
        render=_render,
        throttled=_throttled,
        limits=lambda path: ("export",) if "/incremental/" in path else (),
        headers=_quota_headers,
    )


def _authenticate(ctx: Context, request: Request) -> None:
    creds = ctx.config.credentials.zendesk
    if basic(request) == (f"{creds.email}/token", creds.api_token) or bearer(request) == creds.api_token:
        return
    raise ApiError(401, "Couldn't authenticate you")


def _render(exc: ApiError) -> Response:
    if exc.status == 401:
        return JSONResponse({"error": exc.message}, status_code=401)
    titles = {400: "InvalidPaginationParameter", 404: "RecordNotFound", 429: "APIRateLimitExceeded"}
    title = "InternalError" if exc.status >= 500 else titles.get(exc.status, "InvalidRequest")
    return JSONResponse({"error": title, "description": exc.message}, status_code=exc.status)


def _throttled(limit: str, retry_after: float) -> Response:
    response = _render(ApiError(429, "Number of allowed incremental export API requests per minute exceeded"))
    response.headers["Retry-After"] = str(max(1, math.ceil(retry_after)))
    return response


def _quota_headers(quotas: list[Quota]) -> dict[str, str]:
    return {"X-Rate-Limit": str(quotas[0].max), "X-Rate-Limit-Remaining": str(quotas[0].remaining)} if quotas else {}


def _export(ctx: Context, kind: str, request: Request, body: bytes) -> Response:
    query = request.query_params
    per_page = min(int_param(query.get("per_page"), "per_page", 1000, 1), ctx.config.page_sizes.zendesk)
    if query.get("cursor"):
        position = decode_cursor(query["cursor"], "cursor")
        if not (isinstance(position, list) and len(position) == 2 and isinstance(position[0], int)):
            raise ApiError(400, "cursor is not a valid export cursor")
    elif query.get("start_time") is not None:
        # "" sorts before every id, so items updated exactly at start_time are included
        position = [int_param(query["start_time"], "start_time", 0, 0) * 1000, ""]
    else:
        raise ApiError(400, "start_time or cursor is required")
    horizon = int(time.time() * 1000) - int(ctx.config.zendesk_recent_exclusion_seconds * 1000)
    stream, keys, where, params = EXPORTS[kind], ("updated", "id"), "updated <= ?", (horizon,)
    rows, has_more = keyset(ctx.store, stream, keys, per_page, where=where, params=params, after=position)
    if kind == "users" and ctx.config.duplicates.zendesk:  # a buggy API's repeat, on request (see sandbox/corpus.py)
        previous = position if query.get("cursor") else None  # a start_time points at no previous page
        dup = DUPLICATED[stream]
        data = with_duplicate(
            ctx.store, stream, dup, rows, per_page, keys=keys, where=where, params=params, after=previous
        )
    else:
        data = payloads(rows)
    after = encode_cursor([rows[-1]["updated"], rows[-1]["id"]] if rows else position)
    url = request.url.remove_query_params(["start_time", "cursor"])
    return JSONResponse(
        {
            kind: data,
            "after_cursor": after,
            "after_url": str(url.include_query_params(cursor=after)),
            "before_cursor": None,  # exports here only move forward
            "before_url": None,
            "end_of_stream": not has_more,
        }
    )

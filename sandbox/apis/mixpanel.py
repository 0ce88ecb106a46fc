"""Mixpanel raw export: JSONL of every event in an inclusive UTC date window.

Exports can be large, so rows stream from a SQLite cursor (``records.created`` is the
event's ``properties.time``) on a connection owned by the response, never a list.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from sandbox.apis import ApiError, Context, Service, basic, int_param
from sandbox.store import DB_FILE

BATCH = 1000  # rows per chunk: one thread-pool hop per chunk, not per line
DAY_SECONDS = 86400


def service(ctx: Context) -> Service:
    return Service(
        name="mixpanel",
        endpoints=[("/api/2.0/export", partial(_export, ctx), ("GET",))],
        authenticate=partial(_authenticate, ctx),
        render=_render,
        throttled=_throttled,
        limits=lambda path: ("secondly", "hourly"),
    )


def _authenticate(ctx: Context, request: Request) -> None:
    creds = ctx.config.credentials.mixpanel
    if basic(request) != (creds.username, creds.secret):
        raise ApiError(401, "Unable to authenticate request")


def _render(exc: ApiError) -> Response:
    return JSONResponse({"error": exc.message, "status": "error"}, status_code=exc.status)


def _throttled(limit: str, retry_after: float) -> Response:
    window = "hourly" if limit == "hourly" else "per-second"
    return _render(ApiError(429, f"Query rate limit exceeded ({window} limit); retry later."))


def _export(ctx: Context, request: Request, body: bytes) -> Response:
    query = request.query_params
    project = query.get("project_id")
    if not project:
        raise ApiError(400, "project_id is required when authenticating with a service account")
    if project != ctx.config.credentials.mixpanel.project_id:
        raise ApiError(403, f"Service account has no access to project {project}")
    start = _date(query.get("from_date"), "from_date")
    end = _date(query.get("to_date"), "to_date")
    if end < start:
        raise ApiError(400, "to_date must be on or after from_date")
    # no limit given: everything (SQLite reads LIMIT -1 as unlimited)
    limit = int_param(query.get("limit"), "limit", -1, 1, ctx.config.page_sizes.mixpanel)
    sql = "SELECT payload FROM records WHERE stream = 'mixpanel.events' AND created BETWEEN ? AND ? AND archived = 0"
    # the window's last second by arithmetic: the day after 9999-12-31 is no datetime
    params: list[Any] = [int(start.timestamp()), int(end.timestamp()) + DAY_SECONDS - 1]
    names = _event_names(query.get("event"))
    if names is not None:
        sql += f" AND json_extract(payload, '$.event') IN ({','.join('?' * len(names))})"
        params.extend(names)
    sql += " ORDER BY created, id LIMIT ?"
    params.append(limit)
    rows = _stream(ctx.store.folder / DB_FILE, sql, params)
    return StreamingResponse(rows, media_type="text/plain; charset=utf-8")


def _date(value: str | None, name: str) -> datetime:
    try:
        return datetime.strptime(value or "", "%Y-%m-%d").replace(tzinfo=UTC)
    except ValueError:
        raise ApiError(400, f"{name} is required in the format yyyy-mm-dd") from None


def _event_names(raw: str | None) -> list[str] | None:
    if not raw:
        return None
    try:
        names = json.loads(raw)
    except (ValueError, RecursionError):
        names = None
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise ApiError(400, 'event must be a JSON array of event names, e.g. ["Signed up"]')
    return names


def _stream(path: Path, sql: str, params: list[Any]) -> Iterator[str]:
    """JSONL chunks from a private connection (the chunks are pulled from varying threads)."""
    conn = sqlite3.connect(path, check_same_thread=False)
    try:
        cursor = conn.execute(sql, params)
        while batch := cursor.fetchmany(BATCH):
            yield "".join(row[0] + "\n" for row in batch)
    finally:
        conn.close()

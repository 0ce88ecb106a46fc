"""Zendesk cursor-based incremental exports for users and tickets, and bulk user writes as background jobs.

Items changed in the last ``zendesk_recent_exclusion_seconds`` are held back, as the
real export does, so ``after_cursor`` always points at a stable position the
connector can store and resume from later. ``create_or_update_many`` answers with a
queued job that runs ``zendesk_job_seconds`` later and is polled at ``job_statuses``;
an account holds at most ``zendesk_max_jobs`` unfinished jobs.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
import uuid
from functools import partial
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from sandbox.apis import (
    INT64,
    ApiError,
    Context,
    Service,
    basic,
    bearer,
    decode_cursor,
    encode_cursor,
    int_param,
    is_int64,
    keyset,
    parse_json,
    payloads,
    with_duplicate,
)
from sandbox.corpus import DUPLICATED
from sandbox.faults import Quota

EXPORTS = {"users": "zendesk.users", "tickets": "zendesk.tickets"}
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
JOBS_URL = "https://sandbox.zendesk.com/api/v2/job_statuses"
log = logging.getLogger(__name__)


class Jobs:
    """The account's bulk jobs: each runs once, in the background, after the configured wait."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.jobs: dict[str, dict[str, Any]] = {}
        self.lock = threading.Lock()

    def submit(self, users: list[dict[str, Any]]) -> dict[str, Any]:
        with self.lock:
            unfinished = sum(job["status"] in ("queued", "working") for job in self.jobs.values())
            if unfinished >= self.ctx.config.accounts.zendesk_max_jobs:
                raise ApiError(429, f"The account has {unfinished} jobs queued or running; wait for some to finish.",
                               code="TooManyJobs")  # fmt: skip
            job_id = uuid.uuid4().hex
            job = {"id": job_id, "url": f"{JOBS_URL}/{job_id}.json", "status": "queued", "total": len(users),
                   "progress": 0, "message": None, "results": None}  # fmt: skip
            self.jobs[job_id] = job
        timer = threading.Timer(self.ctx.config.accounts.zendesk_job_seconds, self._run, (job_id, users))
        timer.daemon = True
        timer.start()
        return dict(job)

    def get(self, job_id: str) -> dict[str, Any]:
        with self.lock:
            job = self.jobs.get(job_id)
            if job is None:
                raise ApiError(404, f"Job {job_id} not found")
            return dict(job)

    def _run(self, job_id: str, users: list[Any]) -> None:
        """Bad users end as per-record errors and the job completes; should writing fail all the same, the job
        ends "failed". Either way it never stays "working", so it stops counting against the job limit."""
        with self.lock:
            self.jobs[job_id]["status"] = "working"
        try:
            outcome = dict(status="completed", results=self._process(users),
                           message=f"Completed at {time.strftime('%Y-%m-%d %H:%M:%S')} +0000")  # fmt: skip
        except Exception:
            log.exception("zendesk job %s failed", job_id)
            outcome = dict(status="failed", results=None, message="Failed: the job could not be processed.")
        with self.lock:
            self.jobs[job_id].update(progress=len(users), **outcome)

    def _process(self, users: list[Any]) -> list[dict[str, Any] | None]:
        results: list[dict[str, Any] | None] = [None] * len(users)
        fields = self.ctx.config.accounts.zendesk_user_fields
        valid = []
        for index, user in enumerate(users):
            problem = _user_problem(user, fields)
            if problem:
                results[index] = {"index": index, "status": "Failed", "error": "InvalidValue", "details": problem}
            else:
                valid.append(index)
        # `user_fields: null` changes no field, as leaving it out does
        accepted = [{k: v for k, v in users[i].items() if not (k == "user_fields" and v is None)} for i in valid]
        written = self.ctx.accounts.upsert_users(accepted)
        for index, (record, new) in zip(valid, written, strict=True):
            results[index] = {"index": index, "id": int(record.id), "email": record.payload["email"],
                              "action": "create" if new else "update", "status": "Created" if new else "Updated",
                              "success": True}  # fmt: skip
        return results


def _user_problem(user: Any, fields: dict[str, list[str]]) -> str | None:
    if not isinstance(user, dict):
        return "Each user must be an object"
    if not isinstance(user.get("email"), str) or not EMAIL.match(user["email"].strip()):
        return f"Email: {user.get('email')!r} is not properly formatted"
    values = user.get("user_fields")
    if values is None:
        return None
    if not isinstance(values, dict):
        return "User fields must be an object of field keys and values"
    unknown = sorted(set(values) - set(fields))
    if unknown:
        return f"User fields not defined on the account: {', '.join(unknown)}"
    for name, value in values.items():
        if fields[name] and value is not None and (not isinstance(value, str) or value not in fields[name]):
            return f"{name}: {value!r} is not a valid option ({', '.join(fields[name])})"
    return None


def service(ctx: Context) -> Service:
    jobs = Jobs(ctx)
    writes = [
        (path, handler, methods)
        for base, handler, methods in (
            ("/api/v2/users/create_or_update_many", partial(_create_or_update_many, jobs), ("POST",)),
            ("/api/v2/job_statuses/{job_id}", partial(_job_status, jobs), ("GET",)),
            ("/api/v2/users/{user_id}", partial(_delete_user, ctx, False), ("DELETE",)),
            ("/api/v2/deleted_users/{user_id}", partial(_delete_user, ctx, True), ("DELETE",)),
        )
        for path in (base, base + ".json")
    ]
    return Service(
        name="zendesk",
        endpoints=[
            *((f"/api/v2/incremental/{kind}/cursor.json", partial(_export, ctx, kind), ("GET",)) for kind in EXPORTS),
            *writes,
        ],
        authenticate=partial(_authenticate, ctx),
        render=_render,
        throttled=_throttled,
        limits=lambda path: ("export",) if "/incremental/" in path else ("account",),
        headers=_quota_headers,
    )


def _create_or_update_many(jobs: Jobs, request: Request, body: bytes) -> Response:
    spec = parse_json(body)
    users = spec.get("users") if isinstance(spec, dict) else None
    if not isinstance(users, list) or not users:
        raise ApiError(400, 'Body must look like {"users": [{"email": "...", "name": "..."}]}.')
    limit = jobs.ctx.config.page_sizes.zendesk_users
    if len(users) > limit:
        raise ApiError(400, f"create_or_update_many takes at most {limit} users.")
    return JSONResponse({"job_status": jobs.submit(users)})


def _job_status(jobs: Jobs, request: Request, body: bytes) -> Response:
    return JSONResponse({"job_status": jobs.get(request.path_params["job_id"].removesuffix(".json"))})


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
    title = exc.code if exc.code == "TooManyJobs" else title
    response = JSONResponse({"error": title, "description": exc.message}, status_code=exc.status)
    if exc.status == 429:
        response.headers["Retry-After"] = "1"
    return response


def _throttled(limit: str, retry_after: float) -> Response:
    what = "incremental export API requests" if limit == "export" else "API requests"
    response = _render(ApiError(429, f"Number of allowed {what} per minute exceeded"))
    response.headers["Retry-After"] = str(max(1, math.ceil(retry_after)))
    return response


def _quota_headers(quotas: list[Quota]) -> dict[str, str]:
    return {"X-Rate-Limit": str(quotas[0].max), "X-Rate-Limit-Remaining": str(quotas[0].remaining)} if quotas else {}


def _export(ctx: Context, kind: str, request: Request, body: bytes) -> Response:
    query = request.query_params
    per_page = min(int_param(query.get("per_page"), "per_page", 1000, 1), ctx.config.page_sizes.zendesk)
    if query.get("cursor"):
        position = decode_cursor(query["cursor"], "cursor")
        if not (isinstance(position, list) and len(position) == 2 and is_int64(position[0])
                and isinstance(position[1], str)):  # fmt: skip
            raise ApiError(400, "cursor is not a valid export cursor")
    elif query.get("start_time") is not None:
        # "" sorts before every id, so items updated exactly at start_time are included
        position = [int_param(query["start_time"], "start_time", 0, 0, INT64[1] // 1000) * 1000, ""]
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


def _delete_user(ctx: Context, permanently: bool, request: Request, body: bytes) -> Response:
    """`DELETE /users/{id}` makes a user inactive; `DELETE /deleted_users/{id}` then erases what it held."""
    user_id = request.path_params["user_id"].removesuffix(".json")
    payload = ctx.accounts.delete_user(user_id, permanently)
    if payload is None:
        what = "deleted user" if permanently else "user"
        raise ApiError(404, f"No {what} {user_id}" + (" (delete the user first)" if permanently else ""))
    return Response(status_code=204) if permanently else JSONResponse({"user": payload})

"""What the fake services share: errors, auth parsing, cursors, keyset paging, routing.

Each service module only describes its own dialect (routes, auth, envelopes, limit
headers); paging and parameter checks live here once so all services behave alike.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, Router
from starlette.types import ASGIApp, Receive, Scope, Send

from sandbox.config import SandboxConfig
from sandbox.destinations import Accounts
from sandbox.faults import Quota
from sandbox.store import TIME_INDEXES, WorldStore

Handler = Callable[[Request, bytes], Response]
COLUMNS = "id, created, updated, archived, payload"
INT64 = (-(2**63), 2**63 - 1)  # what SQLite (and the real services' 64-bit fields) can hold
DIGITS = re.compile(r"-?[0-9]{1,30}")  # longer is no 64-bit integer, and int() of thousands of digits refuses
log = logging.getLogger(__name__)


class ApiError(Exception):
    """A client-visible failure; each service renders it in its own error envelope."""

    def __init__(self, status: int, message: str, *, code: str | None = None, param: str | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.param = status, message, code, param


@dataclass(frozen=True)
class Context:
    store: WorldStore
    config: SandboxConfig
    accounts: Accounts  # what the destination accounts hold


@dataclass(frozen=True)
class Service:
    """One service's dialect; satisfies ``sandbox.faults.Signals`` for its ``Gate``."""

    name: str
    endpoints: Sequence[tuple[str, Handler, Sequence[str]]]
    authenticate: Callable[[Request], None]  # raises ApiError
    render: Callable[[ApiError], Response]
    throttled: Callable[[str, float], Response]
    limits: Callable[[str], tuple[str, ...]]
    headers: Callable[[list[Quota]], dict[str, str]] = field(default=lambda quotas: {})

    def limits_for(self, path: str) -> tuple[str, ...]:
        return self.limits(path)

    def error_response(self, status: int, message: str) -> Response:
        return self.render(ApiError(status, message))

    def throttled_response(self, limit: str, retry_after: float) -> Response:
        return self.throttled(limit, retry_after)

    def quota_headers(self, quotas: list[Quota]) -> dict[str, str]:
        return self.headers(quotas)

    def app(self) -> ASGIApp:
        routes = [
            ServiceRoute(path, self._endpoint(handler), list(methods), self.render)
            for path, handler, methods in self.endpoints
        ]
        return Router(routes, default=self._not_found)

    def _endpoint(self, handler: Handler) -> Callable[[Request], Any]:
        async def endpoint(request: Request) -> Response:
            body = await request.body()  # sync handlers cannot await it themselves
            return await run_in_threadpool(self._call, handler, request, body)

        return endpoint

    def _call(self, handler: Handler, request: Request, body: bytes) -> Response:
        try:
            self.authenticate(request)
            return handler(request, body)
        except ApiError as exc:
            return self.render(exc)
        except Exception:  # a bug here, not the caller's fault: still the service's 500, and in the log
            log.exception("%s %s %s failed", self.name, request.method, request.url.path)
            return self.render(ApiError(500, "An unexpected error occurred."))

    async def _not_found(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.render(ApiError(404, "Not found", code="not_found"))(scope, receive, send)


class ServiceRoute(Route):
    """A route whose refusal of a method it does not take (405) is in its service's envelope."""

    def __init__(
        self, path: str, endpoint: Callable[..., Any], methods: list[str], render: Callable[[ApiError], Response]
    ) -> None:
        super().__init__(path, endpoint, methods=methods)
        self.render = render

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.methods and scope["method"] not in self.methods:
            response = self.render(ApiError(405, f"{scope['method']} is not allowed here.", code="method_not_allowed"))
            response.headers["Allow"] = ", ".join(sorted(self.methods))
            await response(scope, receive, send)
            return
        await super().handle(scope, receive, send)


# -- auth headers --------------------------------------------------------------------
def bearer(request: Request) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def basic(request: Request) -> tuple[str, str] | None:
    scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:  # not base64, not ASCII, not UTF-8: no credentials
        user, _, password = base64.b64decode(encoded.strip(), validate=True).decode().partition(":")
    except ValueError:
        return None
    return user, password


# -- parameters ----------------------------------------------------------------------
def int_param(raw: Any, name: str, default: int, low: int, high: int | None = None) -> int:
    """An integer parameter within [low, high] (at most a 64-bit integer), else a 400 naming the parameter."""
    if raw is None or raw == "":
        return default
    if isinstance(raw, bool | float) or not DIGITS.fullmatch(str(raw).strip()):
        raise ApiError(400, f"Invalid integer: {_shown(raw)}", code="parameter_invalid_integer", param=name)
    value = int(str(raw).strip())
    top = INT64[1] if high is None else high
    if value < low or value > top:
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise ApiError(
            400, f"{name} must be {bound}, got {_shown(value)}.", code="parameter_invalid_integer", param=name
        )
    return value


def is_int64(value: Any) -> bool:
    """A JSON integer a SQL parameter can hold (``true`` is not one)."""
    return isinstance(value, int) and not isinstance(value, bool) and INT64[0] <= value <= INT64[1]


def _shown(value: Any, width: int = 40) -> str:
    """A caller's value, cut short for an error message."""
    text = str(value)
    return text if len(text) <= width else text[:width] + "..."


def encode_cursor(value: Any) -> str:
    """Opaque cursor: URL-safe base64 of compact JSON."""
    raw = json.dumps(value, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(token: str, name: str) -> Any:
    """What an opaque cursor holds; callers still check its shape, since a client can forge any JSON."""
    try:
        return json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (binascii.Error, ValueError, RecursionError):  # ValueError covers non-ASCII, UTF-8 and JSON errors
        raise ApiError(400, f"Invalid cursor in {name}.", code="invalid_cursor", param=name) from None


def to_ms(value: Any, name: str) -> int:
    """Unix milliseconds from an ms-epoch number/string or an ISO-8601 time (UTC if naive)."""
    text = str(value).strip()
    if DIGITS.fullmatch(text):
        ms = int(text)
        if not is_int64(ms):
            raise ApiError(400, f"Invalid time for {name}: {_shown(value)}", param=name)
        return ms
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ApiError(400, f"Invalid time for {name}: {_shown(value)!r}", param=name) from None
    return int((moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp() * 1000)


def iso_ms(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def _not_json(constant: str) -> None:
    raise ValueError(f"{constant} is not JSON")


def strict_json(body: bytes) -> Any:
    """JSON as the vendors' parsers read it: Python's json also takes NaN and Infinity, which, once kept, no JSON
    answer could serve back. Raises ValueError or RecursionError on anything else."""
    return json.loads(body, parse_constant=_not_json)


def parse_json(body: bytes) -> Any:
    try:
        return strict_json(body or b"{}")
    except (ValueError, RecursionError):  # not UTF-8, not JSON, or nested deeper than a parser goes
        raise ApiError(400, "Invalid JSON body.", code="invalid_json") from None


# -- paging --------------------------------------------------------------------------
def keyset(
    store: WorldStore,
    stream: str,
    keys: tuple[str, ...],
    limit: int,
    *,
    where: str = "1",
    params: Sequence[Any] = (),
    after: Sequence[Any] | None = None,
    descending: bool = False,
) -> tuple[list[sqlite3.Row], bool]:
    """One page of rows ordered by ``keys`` (the last is the unique id) strictly after ``after``.

    One key must follow stream (and any equality terms of ``where``) in an index; two keys are a time of
    TIME_INDEXES and the id. A two-key position is split into "same time, later id" and "later time", each an
    index range starting at the position, so a page costs the same anywhere in a range of the time that ``where``
    may hold as well (Klaviyo's `datetime` filters, Stripe's `created[gte]`; tests/test_sandbox_server.py
    measures a page's cost). Left to itself, SQLite seeks from that range's start, or walks the primary key's
    ids (a WITHOUT ROWID table's), and reads what comes before the position again for every page.

    The first half therefore reads the rows at the position's time, in the time's index, a page's worth at a
    time, before ``where`` filters them. The second names the position's bound before ``where``, as SQLite seeks
    on the first of two bounds of one column.

    Returns (rows, has_more).
    """
    direction, cmp = ("DESC", "<") if descending else ("ASC", ">")
    order = ", ".join(f"{k} {direction}" for k in keys)
    base = f"SELECT {COLUMNS} FROM records WHERE stream = ? AND ({where})"
    conn = store.connect()
    if after is None:
        rows = conn.execute(f"{base} ORDER BY {order} LIMIT ?", (stream, *params, limit + 1)).fetchall()
    elif len(keys) == 1:
        sql = f"{base} AND {keys[0]} {cmp} ? ORDER BY {order} LIMIT ?"
        rows = conn.execute(sql, (stream, *params, after[0], limit + 1)).fetchall()
    else:
        first, last = keys
        index = TIME_INDEXES[first]
        # The rows at the position's time, in the time's index from the position, `limit + 1` at a time until
        # enough pass `where`: however many rows share that time (a churn tick stamps all its changes with one
        # time), a page reads none before its position.
        same = (
            f"SELECT {COLUMNS}, ({where}) AS kept FROM records INDEXED BY {index} "
            f"WHERE stream = ? AND {first} = ? AND {last} {cmp} ? ORDER BY {last} {direction} LIMIT ?"
        )
        rows, position = [], after[1]
        while len(rows) <= limit:
            chunk = conn.execute(same, (*params, stream, after[0], position, limit + 1)).fetchall()
            rows += [row for row in chunk if row["kept"]]
            if len(chunk) <= limit:
                break
            position = chunk[-1][last]
        if len(rows) <= limit:
            later = (
                f"SELECT {COLUMNS} FROM records INDEXED BY {index} WHERE stream = ? AND {first} {cmp} ? AND ({where}) "
                f"ORDER BY {order} LIMIT ?"
            )
            rows += conn.execute(later, (stream, after[0], *params, limit + 1 - len(rows))).fetchall()
    return rows[:limit], len(rows) > limit


def payloads(rows: Sequence[sqlite3.Row]) -> list[dict[str, Any]]:
    return [json.loads(row["payload"]) for row in rows]


def with_duplicate(
    store: WorldStore,
    stream: str,
    record_id: str,
    rows: Sequence[sqlite3.Row],
    limit: int,
    *,
    keys: tuple[str, ...],
    where: str,
    params: Sequence[Any],
    after: Sequence[Any] | None,
    descending: bool = False,
) -> list[dict[str, Any]]:
    """A page as a buggy API serves it: ``record_id`` twice in a row where it occurs, and once more on top
    of the page after the one that held it (pages of ``limit`` rows ending at ``after``).

    Other rows, their order and the next-page cursor stay exactly as ``keyset`` gave them.
    """
    data: list[dict[str, Any]] = []
    if after is not None:  # the previous page: the cursor row and the limit - 1 rows before it
        earlier, _ = keyset(
            store, stream, keys, limit - 1, where=where, params=params, after=after, descending=not descending
        )
        record = store.get(stream, record_id)
        if record is not None and record_id in (after[-1], *(row["id"] for row in earlier)):
            data.append(record.payload)
    for payload, row in zip(payloads(rows), rows, strict=True):
        data += [payload, payload] if row["id"] == record_id else [payload]
    return data

"""Rate limiting, fault injection and request statistics in front of each service.

A ``Gate`` wraps one service's ASGI app. Connectors must survive exactly what the
real services do to them (429s, 5xx, slow and cut-off responses), so every decision
here is rendered through the service's own envelope and headers (``Signals``).
A truncated answer is complete at the HTTP level (200, matching Content-Length) but
its JSON is cut short, as a buggy proxy or server delivers it.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any, Protocol

from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sandbox.config import Faults, Limit, SandboxConfig


@dataclass(frozen=True)
class Quota:
    """One limit's state after admitting a request, for the service's rate-limit headers."""

    name: str
    max: int
    remaining: int
    reset: float  # seconds until the oldest counted request leaves the window
    seconds: float


@dataclass(frozen=True)
class Admission:
    quotas: list[Quota]
    denied: str | None = None  # the exhausted limit's name
    retry_after: float = 0.0


class RateLimiter:
    """Sliding-window logs per (service, limit name); limits are read from config on each call."""

    def __init__(self) -> None:
        self._hits: dict[tuple[str, str], deque[float]] = {}
        self._lock = threading.Lock()

    def admit(self, service: str, limits: dict[str, Limit], names: tuple[str, ...]) -> Admission:
        """Count one request against every named limit, or against none if any is exhausted."""
        now = time.monotonic()
        with self._lock:
            active: list[tuple[str, Limit, deque[float]]] = []
            for name in names:
                limit = limits.get(name)
                if limit is None or limit.max <= 0:
                    continue
                hits = self._hits.setdefault((service, name), deque())
                while hits and hits[0] <= now - limit.seconds:
                    hits.popleft()
                if len(hits) >= limit.max:
                    return Admission([], name, hits[0] + limit.seconds - now)
                active.append((name, limit, hits))
            quotas = []
            for name, limit, hits in active:
                hits.append(now)
                reset = hits[0] + limit.seconds - now
                quotas.append(Quota(name, limit.max, limit.max - len(hits), reset, limit.seconds))
            return Admission(quotas)

    def reset(self) -> None:
        with self._lock:
            self._hits.clear()


class FaultInjector:
    """Seeded draws so a failing run can be replayed with the same ``fault_seed``."""

    def __init__(self, seed: int) -> None:
        self._lock = threading.Lock()
        self.reset(seed)

    def reset(self, seed: int) -> None:
        with self._lock:
            self._rng = random.Random(seed)
            self._seen: Counter[str] = Counter()
            self._burst: Counter[str] = Counter()

    def draw(self, service: str, faults: Faults) -> str | int | None:
        """``"burst"`` (429), a 5xx status (always 503 during an outage), ``"drop"``, ``"truncate"``, or None for a
        normal answer."""
        with self._lock:
            self._seen[service] += 1
            if faults.outage:
                return 503
            every, length = faults.burst_429_every or 0, faults.burst_429_length or 0
            if self._burst[service] > 0:
                self._burst[service] -= 1
                return "burst"
            if every > 0 and length > 0 and self._seen[service] % every == 0:
                self._burst[service] = length - 1
                return "burst"
            if self._rng.random() < (faults.error_rate or 0):
                return self._rng.choice((500, 502, 503))
            if self._rng.random() < (faults.drop_rate or 0):
                return "drop"
            # drawn only when on, so a fault_seed replays as it did before this fault existed
            if faults.truncate_rate and self._rng.random() < faults.truncate_rate:
                return "truncate"
            return None


@dataclass
class ServiceStats:
    requests: int = 0
    status: Counter[int] = field(default_factory=Counter)
    limiter_429: int = 0
    injected_429: int = 0
    injected_5xx: int = 0
    drops: int = 0
    truncated: int = 0
    first_at: float | None = None
    times: deque[float] = field(default_factory=lambda: deque(maxlen=100_000))  # the latest ones

    def summary(self) -> dict[str, Any]:
        times = list(self.times)
        return {
            "requests": self.requests,
            "status": {str(k): v for k, v in sorted(self.status.items())},
            "throttled_429": self.status[429],
            "limiter_429": self.limiter_429,
            "injected_429": self.injected_429,
            "injected_5xx": self.injected_5xx,
            "drops": self.drops,
            "truncated": self.truncated,
            "first_at": self.first_at,
            "last_at": times[-1] if times else None,
            **{f"max_per_{w}s": _busiest(times, w) for w in (1, 10, 60)},
        }


def _busiest(times: list[float], window: float) -> int:
    """Most requests seen in any rolling window (connectors are judged on rolling limits)."""
    best, start = 0, 0
    for end, t in enumerate(times):
        while t - times[start] >= window:
            start += 1
        best = max(best, end - start + 1)
    return best


class Stats:
    """Counts per service plus ``totals`` across all of them (API routes only)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def record(self, service: str, status: int, kind: str | None = None) -> None:
        now = time.time()
        with self._lock:
            for s in (self._services.setdefault(service, ServiceStats()), self._totals):
                s.requests += 1
                s.status[status] += 1
                s.times.append(now)
                s.first_at = s.first_at or now
                if kind:
                    setattr(s, kind, getattr(s, kind) + 1)

    def summary(self) -> dict[str, Any]:
        with self._lock:
            services = {name: s.summary() for name, s in sorted(self._services.items())}
            return {"services": services, "totals": self._totals.summary()}

    def reset(self) -> None:
        with self._lock:
            self._services: dict[str, ServiceStats] = {}
            self._totals = ServiceStats()


class Signals(Protocol):
    """How a service says "slow down" or "failed" in its own dialect."""

    name: str

    def limits_for(self, path: str) -> tuple[str, ...]: ...
    def error_response(self, status: int, message: str) -> Response: ...
    def throttled_response(self, limit: str, retry_after: float) -> Response: ...
    def quota_headers(self, quotas: list[Quota]) -> dict[str, str]: ...


class DroppedConnection(Exception):
    """Raised mid-body so the server aborts the connection (an injected ``drop``)."""


class QuietDrops(logging.Filter):
    """Keeps injected drops out of the server log; real errors still show."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], DroppedConnection))


@dataclass
class Gate:
    """ASGI wrapper: latency, injected faults, rate limits, quota headers, drops, stats."""

    app: ASGIApp
    signals: Signals
    config: SandboxConfig
    limiter: RateLimiter
    injector: FaultInjector
    stats: Stats

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        name = self.signals.name
        faults = self.config.faults_for(name)
        if faults.latency_ms:
            await asyncio.sleep(faults.latency_ms / 1000)
        names = self.signals.limits_for(scope["path"][len(scope.get("root_path", "")) :])
        injected = self.injector.draw(name, faults)
        admission, refusal, kind = Admission([]), None, ""
        if injected == "burst":
            refusal, kind = self.signals.throttled_response(names[0] if names else "", 1.0), "injected_429"
        elif isinstance(injected, int):
            refusal, kind = self.signals.error_response(injected, "An unexpected error occurred."), "injected_5xx"
        else:
            admission = self.limiter.admit(name, self.config.limits.get(name, {}), names)
            if admission.denied is not None:
                refusal = self.signals.throttled_response(admission.denied, admission.retry_after)
                kind = "limiter_429"
        if refusal is not None:
            self.stats.record(name, refusal.status_code, kind)
            await refusal(scope, receive, send)
            return
        extra = [(k.lower().encode(), v.encode()) for k, v in self.signals.quota_headers(admission.quotas).items()]
        status = 500

        async def send_with_quota(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        try:
            if injected == "drop":
                kind = "drops"
                await self._drop(scope, receive, send_with_quota)
            elif injected == "truncate":
                kind = "truncated" if await self._truncate(scope, receive, send_with_quota) else ""
            else:
                await self.app(scope, receive, send_with_quota)
        finally:
            self.stats.record(name, status, kind or None)

    async def _buffered(self, scope: Scope, receive: Receive) -> tuple[Message, bytes]:
        """The app's whole answer: its start message and its body."""
        messages: list[Message] = []

        async def capture(message: Message) -> None:
            messages.append(message)

        await self.app(scope, receive, capture)
        return messages[0], b"".join(m.get("body", b"") for m in messages[1:])

    async def _drop(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer with the full Content-Length, send about half the body, then abort."""
        start, body = await self._buffered(scope, receive)
        await send(_with_length(start, len(body)))
        await send({"type": "http.response.body", "body": body[: len(body) // 2], "more_body": True})
        raise DroppedConnection("injected drop")

    async def _truncate(self, scope: Scope, receive: Receive, send: Send) -> bool:
        """Send a 200 JSON answer's first half as the whole body; other answers go out unchanged."""
        start, body = await self._buffered(scope, receive)
        headers = {k.lower(): v for k, v in start.get("headers", [])}
        cut = start["status"] == 200 and headers.get(b"content-type", b"").startswith(b"application/json")
        body = body[: len(body) // 2] if cut else body
        await send(_with_length(start, len(body)))
        await send({"type": "http.response.body", "body": body})
        return cut


def _with_length(start: Message, length: int) -> Message:
    """The start message with its Content-Length replaced by ``length``."""
    headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
    return {**start, "headers": [*headers, (b"content-length", str(length).encode())]}

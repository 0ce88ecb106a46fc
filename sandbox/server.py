"""The sandbox ASGI app: fake SaaS services behind their own prefixes, plus control routes.

A connector's base URL is the only thing that differs from production, e.g.
``http://127.0.0.1:8765/stripe`` instead of ``https://api.stripe.com``. The
``/_sandbox/*`` routes (no faults) let tests and benchmarks steer the world; they answer
only requests carrying the launcher's token (``X-Sandbox-Token``), except the health
probe and the alert webhook receiver, which takes the token in its URL.
"""

from __future__ import annotations

import hmac
import logging
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route, Router
from starlette.types import ASGIApp, Receive, Scope, Send

from sandbox.apis import (
    ApiError,
    Context,
    braze,
    hubspot,
    int_param,
    klaviyo,
    meta,
    mixpanel,
    strict_json,
    stripe,
    zendesk,
)
from sandbox.config import MAX_CHANGES, MAX_TICKS, TOKEN_HEADER, SandboxConfig
from sandbox.corpus import inject_corpus
from sandbox.destinations import Accounts
from sandbox.faults import FaultInjector, Gate, RateLimiter, Stats
from sandbox.store import WorldStore

log = logging.getLogger(__name__)


def run_ticks(store: WorldStore, changes: int, count: int) -> dict[str, int]:
    """Apply ``count`` churn ticks now and sum their per-stream counts."""
    from sandbox.churn import tick  # written alongside; imported late so the server runs without it

    total: Counter[str] = Counter()
    for _ in range(count):
        total.update(tick(store, int(time.time() * 1000), changes))
    return dict(total)


class Ticker:
    """Background churn every ``tick_seconds`` (re-read each round, so PATCH can switch it)."""

    def __init__(self, store: WorldStore, config: SandboxConfig) -> None:
        self.store, self.config = store, config
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sandbox-ticker", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.wait(self.config.tick_seconds if self.config.tick_seconds > 0 else 1.0):
            if self.config.tick_seconds > 0:
                try:
                    run_ticks(self.store, self.config.changes_per_tick, 1)
                except Exception:
                    log.exception("background churn tick failed")


class ControlGuard:
    """Lets a control request through only with the launcher's token; the health probe and the webhook
    receiver (which checks the token in its path) are open."""

    OPEN = ("/health", "/webhook/")

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app, self.token = app, token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"][len(scope.get("root_path", "")) :]
        if scope["type"] == "http" and not path.startswith(self.OPEN):
            given = Request(scope).headers.get(TOKEN_HEADER)
            if not given or not same_secret(given, self.token):
                status = 401 if not given else 403
                await JSONResponse({"error": f"{TOKEN_HEADER} missing or wrong"}, status_code=status)(
                    scope, receive, send
                )
                return
        await self.app(scope, receive, send)


def same_secret(given: str, token: str) -> bool:
    return hmac.compare_digest(given.encode(), token.encode())


def create_app(folder: str | Path, config: SandboxConfig, token: str) -> Starlette:
    store = WorldStore(folder)
    accounts = Accounts(store)
    ctx = Context(store, config, accounts)
    limiter, injector, stats = RateLimiter(), FaultInjector(config.fault_seed), Stats()
    mounts, services = [], {}
    for module in (stripe, hubspot, zendesk, klaviyo, mixpanel, braze, meta):
        svc = module.service(ctx)
        services[svc.name] = svc
        mounts.append(Mount(f"/{svc.name}", app=Gate(svc.app(), svc, config, limiter, injector, stats)))

    async def http_error(request: Request, exc: HTTPException) -> Response:
        """Paths no route matches answer in JSON, never plain text: under a service's prefix in its envelope
        (a mount does not match a path holding a newline, say), elsewhere as the control routes answer."""
        svc = services.get(request.url.path.split("/")[1])
        if svc is not None:
            return svc.render(ApiError(exc.status_code, exc.detail, code="not_found"))
        return JSONResponse({"error": exc.detail}, status_code=exc.status_code, headers=exc.headers)

    def health(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    def tick(request: Request) -> JSONResponse:
        query = request.query_params
        try:
            changes = int_param(query.get("changes"), "changes", config.changes_per_tick, 0, MAX_CHANGES)
            count = int_param(query.get("count"), "count", 1, 1, MAX_TICKS)
        except ApiError as exc:
            return JSONResponse({"error": exc.message, "param": exc.param}, status_code=400)
        try:
            return JSONResponse(run_ticks(store, changes, count))
        except ImportError as exc:
            return JSONResponse({"error": f"churn is unavailable: {exc}"}, status_code=501)

    async def patch_config(request: Request) -> JSONResponse:
        try:
            patch: Any = await request.json()
            if not isinstance(patch, dict):
                raise ValueError("expected a JSON object")
            merged = config.update(patch)
        except (ValueError, RecursionError) as exc:  # RecursionError: JSON nested deeper than the parser goes
            return JSONResponse({"error": str(exc)}, status_code=400)
        if "limits" in patch:
            limiter.reset()  # new limits start with empty windows
        if "faults" in patch or "fault_seed" in patch:
            injector.reset(config.fault_seed)
        return JSONResponse(merged)

    def get_config(request: Request) -> JSONResponse:
        return JSONResponse(config.to_dict())

    def corpus(request: Request) -> JSONResponse:
        """Write (or re-stamp) the bad-input corpus at the current time; see sandbox/corpus.py."""
        return JSONResponse(inject_corpus(store, int(time.time() * 1000)))

    def get_stats(request: Request) -> JSONResponse:
        return JSONResponse(stats.summary())

    def reset_stats(request: Request) -> JSONResponse:
        stats.reset()
        return JSONResponse({"status": "ok"})

    received: list[Any] = []  # what the webhook receiver was sent, oldest first

    async def webhook(request: Request) -> JSONResponse:
        """A chat tool's incoming webhook, for alerts: keeps what it is sent to its secret URL."""
        if not same_secret(request.path_params["secret"], token):
            return JSONResponse({"error": "no such webhook"}, status_code=404)
        try:  # strict JSON: NaN or Infinity kept here could not be served back by GET /_sandbox/webhook
            received.append(strict_json(await request.body()))
        except (ValueError, RecursionError):
            return JSONResponse({"error": "expected JSON"}, status_code=400)
        return JSONResponse({"ok": True})

    def webhook_messages(request: Request) -> JSONResponse:
        return JSONResponse(received)

    def destination(request: Request) -> JSONResponse:
        """What a destination account holds that no source serves: Braze users, Meta audience members."""
        held = {"braze": accounts.braze_users, "meta": accounts.audience_members}.get(request.path_params["name"])
        if held is None:
            return JSONResponse({"error": "known destinations: braze, meta"}, status_code=404)
        return JSONResponse(held())

    routes = [
        Route("/health", health),
        Route("/tick", tick, methods=["POST"]),
        Route("/corpus", corpus, methods=["POST"]),
        Route("/config", get_config, methods=["GET"]),
        Route("/config", patch_config, methods=["PATCH"]),
        Route("/stats", get_stats, methods=["GET"]),
        Route("/stats", reset_stats, methods=["DELETE"]),
        Route("/destinations/{name}", destination, methods=["GET"]),
        Route("/webhook/{secret}", webhook, methods=["POST"]),
        Route("/webhook", webhook_messages, methods=["GET"]),
    ]
    control = Mount("/_sandbox", app=ControlGuard(Router(routes), token))

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        ticker = Ticker(store, config)
        ticker.start()
        yield
        ticker.stop()

    return Starlette(
        routes=[control, *mounts], lifespan=lifespan, exception_handlers={HTTPException: http_error}
    )

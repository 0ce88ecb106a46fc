"""One HTTP client for every service: a requests session with urllib3 `Retry`, timeouts, pacing and clear errors.

urllib3 retries 429 and 5xx answers (honouring `Retry-After`, or a rate-limit reset time
when the service sends only that) and connection failures before a response starts.
A connection dropped in the middle of a body happens after urllib3 has handed the
response over, so `ApiClient.request` retries that case itself. A client given a
`RateLimit` paces its own calls to stay under the service's documented limit, and a route with a limit of its
own (HubSpot's search) under that one too. A 429 that urllib3 retries inside one call is sent again unpaced.

Every call made through it is a read or an idempotent write (an upsert by a natural
key, a set add or remove), so repeating one after an answer went missing is safe.
"""

from __future__ import annotations

import re
import threading
import time
from collections import deque
from collections.abc import Collection, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.response import BaseHTTPResponse
from urllib3.util.retry import Retry

RETRY_STATUSES = (429, 500, 502, 503, 504)
POOL_CONNECTIONS = 16  # kept open per host: a pull's ranges side by side each hold one
# requests raises this when a connection drops part-way through a body (urllib3's IncompleteRead).
BODY_READ_ERRORS = (requests.exceptions.ChunkedEncodingError,)
RESET_HEADERS = ("X-RateLimit-Reset", "RateLimit-Reset")  # epoch seconds, or seconds from now (small values)


class ServiceError(RuntimeError):
    """A service answered with an error that retrying will not fix."""


class ServiceConfigurationError(ServiceError):
    """The service refused our credentials: a setting to fix, not a transient fault."""


class UnpageableAnswer(ServiceError):
    """The service answered, but with a page the client cannot page past (no object on it has a readable id): a
    bug of the service's to report, not an outage; asking again serves the same page."""


@dataclass
class RequestStats:
    """Counts kept per extraction or sync, reported as materialisation metadata."""

    requests: int = 0
    retries: int = 0
    waited_seconds: float = 0.0  # time spent pacing under the rate limit


@dataclass(frozen=True)
class RateLimit:
    """At most `max` calls in any rolling `seconds` window."""

    max: int
    seconds: float


class Pacer:
    """Holds each call back until it fits under a rolling-window limit (a sliding log of call times)."""

    def __init__(self, limit: RateLimit) -> None:
        self.limit = limit
        self._calls: deque[float] = deque()
        self._lock = threading.Lock()

    def _pause(self, now: float) -> float:
        """Seconds until one more call fits (0 when it fits now); the caller holds the lock."""
        while self._calls and self._calls[0] <= now - self.limit.seconds:
            self._calls.popleft()
        return 0.0 if len(self._calls) < self.limit.max else self._calls[0] + self.limit.seconds - now


def pace(pacers: Sequence[Pacer]) -> float:
    """Block until one more call fits every pacer's window, count it in each at the same moment (a slot taken in
    one while another still holds the call would be counted before the call leaves), and return the seconds
    waited. Each client lists its pacers in one order, so two threads never take their locks crosswise."""
    waited = 0.0
    with ExitStack() as held:
        for pacer in pacers:
            held.enter_context(pacer._lock)
        while True:
            now = time.monotonic()
            pause = max((pacer._pause(now) for pacer in pacers), default=0.0)
            if pause <= 0:
                for pacer in pacers:
                    pacer._calls.append(now)
                return waited
            time.sleep(pause)
            waited += pause


class ResetAwareRetry(Retry):
    """`Retry` that, lacking `Retry-After`, waits until the time a rate-limit reset header names."""

    def get_retry_after(self, response: BaseHTTPResponse) -> float | None:
        retry_after = super().get_retry_after(response)
        if retry_after is not None or response.status != 429:
            return retry_after
        for name in RESET_HEADERS:
            value = response.headers.get(name)
            if value and value.replace(".", "", 1).isdigit():
                reset = float(value)
                return max(0.0, reset - time.time()) if reset > 1e9 else reset
        return None


@dataclass
class ApiClient:
    """A session bound to one service's base URL and auth, with retry, pacing and error policy."""

    service: str
    base_url: str
    credential_env: str  # named in configuration errors; the secret itself is never logged
    auth: tuple[str, str] | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    timeout_seconds: float = 30.0
    max_retries: int = 8
    backoff_seconds: float = 0.5
    rate_limit: RateLimit | None = None
    # Routes with a limit of their own beside the account's: a pattern searched in the path, and its limit.
    route_limits: Mapping[str, RateLimit] = field(default_factory=dict)
    stats: RequestStats = field(default_factory=RequestStats)

    def __post_init__(self) -> None:
        retry = ResetAwareRetry(
            total=self.max_retries,
            status_forcelist=RETRY_STATUSES,
            allowed_methods=None,  # every call is a read or an idempotent write
            backoff_factor=self.backoff_seconds,
            backoff_max=30,
            respect_retry_after_header=True,
            raise_on_status=False,
        )
        self.session = requests.Session()
        self.session.mount("http://", HTTPAdapter(max_retries=retry, pool_maxsize=POOL_CONNECTIONS))
        self.session.mount("https://", HTTPAdapter(max_retries=retry, pool_maxsize=POOL_CONNECTIONS))
        self.session.headers.update(self.headers)
        if self.auth is not None:
            self.session.auth = self.auth
        self._pacer = Pacer(self.rate_limit) if self.rate_limit else None
        self._route_pacers = [(re.compile(route), Pacer(limit)) for route, limit in self.route_limits.items()]
        self._counting = threading.Lock()  # ranges of one pull call from threads of their own

    def count(self, calls: int = 0, retries: int = 0, waited_seconds: float = 0.0) -> None:
        """Add to the stats, from any thread."""
        with self._counting:
            self.stats.requests += calls
            self.stats.retries += retries
            self.stats.waited_seconds += waited_seconds

    def url(self, path_or_url: str) -> str:
        if path_or_url.startswith(("http://", "https://")):
            return path_or_url
        return self.base_url.rstrip("/") + path_or_url

    def request(
        self, method: str, path_or_url: str, *, tolerate: Collection[int] = (), **kwargs: Any
    ) -> requests.Response:
        """Send one call and return its response, or raise a `ServiceError`.

        Statuses in `tolerate` are handed back for the caller to read (a validation error
        to isolate, a service's own throttling signal). Without `stream=True` the body is
        read here, so a cut-off body is retried; a streamed body is the caller's to read.
        """
        url = self.url(path_or_url)
        path = urlsplit(url).path
        pacers = [pacer for route, pacer in self._route_pacers if route.search(path)]
        if self._pacer is not None:
            pacers.append(self._pacer)
        for attempt in range(self.max_retries + 1):
            self.count(calls=1, waited_seconds=pace(pacers))
            try:
                response = self.session.request(method, url, timeout=self.timeout_seconds, **kwargs)
            except BODY_READ_ERRORS as exc:
                if attempt == self.max_retries:
                    raise ServiceError(f"{self.service}: {method} {url} failed after retries: {exc}") from exc
                self.count(retries=1)
                time.sleep(min(30.0, self.backoff_seconds * 2**attempt))
                continue
            except requests.exceptions.RequestException as exc:  # unreachable even after urllib3's retries
                raise ServiceError(f"{self.service}: {method} {url} unreachable: {type(exc).__name__}") from exc
            history = getattr(response.raw, "retries", None)
            self.count(retries=len(history.history) if history is not None else 0)
            if response.status_code not in tolerate:
                self._raise_for_status(method, url, response)
            return response
        raise AssertionError("unreachable")

    def fetch_json(self, method: str, path_or_url: str, *, tolerate: Collection[int] = (), **kwargs: Any) -> Any:
        """Send one call and parse its JSON body; a body that does not parse (cut short) is asked for again."""
        return self.fetch(method, path_or_url, tolerate=tolerate, **kwargs)[1]

    def fetch(
        self, method: str, path_or_url: str, *, tolerate: Collection[int] = (), **kwargs: Any
    ) -> tuple[requests.Response, Any]:
        """`fetch_json`, also returning the response (for its status and headers)."""
        for attempt in range(self.max_retries + 1):
            response = self.request(method, path_or_url, tolerate=tolerate, **kwargs)
            try:
                return response, response.json()
            except requests.exceptions.JSONDecodeError as exc:
                if attempt == self.max_retries:
                    raise ServiceError(
                        f"{self.service}: {method} {response.url} kept answering with JSON that does not parse: {exc}"
                    ) from exc
                self.count(retries=1)
                time.sleep(min(30.0, self.backoff_seconds * 2**attempt))
        raise AssertionError("unreachable")

    def _raise_for_status(self, method: str, url: str, response: requests.Response) -> None:
        status = response.status_code
        if status < 400:
            return
        body = response.text[:500]
        if status in (401, 403):
            raise ServiceConfigurationError(
                f"{self.service} refused the credentials ({status}) for {method} {url}. "
                f"Check {self.credential_env} and the base URL. The API said: {body}"
            )
        raise ServiceError(f"{self.service}: {method} {url} answered {status}: {body}")

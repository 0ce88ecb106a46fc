"""One HTTP client for every service: a requests session, one retry policy, one pacer per API account, clear errors.

One policy decides every retry of a call (`ApiClient.policy`, urllib3's `Retry`): an answer of 429 or 5xx (waiting
as `Retry-After` says, or until a rate-limit reset time when the service sends only that), a connection that failed
or dropped part-way through a body, a body that is not the JSON it should be, and a signal read from an answer that
asking again will help (`Retryable`: Meta's throttling codes in a 400). All of a call's retries draw on one budget
and each is paced like the first send; the session itself retries nothing, so retries never stack.

Pacing: an API account (a service, its host and the credential) has one pacer in the process, and a route with a
limit of its own (HubSpot's search) one more, shared by every client of that account: a source and a destination on
one account (HubSpot's, Zendesk's), which a run calls from one process, stay under the account's one limit together.

Every call made through it is a read or an idempotent write (an upsert by a natural key, a set add or remove), so
repeating one after an answer went missing is safe.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import InvalidHeader, MaxRetryError
from urllib3.response import BaseHTTPResponse
from urllib3.util.retry import Retry

T = TypeVar("T")
log = logging.getLogger(__name__)

RETRY_STATUSES = (429, 500, 502, 503, 504)
POOL_CONNECTIONS = 16  # kept open per host: a pull's ranges side by side each hold one
RESET_HEADERS = ("X-RateLimit-Reset", "RateLimit-Reset")  # epoch seconds, or seconds from now (small values)
MAX_WAIT_SECONDS = 600.0  # the longest a service may make a call wait; past it, the wait is this


class ServiceError(RuntimeError):
    """A service answered with an error that retrying will not fix (`status`: its answer's), or could not be
    reached within the retries."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class ServiceConfigurationError(ServiceError):
    """The service refused our credentials: a setting to fix, not a transient fault."""


class CallRefused(ServiceError):
    """The service answered the call with a client error (a 4xx other than a throttle or a refused credential): the
    call is wrong for it (a field or an API version it no longer serves, a permission the credential lacks), and
    asking again answers the same."""


class UnpageableAnswer(ServiceError):
    """The service answered, but with a page the client cannot page past (no object on it has a readable id): a
    bug of the service's to report, not an outage; asking again serves the same page."""


class Retryable(Exception):
    """Read from an answer: the call is worth sending again, no sooner than `after` seconds (a service's own
    throttling signal where it sends no 429)."""

    def __init__(self, reason: str, after: float = 0.0) -> None:
        super().__init__(reason)
        self.after = after


# Failures sent again under the policy: the connection (refused, timed out, dropped mid-body), a body that does not
# parse (cut short: a streamed line, or JSON), and what a reader found worth asking again.
CONNECTION_ERRORS = (requests.exceptions.ConnectionError, requests.exceptions.Timeout)
BODY_ERRORS = (
    requests.exceptions.ChunkedEncodingError, requests.exceptions.JSONDecodeError, json.JSONDecodeError, Retryable
)


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


_account_pacers: dict[tuple[str, str | None], Pacer] = {}
_account_pacers_lock = threading.Lock()


def account_pacer(account: str, route: str | None, limit: RateLimit) -> Pacer:
    """The process's one pacer of an account's calls (`route` None) or of one of its routes (its pattern). Two
    clients of one account declaring two limits (a setting given to one of them alone) get the stricter, with a
    warning: the service counts their calls together."""
    with _account_pacers_lock:
        pacer = _account_pacers.setdefault((account, route), Pacer(limit))
    with pacer._lock:
        if pacer.limit != limit:
            stricter = min(pacer.limit, limit, key=lambda given: given.max / given.seconds)
            log.warning("%s%s: paced at %s, the stricter of %s and %s declared for one account",
                        account.split(" ")[0], f" {route}" if route else "", stricter, pacer.limit, limit)
            pacer.limit = stricter
    return pacer


def account_of(service: str, base_url: str, credential: object) -> str:
    """Who a call is counted against: the service, its host and a digest of the credential (never the secret)."""
    parts = urlsplit(base_url)
    digest = hashlib.sha256(json.dumps(credential, default=str).encode()).hexdigest()[:16]
    return f"{service} {parts.scheme}://{parts.netloc} {digest}"


def pace(pacers: Sequence[Pacer]) -> float:
    """Block until one more call fits every pacer's window, count it in each at the same moment (a slot taken in
    one while another still holds the call would be counted before the call leaves), and return the seconds
    waited. The locks are taken in one order (by the pacer's identity: clients share pacers), and let go while it
    waits, so a call held by one route's limit does not hold back the account's other calls."""
    ordered = sorted(set(pacers), key=id)
    waited = 0.0
    while True:
        with ExitStack() as held:
            for pacer in ordered:
                held.enter_context(pacer._lock)
            now = time.monotonic()
            pause = max((pacer._pause(now) for pacer in ordered), default=0.0)
            if pause <= 0:
                for pacer in ordered:
                    pacer._calls.append(now)
                return waited
        time.sleep(pause)
        waited += pause


class ResetAwareRetry(Retry):
    """`Retry` that waits as `Retry-After` says (whole or fractional seconds, or a date), or lacking one, until the
    time a rate-limit reset header names; an unreadable value leaves the wait to the backoff, and no wait is longer
    than MAX_WAIT_SECONDS."""

    def get_retry_after(self, response: BaseHTTPResponse) -> float | None:
        try:
            wait = super().get_retry_after(response)
        except InvalidHeader:  # not whole seconds nor a date
            wait = _seconds(response.headers.get("Retry-After"))
        if wait is None and response.status == 429:
            for name in RESET_HEADERS:
                reset = _seconds(response.headers.get(name))
                if reset is not None:
                    wait = max(0.0, reset - time.time()) if reset > 1e9 else reset
                    break
        return None if wait is None else min(wait, MAX_WAIT_SECONDS)


def _seconds(value: str | None) -> float | None:
    """A header's number of seconds (or epoch time), when it is one, finite and not negative."""
    try:
        seconds = float(value or "")
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def retry_policy(retries: int, backoff_seconds: float) -> Retry:
    """The one retry policy: `retries` in all for a call, whatever failed, backing off exponentially (capped at 30 s)
    unless the service said how long to wait; the first retry follows at once, as urllib3 backs off. Every method is
    retried: each call is a read or an idempotent write."""
    return ResetAwareRetry(
        total=retries,
        status_forcelist=RETRY_STATUSES,
        allowed_methods=None,
        backoff_factor=backoff_seconds,
        backoff_max=30,
        respect_retry_after_header=True,
        raise_on_status=False,
    )


@dataclass
class ApiClient:
    """A session bound to one service's base URL and auth, with the retry policy, pacing and error policy."""

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
        self.policy = retry_policy(self.max_retries, self.backoff_seconds)
        self.session = requests.Session()  # its adapters retry nothing: the policy above does, in `stream`
        for scheme in ("http://", "https://"):
            self.session.mount(scheme, HTTPAdapter(pool_maxsize=POOL_CONNECTIONS))
        self.session.headers.update(self.headers)
        if self.auth is not None:
            self.session.auth = self.auth
        account = account_of(self.service, self.base_url, [self.headers.get("Authorization"), self.auth])
        self._route_pacers = [
            (re.compile(route), account_pacer(account, route, limit)) for route, limit in self.route_limits.items()
        ]
        self._pacer = account_pacer(account, None, self.rate_limit) if self.rate_limit else None
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

    def stream(
        self,
        method: str,
        path_or_url: str,
        read: Callable[[requests.Response], Iterable[T]],
        *,
        tolerate: Collection[int] = (),
        **kwargs: Any,
    ) -> Iterator[T]:
        """Send one call and yield what `read` makes of its answer, or raise a `ServiceError`.

        Statuses in `tolerate` are handed to `read` (a validation error to isolate, a missing object). A call
        whose answer fails part-way (a body cut off, a `Retryable` that `read` raised) is sent again under the
        policy and read again from its start, so what was yielded before is yielded again.
        """
        url = self.url(path_or_url)
        path = urlsplit(url).path
        pacers = [pacer for route, pacer in self._route_pacers if route.search(path)]
        if self._pacer is not None:
            pacers.append(self._pacer)
        retry = self.policy
        while True:
            self.count(calls=1, waited_seconds=pace(pacers))
            response: requests.Response | None = None
            try:
                response = self.session.request(method, url, timeout=self.timeout_seconds, **kwargs)
                if retry.is_retry(method, response.status_code, "Retry-After" in response.headers):
                    # Read whole (kept for the error should the policy be spent) and let go before the wait.
                    _read_whole(response).close()
                    retry = self._again(retry, method, url, response=response)
                    continue
                if response.status_code not in tolerate:
                    self._raise_for_status(method, url, response)
                yield from read(response)
                return
            except (*CONNECTION_ERRORS, *BODY_ERRORS) as exc:
                if response is not None:
                    response.close()
                retry = self._again(retry, method, url, error=exc)
            finally:
                if response is not None:
                    response.close()

    def call(
        self,
        method: str,
        path_or_url: str,
        read: Callable[[requests.Response], T],
        *,
        tolerate: Collection[int] = (),
        **kwargs: Any,
    ) -> T:
        """`stream` for an answer read whole: what `read` makes of it."""
        (value,) = self.stream(method, path_or_url, lambda response: (read(response),), tolerate=tolerate, **kwargs)
        return value

    def request(
        self, method: str, path_or_url: str, *, tolerate: Collection[int] = (), **kwargs: Any
    ) -> requests.Response:
        """Send one call and return its response, its body read (so a body cut off is asked for again)."""
        return self.call(method, path_or_url, _read_whole, tolerate=tolerate, **kwargs)

    def fetch_json(self, method: str, path_or_url: str, *, tolerate: Collection[int] = (), **kwargs: Any) -> Any:
        """Send one call and parse its JSON body; a body that does not parse (cut short) is asked for again."""
        return self.fetch(method, path_or_url, tolerate=tolerate, **kwargs)[1]

    def fetch(
        self, method: str, path_or_url: str, *, tolerate: Collection[int] = (), **kwargs: Any
    ) -> tuple[requests.Response, Any]:
        """`fetch_json`, also returning the response (for its status and headers)."""
        return self.call(method, path_or_url, lambda response: (response, response.json()), tolerate=tolerate, **kwargs)

    def _again(
        self,
        retry: Retry,
        method: str,
        url: str,
        *,
        response: requests.Response | None = None,
        error: Exception | None = None,
    ) -> Retry:
        """The policy after one more failed try, once it has waited as the policy says; raises when it is spent.
        urllib3 is not told the URL (it logs it, and a webhook's URL is its secret)."""
        answer = response.raw if response is not None else None
        try:
            retry = retry.increment(method, None, response=answer, error=error)
        except MaxRetryError:
            if response is not None:  # the last answer, as the service gave it
                self._raise_for_status(method, url, response)
            raise self._gave_up(method, url, error) from error
        self.count(retries=1)
        if isinstance(error, Retryable):
            time.sleep(max(error.after, retry.get_backoff_time()))
        else:
            retry.sleep(answer)
        return retry

    def _gave_up(self, method: str, url: str, error: Exception | None) -> ServiceError:
        retries = f"after {self.max_retries} retries"
        if isinstance(error, CONNECTION_ERRORS):
            return ServiceError(f"{self.service}: {method} {url} unreachable {retries}: {type(error).__name__}")
        if isinstance(error, json.JSONDecodeError):
            return ServiceError(f"{self.service}: {method} {url} kept answering with a body that does not parse "
                                f"({retries}): {error}")
        return ServiceError(f"{self.service}: {method} {url} failed {retries}: {error}")

    def _raise_for_status(self, method: str, url: str, response: requests.Response) -> None:
        status = response.status_code
        if status < 400:
            return
        body = response.text[:500]
        if status in (401, 403):
            raise ServiceConfigurationError(
                f"{self.service} refused the credentials ({status}) for {method} {url}. "
                f"Check {self.credential_env} and the base URL. The API said: {body}",
                status,
            )
        # A throttle the policy is spent on (429, or a 413 with Retry-After) is the service's, not the call's fault.
        refusal = CallRefused if status < 500 and status not in (*RETRY_STATUSES, 413) else ServiceError
        raise refusal(f"{self.service}: {method} {url} answered {status}: {body}", status)


def _read_whole(response: requests.Response) -> requests.Response:
    response.content  # noqa: B018 - read here, inside the retry loop, so a body cut off is asked for again
    return response

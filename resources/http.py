"""One HTTP client for every source: a requests session with urllib3 `Retry`, timeouts and clear errors.

urllib3 retries 429 and 5xx answers (honouring `Retry-After`) and connection failures
before a response starts. A connection dropped in the middle of a body happens after
urllib3 has handed the response over, so `ApiClient.request` retries that case itself.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

RETRY_STATUSES = (429, 500, 502, 503, 504)
# requests raises this when a connection drops part-way through a body (urllib3's IncompleteRead).
BODY_READ_ERRORS = (requests.exceptions.ChunkedEncodingError,)


class SourceError(RuntimeError):
    """A source answered with an error that retrying will not fix."""


class SourceConfigurationError(SourceError):
    """The source refused our credentials: a setting to fix, not a transient fault."""


@dataclass
class RequestStats:
    """Counts kept per extraction, reported as materialisation metadata."""

    requests: int = 0
    retries: int = 0


@dataclass
class ApiClient:
    """A session bound to one source's base URL and auth, with retry and error policy."""

    source: str
    base_url: str
    credential_env: str  # named in configuration errors; the secret itself is never logged
    auth: tuple[str, str] | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    timeout_seconds: float = 30.0
    max_retries: int = 8
    backoff_seconds: float = 0.5
    stats: RequestStats = field(default_factory=RequestStats)

    def __post_init__(self) -> None:
        retry = Retry(
            total=self.max_retries,
            status_forcelist=RETRY_STATUSES,
            allowed_methods=None,  # every call we make is a read, POST search included
            backoff_factor=self.backoff_seconds,
            backoff_max=30,
            respect_retry_after_header=True,
            raise_on_status=False,
        )
        self.session = requests.Session()
        self.session.mount("http://", HTTPAdapter(max_retries=retry))
        self.session.mount("https://", HTTPAdapter(max_retries=retry))
        self.session.headers.update(self.headers)
        if self.auth is not None:
            self.session.auth = self.auth

    def url(self, path_or_url: str) -> str:
        if path_or_url.startswith(("http://", "https://")):
            return path_or_url
        return self.base_url.rstrip("/") + path_or_url

    def request(self, method: str, path_or_url: str, **kwargs: Any) -> requests.Response:
        """Send one call and return its response, or raise a `SourceError`.

        Without `stream=True` the body is read here, so a cut-off body is retried; a
        streamed body is the caller's to read and, if it breaks, to ask for again.
        """
        url = self.url(path_or_url)
        for attempt in range(self.max_retries + 1):
            self.stats.requests += 1
            try:
                response = self.session.request(method, url, timeout=self.timeout_seconds, **kwargs)
            except BODY_READ_ERRORS as exc:
                if attempt == self.max_retries:
                    raise SourceError(f"{self.source}: {method} {url} failed after retries: {exc}") from exc
                self.stats.retries += 1
                time.sleep(min(30.0, self.backoff_seconds * 2**attempt))
                continue
            history = getattr(response.raw, "retries", None)
            self.stats.retries += len(history.history) if history is not None else 0
            self._raise_for_status(method, url, response)
            return response
        raise AssertionError("unreachable")

    def fetch_json(self, method: str, path_or_url: str, **kwargs: Any) -> Any:
        """Send one call and parse its JSON body; a body that does not parse (cut short) is asked for again."""
        for attempt in range(self.max_retries + 1):
            response = self.request(method, path_or_url, **kwargs)
            try:
                return response.json()
            except requests.exceptions.JSONDecodeError as exc:
                if attempt == self.max_retries:
                    raise SourceError(
                        f"{self.source}: {method} {response.url} kept answering with JSON that does not parse: {exc}"
                    ) from exc
                self.stats.retries += 1
                time.sleep(min(30.0, self.backoff_seconds * 2**attempt))
        raise AssertionError("unreachable")

    def _raise_for_status(self, method: str, url: str, response: requests.Response) -> None:
        status = response.status_code
        if status < 400:
            return
        body = response.text[:500]
        if status in (401, 403):
            raise SourceConfigurationError(
                f"{self.source} refused the credentials ({status}) for {method} {url}. "
                f"Check {self.credential_env} and the base URL. The API said: {body}"
            )
        raise SourceError(f"{self.source}: {method} {url} answered {status}: {body}")

"""What every connector resource shares: its base URL, retry settings and one lazily built HTTP client."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import ClassVar

from dagster import ConfigurableResource
from pydantic import Field, PrivateAttr

from resources.http import ApiClient, RateLimit, RequestStats


class ServiceResource(ConfigurableResource):
    """Base URL and retries from the environment; the secret and its header are each connector's own."""

    base_url: str = Field(description="The API's base URL; defaults to the embedded sandbox.")
    timeout_seconds: float = Field(default=30.0, description="Per-request timeout.")
    max_retries: int = Field(default=8, description="Retries for 429, 5xx and broken connections.")
    requests_per_window: int | None = Field(
        default=None,
        description="Calls allowed per window, a margin under the plan's limit; by default the documented limit's.",
    )
    window_seconds: float | None = Field(default=None, description="The rolling window of that limit.")

    _client: ApiClient | None = PrivateAttr(default=None)
    _building: threading.Lock = PrivateAttr(default_factory=threading.Lock)  # ranges may ask for it first, at once

    service_name: ClassVar[str]
    credential_env: ClassVar[str]  # the variable holding the secret, named in configuration errors
    pace: ClassVar[RateLimit | None] = None  # the calls the connector allows itself by default
    # Routes the service limits on their own (a pattern searched in the path), paced beside the account's limit.
    route_paces: ClassVar[Mapping[str, RateLimit]] = {}

    def auth_headers(self) -> dict[str, str]:
        """Headers carrying the credential (a bearer token, say)."""
        return {}

    def basic_auth(self) -> tuple[str, str] | None:
        return None

    def rate_limit(self) -> RateLimit | None:
        """The limit the client paces its own calls under; None leaves pacing to the service's 429s."""
        default = self.pace or (RateLimit(self.requests_per_window, 1.0) if self.requests_per_window else None)
        if default is None:
            return None
        return RateLimit(self.requests_per_window or default.max, self.window_seconds or default.seconds)

    def route_limits(self) -> dict[str, RateLimit]:
        """Each route's own pace, raised or lowered with the account's when `requests_per_window` or
        `window_seconds` sets it (a plan whose limits are all a multiple of the documented ones)."""
        account = self.rate_limit()
        scale = 1.0
        if account is not None and self.pace is not None:  # the account's rate against the default pace's
            scale = (account.max / account.seconds) / (self.pace.max / self.pace.seconds)
        return {route: RateLimit(max(1, int(limit.max * scale)), limit.seconds)
                for route, limit in self.route_paces.items()}

    def build_client(self) -> ApiClient:
        return ApiClient(
            service=self.service_name,
            base_url=self.base_url,
            credential_env=self.credential_env,
            auth=self.basic_auth(),
            headers=self.auth_headers(),
            timeout_seconds=self.timeout_seconds,
            max_retries=self.max_retries,
            rate_limit=self.rate_limit(),
            route_limits=self.route_limits(),
        )

    @property
    def client(self) -> ApiClient:
        """One client, so one pacer, per resource, however many threads ask for it."""
        with self._building:
            if self._client is None:
                self._client = self.build_client()
        return self._client

    @property
    def stats(self) -> RequestStats:
        return self.client.stats

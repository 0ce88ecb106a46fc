"""A Meta custom audience: members added and removed by SHA-256 hashes of their email and phone.

`POST` (add) and `DELETE` (remove) `/{version}/{audience_id}/users` with
`{"payload": {"schema": ["EMAIL", "PHONE"], "data": [[<hash>, <hash>], ...]}}`, up to
10,000 rows a call. Identifiers never leave unhashed: each is put in the one normal form every
layer uses (`cdp_assets/identity/normalise.py`: for an email trimmed of any whitespace or invisible
character and lowercased, as Meta asks, and more), phones reduced to the digits of E.164 (country code,
no `+`), then hashed. Meta throttles
with a 400 whose error code says so (80003 and kin), not a 429; those calls are retried under the
client's one policy, never sooner than the `estimated_time_to_regain_access` (minutes) Meta names in
`X-Business-Use-Case-Usage`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

import requests
from pydantic import Field

from cdp_assets.identity import normalise
from cdp_assets.identity import rules as identity_rules
from resources.destinations import ADD, REMOVE, Delivery, DestinationResource, Erasure, SyncRecord
from resources.http import RateLimit, Retryable, ServiceConfigurationError, ServiceError

USERS_PATH = "/{version}/{audience_id}/users"
SCHEMA = ["EMAIL", "PHONE"]
BATCH_SIZE = 10_000  # rows per call
# Meta publishes no number for custom audience calls; this keeps well inside what ad accounts get.
PACE = RateLimit(50, 60.0)
THROTTLE_CODES = frozenset({4, 17, 32, 613, 80003})  # rate limiting, by Meta's error codes
TOKEN_CODE, MISSING_OBJECT_CODE = 190, 100
CREDENTIAL_ENV = "META_ACCESS_TOKEN"
THROTTLE_PAUSE_SECONDS = 1.0  # the least wait after a throttling answer; the policy's backoff grows past it


def email_hash(value: Any) -> str:
    """SHA-256 hex of the address in its normal form; '' when there is none (or it is not an address)."""
    text = normalise.email(value, identity_rules.load()) if isinstance(value, str) else None
    return hashlib.sha256(text.encode()).hexdigest() if text else ""


def phone_hash(value: Any) -> str:
    """SHA-256 hex of the number's E.164 digits (country code first, no `+`); '' when there is none."""
    e164 = normalise.phone(value, None, identity_rules.load()) if isinstance(value, str) else None
    return hashlib.sha256(e164.removeprefix("+").encode()).hexdigest() if e164 else ""


class MetaAudienceDestination(DestinationResource):
    """Meta Marketing API with a system user's access token."""

    service_name = "meta"
    credential_env = CREDENTIAL_ENV
    modes = frozenset({"audience"})
    batch_size = BATCH_SIZE
    pace = PACE

    access_token: str = Field(description="System user access token, from META_ACCESS_TOKEN.")
    api_version: str = Field(default="v21.0", description="Graph API version, from META_API_VERSION.")

    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token}"}

    def submit(self, operation: str, records: list[SyncRecord], options: Mapping[str, str]) -> Delivery:
        if operation not in (ADD, REMOVE):
            raise ValueError(f"a custom audience takes adds and removals, not {operation}")
        path = USERS_PATH.format(version=self.api_version, audience_id=options["audience_id"])
        data = [[email_hash(r.values.get("email")), phone_hash(r.values.get("phone"))] for r in records]
        method = "POST" if operation == ADD else "DELETE"
        body = self._call(method, path, {"payload": {"schema": SCHEMA, "data": data}})
        invalid = {int(i) for i in (body.get("invalid_entry_samples") or {}) if str(i).isdigit()}
        delivery = Delivery()
        for index, record in enumerate(records):
            if index in invalid:
                delivery.rejected[record.key] = "Meta: not a usable hashed email or phone"
            else:
                delivery.acknowledged[record.key] = None
        return delivery

    def erase(self, erasure: Erasure) -> dict[str, int]:
        """Remove the person from every audience, by each address and number they had."""
        data = [[email_hash(e), ""] for e in erasure.emails] + [["", phone_hash(p)] for p in erasure.phones]
        data = [row for row in data if any(row)]
        for audience_id in erasure.audiences if data else []:
            path = USERS_PATH.format(version=self.api_version, audience_id=audience_id)
            for start in range(0, len(data), BATCH_SIZE):
                self._call("DELETE", path, {"payload": {"schema": SCHEMA, "data": data[start : start + BATCH_SIZE]}})
        return {"audiences_cleared": len(erasure.audiences) if data else 0, "identifiers": len(data)}

    def _call(self, method: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return self.client.call(method, path, _answer, json=body, tolerate=(400,))


def _answer(response: requests.Response) -> dict[str, Any]:
    """A call's answer; Meta's throttling (a 400 with its code) is `Retryable` no sooner than Meta says access
    returns, any other 400 an error about the call."""
    answer = response.json()
    if response.status_code != 400:
        return answer
    error = answer.get("error") or {}
    code = error.get("code")
    if code == TOKEN_CODE:
        raise ServiceConfigurationError(f"meta refused the access token; check {CREDENTIAL_ENV}")
    if code == MISSING_OBJECT_CODE and "does not exist" in str(error.get("message")):
        raise ServiceConfigurationError(f"meta: {error.get('message')}; check the sync's audience id")
    if code in THROTTLE_CODES or error.get("is_transient"):
        usage = response.headers.get("X-Business-Use-Case-Usage")
        raise Retryable(f"throttled ({code})", max(THROTTLE_PAUSE_SECONDS, 60 * _minutes_to_regain(usage)))
    # Meta reports bad rows inside a 200 answer; any other refusal is about the call, not its rows.
    raise ServiceError(f"meta: {response.request.method} {response.url} refused: {error.get('message')}")


def _minutes_to_regain(header: str | None) -> float:
    """The longest `estimated_time_to_regain_access` in a usage header, in minutes (0 when absent)."""
    try:
        usage = json.loads(header or "{}")
        return max((float(u.get("estimated_time_to_regain_access", 0)) for v in usage.values() for u in v), default=0)
    except (ValueError, TypeError, AttributeError):
        return 0.0

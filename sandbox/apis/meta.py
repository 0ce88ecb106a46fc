"""Meta Marketing API custom audience users: add (`POST`) and remove (`DELETE`) hashed identifiers.

`POST /{version}/{audience_id}/users` with `{"payload": {"schema": ["EMAIL", "PHONE"], "data": [[..], ..]}}`,
each value the SHA-256 hex of a normalised identifier. A value that is not such a hash
is an invalid entry: counted in the answer, never stored. Throttling is Meta's own: a 400
with error code 80003 and `is_transient`, plus the `X-Business-Use-Case-Usage` header.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from functools import partial
from typing import Any
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from sandbox.apis import ApiError, Context, Service, bearer, strict_json
from sandbox.faults import Quota

SHA256 = re.compile(r"^[0-9a-f]{64}$")
EMPTY_HASH = hashlib.sha256(b"").hexdigest()
SCHEMA_KEYS = {"EMAIL": "email", "EMAIL_SHA256": "email", "PHONE": "phone", "PHONE_SHA256": "phone"}
AD_ACCOUNT = "act_100000000000001"
THROTTLE_CODE = 80003


def service(ctx: Context) -> Service:
    return Service(
        name="meta",
        endpoints=[("/{version}/{audience_id}/users", partial(_users, ctx), ("POST", "DELETE"))],
        authenticate=partial(_authenticate, ctx),
        render=_render,
        throttled=_throttled,
        limits=lambda path: ("custom_audience",),
        headers=_quota_headers,
    )


def _authenticate(ctx: Context, request: Request) -> None:
    token = bearer(request) or request.query_params.get("access_token")
    if token != ctx.config.credentials.meta.access_token:
        raise ApiError(400, "Invalid OAuth access token - Cannot parse access token", code="190")


def _render(exc: ApiError) -> Response:
    code = int(exc.code) if exc.code and exc.code.isdigit() else (2 if exc.status >= 500 else 100)
    error = {
        "message": exc.message,
        "type": "OAuthException",
        "code": code,
        "is_transient": exc.status >= 500,
        "fbtrace_id": uuid.uuid4().hex[:11],
    }
    return JSONResponse({"error": error}, status_code=exc.status)


def _throttled(limit: str, retry_after: float) -> Response:
    error = {
        "message": f"(#{THROTTLE_CODE}) There have been too many calls to this ad-account. Wait a bit and try again.",
        "type": "OAuthException",
        "code": THROTTLE_CODE,
        "error_subcode": 2446079,
        "is_transient": True,
        "fbtrace_id": uuid.uuid4().hex[:11],
    }
    response = JSONResponse({"error": error}, status_code=400)
    response.headers["X-Business-Use-Case-Usage"] = _usage(100, round(retry_after / 60))
    return response


def _usage(call_count: int, minutes: int) -> str:
    usage = {"type": "custom_audience", "call_count": call_count, "total_cputime": 1, "total_time": 1,
             "estimated_time_to_regain_access": minutes}  # fmt: skip
    return json.dumps({AD_ACCOUNT.removeprefix("act_"): [usage]})


def _quota_headers(quotas: list[Quota]) -> dict[str, str]:
    if not quotas:
        return {}
    q = quotas[0]
    return {"X-Business-Use-Case-Usage": _usage(round(100 * (q.max - q.remaining) / q.max), 0)}


def _payload(request: Request, body: bytes) -> Any:
    """The `payload` parameter, from a JSON body, a form-encoded one or the query string (where the SDKs put it
    on a DELETE, as Graph API accepts any parameter)."""
    try:
        if "payload" in request.query_params:
            return strict_json(request.query_params["payload"].encode())
        if request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
            return strict_json(parse_qs(body.decode())["payload"][0].encode())
        return strict_json(body or b"{}").get("payload")
    except (ValueError, KeyError, AttributeError, RecursionError):  # ValueError covers bad UTF-8 too
        raise ApiError(400, "(#100) The parameter payload is required and must be JSON") from None


def _users(ctx: Context, request: Request, body: bytes) -> Response:
    audience_id = request.path_params["audience_id"]
    if audience_id not in ctx.config.accounts.meta_audiences:
        raise ApiError(400, f"Unsupported post request. Object with ID '{audience_id}' does not exist, cannot be "
                            "loaded due to missing permissions, or does not support this operation", code="100")
    payload = _payload(request, body)
    schema = payload.get("schema") if isinstance(payload, dict) else None
    data = payload.get("data") if isinstance(payload, dict) else None
    schema = [schema] if isinstance(schema, str) else schema
    if not isinstance(schema, list) or not schema or not all(key in SCHEMA_KEYS for key in map(str, schema)):
        raise ApiError(400, f"(#100) Invalid schema; supported keys are {', '.join(SCHEMA_KEYS)}")
    if not isinstance(data, list) or not data:
        raise ApiError(400, "(#100) payload.data must be a non-empty array")
    if len(data) > ctx.config.page_sizes.meta_users:
        raise ApiError(400, f"(#100) At most {ctx.config.page_sizes.meta_users} users per request")
    members, invalid, samples = [], 0, {}
    for n, row in enumerate(data):
        values = row if isinstance(row, list) else [row]
        fields = dict(zip((SCHEMA_KEYS[key] for key in schema), values, strict=False))
        # A multi-key row hashes a field it lacks as the empty string: that field is empty, never a key to match.
        email, phone = (fields.get(key) or "" for key in ("email", "phone"))
        email, phone = ("" if value == EMPTY_HASH else value for value in (email, phone))
        if len(values) != len(schema) or not (email or phone) or any(
            v and not (isinstance(v, str) and SHA256.match(v)) for v in (email, phone)
        ):
            invalid += 1
            samples.setdefault(str(n), "The entry is not a SHA-256 hash of a normalised identifier")
            continue
        members.append((email, phone))
    if request.method == "DELETE":
        ctx.accounts.remove_members(audience_id, members)
    else:
        ctx.accounts.add_members(audience_id, members)
    return JSONResponse(
        {
            "audience_id": audience_id,
            "session_id": str(uuid.uuid4().int % 10**18),
            "num_received": len(data),
            "num_invalid_entries": invalid,
            "invalid_entry_samples": samples,
        }
    )

"""Malformed requests at every sandbox route: each answer is its service's, never a 5xx, plain text or a hang.

Routes are read off the app itself (every service's Starlette routes), so a route added later is fuzzed too.
Hypothesis throws query parameters (huge, negative, float and textual numbers, impossible dates, forged
cursors), auth headers of every kind and bodies of any JSON shape or none at all; each answer must be below 500
and, when it refuses, JSON in the service's error envelope; afterwards the server still answers.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.routing import Mount

from sandbox.apis import encode_cursor
from sandbox.config import TOKEN_ENV, TOKEN_HEADER, SandboxConfig
from sandbox.faults import Gate
from sandbox.runner import ROOT, SandboxServer
from sandbox.server import create_app
from sandbox.world import build_world

TIMEOUT = 5  # seconds: an answer slower than this is a hang
EXAMPLES = 40  # per route; the module stays well under a minute


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


VALID_AUTH: dict[str, dict[str, str]] = {
    "stripe": {"Authorization": "Bearer sk_test_sandbox"},
    "hubspot": {"Authorization": "Bearer pat-sandbox"},
    "zendesk": {"Authorization": basic("sandbox@example.com/token", "zd-sandbox")},
    "klaviyo": {"Authorization": "Klaviyo-API-Key pk_sandbox", "revision": "2024-10-15"},
    "mixpanel": {"Authorization": basic("sandbox.sa", "mp-sandbox")},
    "braze": {"Authorization": "Bearer braze-sandbox"},
    "meta": {"Authorization": "Bearer meta-sandbox"},
}
# Query parameters that take a request past the first checks, so the fuzzed ones reach the deeper parsing.
BASE_QUERY: dict[str, dict[str, str]] = {
    "zendesk": {"start_time": "0"},
    "mixpanel": {"project_id": "1", "from_date": "2024-03-02", "to_date": "2024-03-02"},
}
AUDIENCE = "23850000000000001"
HASH = hashlib.sha256(b"a@example.com").hexdigest()
# One ordinary request per service, which must still succeed after the fuzzing.
NORMAL: dict[str, tuple[str, str, dict[str, Any]]] = {
    "stripe": ("GET", "/v1/customers", {}),
    "hubspot": ("GET", "/crm/v3/objects/contacts", {}),
    "zendesk": ("GET", "/api/v2/incremental/users/cursor.json", {"params": BASE_QUERY["zendesk"]}),
    "klaviyo": ("GET", "/api/profiles", {}),
    "mixpanel": ("GET", "/api/2.0/export", {"params": BASE_QUERY["mixpanel"]}),
    "braze": ("POST", "/users/track", {"json": {"attributes": []}}),
    "meta": ("POST", f"/v19.0/{AUDIENCE}/users", {"json": {"payload": {"schema": ["EMAIL"], "data": [[HASH]]}}}),
}


def _text(value: Any) -> bool:
    return isinstance(value, str)


# Each service's error envelope (docs: /work/shared/reference/saas-apis.md and the vendors' API references).
ENVELOPES: dict[str, Callable[[Any], bool]] = {
    "stripe": lambda b: isinstance(b.get("error"), dict) and _text(b["error"].get("type"))
    and _text(b["error"].get("message")),
    "hubspot": lambda b: b.get("status") == "error" and _text(b.get("message")) and _text(b.get("correlationId")),
    "zendesk": lambda b: _text(b.get("error")),
    "klaviyo": lambda b: isinstance(b.get("errors"), list) and bool(b["errors"])
    and all(_text(e.get("code")) and _text(e.get("detail")) and isinstance(e.get("status"), int) for e in b["errors"]),
    "mixpanel": lambda b: _text(b.get("error")),
    "braze": lambda b: _text(b.get("message")) and isinstance(b.get("errors"), list),
    "meta": lambda b: isinstance(b.get("error"), dict) and _text(b["error"].get("message"))
    and isinstance(b["error"].get("code"), int),
}  # fmt: skip


def service_routes() -> list[tuple[str, str, tuple[str, ...]]]:
    """(service, route path, methods) for every route of every service app, read off the app."""
    with tempfile.TemporaryDirectory() as folder:
        app = create_app(folder, SandboxConfig(), "unused")
    found = []
    for mount in app.routes:
        if isinstance(mount, Mount) and isinstance(mount.app, Gate):
            service = mount.app.signals.name
            found += [(service, route.path, tuple(sorted(route.methods - {"HEAD"}))) for route in mount.app.app.routes]
    return found


ROUTES = service_routes()
PATH_VALUES = {"version": "v19.0", "audience_id": AUDIENCE, "user_id": "1001", "job_id": "x"}

# -- what gets thrown ----------------------------------------------------------------------------------------
HUGE = [2**63, 2**63 - 1, 2**64, -(2**63) - 1, 10**30, 10**400, -1, 0]
numbers = st.one_of(st.sampled_from(HUGE), st.integers(), st.floats())
scalars = st.one_of(st.none(), st.booleans(), numbers, st.text(max_size=20))
json_values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)  # fmt: skip
ODD_TEXT = ["0001-01-01", "9999-12-31", "2024-02-30", "1-1-1", "", "1e309", "0x10", "²", "NaN", "-", "9" * 5000,
            "0001-01-01T00:00:00", "9999-12-31T23:59:59+14:00", "greater-than(updated,99999999999999999999999)",
            "greater-than(updated,0001-01-01T00:00:00Z)", "less-than(datetime,9999-12-31)", '["Signed up"]',
            "and(greater-than(updated,1),less-than(updated,2))"]  # fmt: skip
query_values = st.one_of(
    st.sampled_from(HUGE).map(str),
    st.sampled_from(HUGE).map(str),
    numbers.map(str),
    st.text(max_size=30),
    st.sampled_from(ODD_TEXT),
    json_values.map(encode_cursor),  # forged cursors: any JSON, encoded as the sandbox encodes its own
    json_values.map(json.dumps),
    st.binary(max_size=30).map(lambda raw: base64.urlsafe_b64encode(raw).decode()),
)
anything = st.one_of(query_values, scalars, json_values)
# The parameters each service documents (saas-apis.md), so fuzzed values reach the parsing behind the names.
PARAMS: dict[str, list[str]] = {
    "stripe": ["limit", "starting_after", "ending_before", "created", "created[gt]", "created[gte]", "created[lt]",
               "created[lte]", "email", "customer", "subscription", "status", "type", "types[]", "types[0]"],
    "hubspot": ["limit", "after", "archived", "properties"],
    "zendesk": ["start_time", "cursor", "per_page"],
    "klaviyo": ["page[size]", "page[cursor]", "sort", "filter", "additional-fields[profile]", "fields[profile]",
                "fields[event]"],
    "mixpanel": ["project_id", "from_date", "to_date", "event", "limit"],
    "braze": [],
    "meta": ["access_token", "payload"],
}  # fmt: skip
PROPERTY = st.sampled_from(["hs_object_id", "lastmodifieddate", "createdate", "email", "cdp_plan", "a b"])
OPERATOR = st.sampled_from(["EQ", "GT", "LTE", "IN", "NOT_IN", "BETWEEN", "HAS_PROPERTY", "CONTAINS_TOKEN", "NOPE"])
# The documented request bodies; every field may be left out or be of any other kind.
BODIES: dict[str, list[Any]] = {
    "hubspot": [
        {"filterGroups": [{"filters": [{"propertyName": PROPERTY, "operator": OPERATOR, "value": anything,
                                        "values": [anything], "highValue": anything}]}],
         "sorts": [{"propertyName": PROPERTY, "direction": st.sampled_from(["ASCENDING", "DESCENDING"])}],
         "properties": [PROPERTY], "limit": anything, "after": anything, "query": anything},
        {"inputs": [{"id": anything, "idProperty": st.just("email"), "properties": {"cdp_plan": anything}}]},
        {"objectId": anything, "idProperty": st.just("email")},
    ],
    "zendesk": [{"users": [{"email": anything, "name": anything,
                            "user_fields": {"cdp_plan": anything, "cdp_subscription_status": anything}}]}],
    "braze": [{"attributes": [{"external_id": anything, "email": anything, "email_subscribe": anything}],
               "external_ids": [anything]}],
    "meta": [{"payload": {"schema": [st.sampled_from(["EMAIL", "PHONE", "EMAIL_SHA256"]) | anything],
                          "data": [[st.just(HASH) | anything]]}}],
}  # fmt: skip


def shaped(template: Any) -> st.SearchStrategy[Any]:
    """Values of a documented shape, where any part may be missing or of another kind."""
    if isinstance(template, dict):
        return st.fixed_dictionaries({}, optional={k: shaped(v) | anything for k, v in template.items()})
    if isinstance(template, list):
        return st.lists(shaped(template[0]) | anything, max_size=3)
    return template


header_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"), max_size=30)
bad_auth = st.one_of(
    st.just({}),
    st.tuples(st.sampled_from(["Basic", "Bearer", "Klaviyo-API-Key", "Digest", ""]), header_text).map(
        lambda parts: {"Authorization": f"{parts[0]} {parts[1]}".strip()}
    ),
    st.binary(max_size=24).map(lambda raw: {"Authorization": "Basic " + base64.b64encode(raw).decode()}),
)
extra_headers = st.fixed_dictionaries(
    {},
    optional={
        "Content-Type": st.sampled_from(["application/json", "application/x-www-form-urlencoded", "text/plain"]),
        "X-Forwarded-Host": header_text.map(str.strip),
        "revision": header_text.map(str.strip),
    },
)


def bodies(service: str) -> st.SearchStrategy[bytes | None]:
    documented = [shaped(template) for template in BODIES.get(service, [])]
    return st.one_of(
        st.none(),
        st.one_of(*documented, json_values).map(lambda value: json.dumps(value).encode()),
        st.binary(max_size=40),
        st.just(b"[" * 50_000),  # deeper than any JSON parser recurses
        json_values.map(lambda value: b"payload=" + quote(json.dumps(value)).encode()),
    )


def mostly(draw: st.DrawFn, usual: st.SearchStrategy[Any], rare: st.SearchStrategy[Any]) -> Any:
    """`usual` four times in five, so most requests get past the first checks to the parsing behind them."""
    return draw(rare if draw(st.integers(0, 4)) == 0 else usual)


@st.composite
def requests_for(draw: st.DrawFn, service: str, path: str, methods: tuple[str, ...]) -> dict[str, Any]:
    method = mostly(draw, st.sampled_from(methods), st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE"]))
    segment = st.text(min_size=1, max_size=12).filter(lambda text: text not in (".", ".."))  # clients resolve those
    params = {name: mostly(draw, st.just(value), segment) for name, value in PATH_VALUES.items()
              if "{" + name + "}" in path}  # fmt: skip
    filled = path.format(**{name: quote(params.get(name, value), safe="") for name, value in PATH_VALUES.items()})
    names = st.sampled_from(PARAMS[service]) if PARAMS[service] else st.text(min_size=1, max_size=10)
    fuzzed = draw(st.dictionaries(mostly(draw, st.just(names), st.just(st.text(min_size=1, max_size=10))),
                                  query_values, max_size=2))  # fmt: skip
    query = {**draw(st.sampled_from([{}, BASE_QUERY.get(service, {})])), **fuzzed}
    auth = mostly(draw, st.just(VALID_AUTH[service]), bad_auth)
    return {"method": method, "url": f"/{service}{filled}", "params": query,
            "headers": {**auth, **draw(extra_headers)}, "data": draw(bodies(service))}  # fmt: skip


# -- the server ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxServer]:
    """Limits and faults off, so every answer is the route's own; jobs run at once."""
    folder = tmp_path_factory.mktemp("sandbox-fuzz")
    build_world(folder, people=30, seed=7)  # a world of its own: the fuzzing writes to its accounts
    limits = {service: {name: {"max": 0} for name in named} for service, named in SandboxConfig().limits.items()}
    config = {"limits": limits, "accounts": {"zendesk_job_seconds": 0.05}, "zendesk_recent_exclusion_seconds": 0}
    with SandboxServer(folder, config) as sandbox:
        yield sandbox


def assert_answered_in_envelope(service: str, response: requests.Response) -> None:
    """Below 500; a refusal is JSON in the service's envelope."""
    where = f"{response.request.method} {response.request.url} -> {response.status_code} {response.text[:300]!r}"
    assert response.status_code < 500, where
    if response.status_code >= 400:
        assert response.headers.get("content-type", "").startswith("application/json"), where
        assert ENVELOPES[service](response.json()), where


def assert_still_answers(server: SandboxServer, service: str) -> None:
    assert requests.get(f"{server.url}/_sandbox/health", timeout=TIMEOUT).json() == {"status": "ok"}
    method, path, kwargs = NORMAL[service]
    response = requests.request(method, server.base_urls[service] + path, headers=VALID_AUTH[service],
                                timeout=TIMEOUT, **kwargs)  # fmt: skip
    assert response.status_code in (200, 201), response.text[:300]


# -- the tests -----------------------------------------------------------------------------------------------
def test_every_service_app_is_fuzzed() -> None:
    services = {service for service, _, _ in ROUTES}
    assert services == set(VALID_AUTH) == set(ENVELOPES) == set(NORMAL) == set(PARAMS) and len(ROUTES) > len(services)


def test_a_zendesk_bulk_job_with_bad_records_completes_with_per_record_errors(server: SandboxServer) -> None:
    """Bad users end as errors in the job's results; no job stays "working", so the job limit frees up."""
    url = server.base_urls["zendesk"] + "/api/v2"
    auth = VALID_AUTH["zendesk"]
    users = [
        {"email": "fuzz.good@example.com", "name": "Good"},
        {"email": "fuzz.null@example.com", "user_fields": None},  # once crashed the job thread
        "not an object",
        {"name": "no email"},
        {"email": "fuzz.list@example.com", "user_fields": [1]},
        {"email": "fuzz.option@example.com", "user_fields": {"cdp_subscription_status": {}}},
    ]
    server.control("config", "PATCH", {"accounts": {"zendesk_max_jobs": 2}})
    try:
        for _ in range(3):  # three rounds of two jobs: each round fits only if the last round's jobs all ended
            jobs = []
            for _ in range(2):
                submitted = requests.post(f"{url}/users/create_or_update_many", json={"users": users},
                                          headers=auth, timeout=TIMEOUT)  # fmt: skip
                assert submitted.status_code == 200, submitted.text
                jobs.append(submitted.json()["job_status"]["id"])
            for job_id in jobs:
                deadline, job = time.monotonic() + 10, {"status": "queued"}
                while job["status"] in ("queued", "working") and time.monotonic() < deadline:
                    time.sleep(0.05)
                    job = requests.get(f"{url}/job_statuses/{job_id}.json", headers=auth, timeout=TIMEOUT).json()
                    job = job["job_status"]
                assert job["status"] == "completed", job
                results = job["results"]
                assert [r.get("success") for r in results] == [True, True, None, None, None, None], results
                assert all(r["status"] == "Failed" and r["details"] for r in results[2:]), results
    finally:
        server.control("config", "PATCH", {"accounts": {"zendesk_max_jobs": 30}})


@pytest.mark.parametrize(("service", "path", "methods"), ROUTES, ids=[f"{s}{p}" for s, p, _ in ROUTES])
def test_malformed_requests_get_the_services_own_answer(
    server: SandboxServer, service: str, path: str, methods: tuple[str, ...]
) -> None:
    @settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(request=requests_for(service, path, methods))
    def answers(request: dict[str, Any]) -> None:
        response = requests.request(
            request["method"], server.url + request["url"], params=request["params"], headers=request["headers"],
            data=request["data"], timeout=TIMEOUT,
        )  # fmt: skip
        assert_answered_in_envelope(service, response)

    answers()
    assert_still_answers(server, service)


# The malformed requests the issue found answered with 500, plain text or a crashed job: each must get a 4xx.
NAMED: list[tuple[str, str, str, dict[str, Any]]] = [
    ("stripe", "GET", "/v1/customers", {"headers": {"Authorization": "Basic !!not-base64!!"}}),
    ("zendesk", "GET", "/api/v2/incremental/users/cursor.json", {"headers": {"Authorization": "Basic ÿÿÿ"}}),
    ("stripe", "GET", "/v1/events", {"params": {"created[gt]": str(2**63)}}),
    ("stripe", "GET", "/v1/customers", {"params": {"created[gte]": "1.5"}}),
    ("zendesk", "GET", "/api/v2/incremental/users/cursor.json", {"params": {"start_time": str(2**63)}}),
    ("zendesk", "GET", "/api/v2/incremental/users/cursor.json", {"params": {"cursor": encode_cursor([2**64, {}])}}),
    ("hubspot", "GET", "/crm/v3/objects/contacts", {"params": {"after": encode_cursor({"id": 1})}}),
    ("klaviyo", "GET", "/api/profiles", {"params": {"page[cursor]": encode_cursor({"sort": "", "after": [{}]})}}),
    ("klaviyo", "GET", "/api/events",
     {"params": {"sort": "datetime", "page[cursor]": encode_cursor({"sort": "datetime", "after": [2**70, "x"]})}}),
    ("klaviyo", "GET", "/api/events", {"params": {"filter": f"greater-than(datetime,{10**25})"}}),
    ("hubspot", "POST", "/crm/v3/objects/contacts/search", {"json": [{"filterGroups": []}]}),
    ("hubspot", "POST", "/crm/v3/objects/contacts/search", {"json": {"filterGroups": "lastmodifieddate"}}),
    ("hubspot", "POST", "/crm/v3/objects/contacts/search", {"json": {"filterGroups": [{"filters": [{
        "propertyName": "lastmodifieddate", "operator": ["GTE"], "value": 1}]}]}}),
    ("hubspot", "POST", "/crm/v3/objects/contacts/search", {"json": {"filterGroups": [{"filters": [{
        "propertyName": "lastmodifieddate", "operator": "GTE", "value": str(2**64)}]}]}}),
    ("hubspot", "POST", "/crm/v3/objects/contacts/search", {"data": b'{"properties": 5, "limit": Infinity}'}),
    ("hubspot", "POST", "/crm/v3/objects/contacts/gdpr-delete", {"json": [{"objectId": "1"}]}),
    ("mixpanel", "GET", "/api/2.0/export", {"params": {**BASE_QUERY["mixpanel"], "to_date": "next tuesday"}}),
    ("meta", "POST", f"/v19.0/{AUDIENCE}/users", {"json": {"payload": {"schema": [{}], "data": [[HASH]]}}}),
    ("braze", "POST", "/users/track", {"data": b"[" * 50_000}),
    # Python's json takes NaN; kept as an attribute, it would break every later read of the user.
    ("braze", "POST", "/users/track", {"data": b'{"attributes": [{"external_id": "u1", "score": NaN}]}'}),
]  # fmt: skip
# Well-formed, if odd: a window from year 1 or to year 9999 is a window, served like any other.
ODD_BUT_VALID = [
    ("mixpanel", "GET", "/api/2.0/export", {"params": {**BASE_QUERY["mixpanel"], "from_date": "0001-01-01"}}),
    ("mixpanel", "GET", "/api/2.0/export", {"params": {**BASE_QUERY["mixpanel"], "to_date": "9999-12-31"}}),
]


@pytest.mark.parametrize(("service", "method", "path", "request_args"), [*NAMED, *ODD_BUT_VALID],
                         ids=[f"{n[0]}{n[2]}" for n in [*NAMED, *ODD_BUT_VALID]])  # fmt: skip
def test_the_requests_once_answered_with_500_get_the_services_answer(
    server: SandboxServer, service: str, method: str, path: str, request_args: dict[str, Any]
) -> None:
    headers = {**VALID_AUTH[service], **request_args.get("headers", {})}
    response = requests.request(method, server.base_urls[service] + path, timeout=TIMEOUT,
                                **{**request_args, "headers": headers})  # fmt: skip
    refused = (service, method, path, request_args) in NAMED
    assert (400 <= response.status_code < 500) if refused else response.ok, response.text[:300]
    assert_answered_in_envelope(service, response)


def test_unknown_paths_and_methods_are_refused_in_the_envelope(server: SandboxServer) -> None:
    for service, path, methods in ROUTES:
        filled = path.format(**PATH_VALUES)
        refused = requests.put(server.base_urls[service] + filled, headers=VALID_AUTH[service], timeout=TIMEOUT)
        if "PUT" not in methods:
            assert refused.status_code == 405 and "PUT" not in refused.headers["allow"], (service, path)
            assert_answered_in_envelope(service, refused)
    for service in VALID_AUTH:
        missing = requests.get(server.base_urls[service] + "/no/such/route", headers=VALID_AUTH[service],
                               timeout=TIMEOUT)  # fmt: skip
        assert missing.status_code == 404
        assert_answered_in_envelope(service, missing)
    outside = requests.get(server.url + "/no/such/service", timeout=TIMEOUT)
    assert outside.status_code == 404 and outside.json()["error"]


def test_control_routes_need_the_launchers_token(server: SandboxServer) -> None:
    config = f"{server.url}/_sandbox/config"
    missing = requests.get(config, timeout=TIMEOUT)
    wrong = requests.get(config, headers={TOKEN_HEADER: "guessed"}, timeout=TIMEOUT)
    assert (missing.status_code, wrong.status_code) == (401, 403)
    assert "zd-sandbox" not in missing.text + wrong.text  # no credential leaves without the token
    for method, path in (("PATCH", "config"), ("POST", "tick"), ("DELETE", "stats"), ("GET", "webhook")):
        assert requests.request(method, f"{server.url}/_sandbox/{path}", timeout=TIMEOUT).status_code == 401
    assert server.control("config")["credentials"]["zendesk"]["api_token"] == "zd-sandbox"
    assert requests.get(f"{server.url}/_sandbox/health", timeout=TIMEOUT).ok  # readiness probes need no token

    # The webhook receiver takes its token in its URL, as chat tools' secret webhook URLs do.
    guessed = requests.post(f"{server.url}/_sandbox/webhook/guessed", json={"text": "x"}, timeout=TIMEOUT)
    assert guessed.status_code == 404
    assert requests.post(server.webhook_url, json={"text": "fuzz alert"}, timeout=TIMEOUT).ok
    assert {"text": "fuzz alert"} in server.control("webhook")


# -- the control routes --------------------------------------------------------------------------------------
def control_routes() -> list[tuple[str, tuple[str, ...]]]:
    """(route path, methods) of every ``/_sandbox`` route, read off the app."""
    with tempfile.TemporaryDirectory() as folder:
        app = create_app(folder, SandboxConfig(), "unused")
    guard = next(mount.app for mount in app.routes if isinstance(mount, Mount) and mount.path == "/_sandbox")
    return [(route.path, tuple(sorted(route.methods - {"HEAD"}))) for route in guard.app.routes]


CONTROL_ROUTES = control_routes()
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
SLOW = {("POST", "/corpus")}  # writes megabytes each time; tests/test_sandbox_corpus.py covers it
# Ticks: refused values, and valid ones small enough that the fuzzing does not churn the world for long.
TICK_QUERY = {
    "count": st.sampled_from(["0", "-1", "10001", str(2**63), "1.5", "x", "1e3", "9" * 5000]) | st.just("1"),
    "changes": st.sampled_from(["-1", "1000001", str(2**64), "2.0", "ten", ""]) | st.integers(0, 3).map(str),
}


@pytest.fixture(scope="module")
def control_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxServer]:
    """A tiny world of its own: fuzzed config patches and ticks must not slow or steer the services' fuzzing."""
    folder = tmp_path_factory.mktemp("sandbox-control-fuzz")
    build_world(folder, people=5, seed=11)
    with SandboxServer(folder) as sandbox:
        yield sandbox


@st.composite
def control_requests(draw: st.DrawFn, path: str, methods: tuple[str, ...], token: str) -> dict[str, Any]:
    rare = st.sampled_from([m for m in METHODS if (m, path) not in SLOW])
    usual = [m for m in methods if (m, path) not in SLOW]
    method = mostly(draw, st.sampled_from(usual) if usual else rare, rare)
    segment = st.text(min_size=1, max_size=12).filter(lambda text: text not in (".", ".."))
    values = {"secret": mostly(draw, st.just(token), segment), "name": mostly(draw, st.sampled_from(["braze", "meta"]),
                                                                               segment)}  # fmt: skip
    filled = path.format(**{name: quote(value, safe="") for name, value in values.items() if "{" + name + "}" in path})
    if path == "/tick":
        query = draw(st.fixed_dictionaries({}, optional=TICK_QUERY))
    else:
        query = draw(st.dictionaries(st.text(min_size=1, max_size=10), query_values, max_size=2))
    headers = mostly(draw, st.just({TOKEN_HEADER: token}), header_text.map(lambda text: {TOKEN_HEADER: text.strip()}))
    return {"method": method, "url": f"/_sandbox{filled}", "params": query, "headers": headers,
            "data": draw(bodies("control"))}  # fmt: skip


@pytest.mark.parametrize(("path", "methods"), CONTROL_ROUTES, ids=[p for p, _ in CONTROL_ROUTES])
def test_malformed_control_requests_get_a_json_answer(
    control_server: SandboxServer, path: str, methods: tuple[str, ...]
) -> None:
    @settings(max_examples=EXAMPLES // 2, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(request=control_requests(path, methods, control_server.token))
    def answers(request: dict[str, Any]) -> None:
        response = requests.request(
            request["method"], control_server.url + request["url"], params=request["params"],
            headers=request["headers"], data=request["data"], timeout=TIMEOUT,
        )  # fmt: skip
        where = f"{response.request.method} {response.request.url} -> {response.status_code} {response.text[:300]!r}"
        assert response.status_code < 500, where
        if response.status_code >= 400:
            assert response.headers.get("content-type", "").startswith("application/json"), where
            assert isinstance(response.json().get("error"), str), where

    answers()
    assert requests.get(f"{control_server.url}/_sandbox/health", timeout=TIMEOUT).json() == {"status": "ok"}
    assert isinstance(control_server.control("tick", "POST", changes=1), dict)


@pytest.mark.parametrize("query", [{"count": "0"}, {"count": "10001"}, {"count": "-3"}, {"changes": "-1"},
                                   {"changes": "1000001"}, {"changes": str(2**63)}, {"count": "two"}])  # fmt: skip
def test_a_tick_outside_its_bounds_is_refused(control_server: SandboxServer, query: dict[str, str]) -> None:
    response = requests.post(f"{control_server.url}/_sandbox/tick", params=query,
                             headers={TOKEN_HEADER: control_server.token}, timeout=TIMEOUT)  # fmt: skip
    body = response.json()
    assert (response.status_code, body["param"]) == (400, next(iter(query))) and body["error"], response.text


def test_a_sandbox_started_by_hand_listens_on_loopback_and_tells_its_token(tmp_path: Path) -> None:
    build_world(tmp_path, people=5, seed=7)
    env = {k: v for k, v in os.environ.items() if k != TOKEN_ENV}
    command = [sys.executable, "-m", "sandbox", "serve", "--folder", str(tmp_path), "--port", "0"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT)
    try:
        lines = [process.stdout.readline() for _ in range(2)] if process.stdout else []
        token = lines[0].rsplit(": ", 1)[1].strip()
        url = lines[1].rsplit(" ", 1)[1].strip()
        assert url.startswith("http://127.0.0.1:"), lines
        assert requests.get(f"{url}/_sandbox/config", timeout=TIMEOUT).status_code == 401
        assert requests.get(f"{url}/_sandbox/config", headers={TOKEN_HEADER: token}, timeout=TIMEOUT).ok
    finally:
        process.terminate()
        process.wait(10)

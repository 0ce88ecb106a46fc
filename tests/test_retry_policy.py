"""One retry policy per client and one pacer per API account (`resources/http.py`), against a scripted service on
loopback: whatever fails (an answer of 429 or 5xx, a dropped connection, a body cut short, a body that is not JSON,
a service's own throttling signal), a call's retries draw on one budget, and a source and a destination on one
account stay under its one limit together."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import date
from http.server import BaseHTTPRequestHandler
from typing import Any, ClassVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resources.destinations import SyncRecord
from resources.destinations.hubspot import HubSpotContactsDestination
from resources.destinations.meta import MetaAudienceDestination
from resources.http import ApiClient, CallRefused, ServiceError
from resources.hubspot import HubSpotResource
from resources.mixpanel import MixpanelResource
from tests.conftest import serving

EVENT = b'{"event": "a", "properties": {"time": 1700000000, "distinct_id": "u1", "$insert_id": "1"}}'
# What the scripted service does with one call; "ok" answers `{"ok": true}`.
FAILURES = ("503", "429", "dropped", "cut", "not_json", "throttled")


class Scripted(BaseHTTPRequestHandler):
    """Answers each call with the next step of `script` ("ok" once it runs out), logging when each arrived."""

    script: ClassVar[list[str]] = []
    arrivals: ClassVar[list[float]] = []
    lock: ClassVar[threading.Lock] = threading.Lock()
    protocol_version = "HTTP/1.1"

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        with self.lock:
            type(self).arrivals.append(time.monotonic())
            step = self.script.pop(0) if self.script else "ok"
        if step == "dropped":  # no answer at all: the connection closes under the client
            self.close_connection = True
            return
        kind, _, value = step.partition(":")  # "wait:7" (Retry-After), "reset:3" (a reset time), "usage:2" (Meta's)
        usage = json.dumps({"1": [{"estimated_time_to_regain_access": value}]})
        status, headers, body = {
            "wait": (429, {"Retry-After": value}, b"{}"),
            "reset": (429, {"X-RateLimit-Reset": value}, b"{}"),
            "usage": (400, {"X-Business-Use-Case-Usage": usage}, json.dumps({"error": {"code": 80003}}).encode()),
        }.get(kind) or {
            "503": (503, {}, b'{"error": "unavailable"}'),
            "429": (429, {"Retry-After": "0"}, b'{"error": "slow down"}'),
            "not_json": (200, {}, b'{"ok": tr'),
            "lines_cut": (200, {}, EVENT + b'\n{"event": "b", "pro'),
            "throttled": (400, {}, json.dumps({"error": {"code": 80003, "is_transient": True}}).encode()),
            "ok": (200, {}, json.dumps({"ok": True, "invalid_entry_samples": {}}).encode()),
        }.get(step, (200, {}, b'{"ok": true}'))
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        # A cut body promises more than it sends, then closes.
        self.send_header("Content-Length", str(len(body) + (100 if step == "cut" else 0)))
        self.end_headers()
        self.wfile.write(body)
        if step == "cut":
            self.close_connection = True

    do_GET = do_POST = do_DELETE = _answer

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def service() -> Iterator[str]:
    with serving(Scripted) as url:
        yield url


def scripted(steps: list[str]) -> None:
    with Scripted.lock:
        Scripted.script[:] = steps
        Scripted.arrivals.clear()


def meta(url: str, retries: int) -> MetaAudienceDestination:
    return MetaAudienceDestination(base_url=url, access_token="token", max_retries=retries)


@settings(max_examples=40, deadline=None)
@given(
    failures=st.lists(st.sampled_from([f for f in FAILURES if f != "throttled"]), max_size=5),
    retries=st.integers(min_value=0, max_value=5),
)
def test_a_calls_failures_of_every_kind_draw_on_one_budget(service: str, failures: list[str], retries: int) -> None:
    """A call that fails n times in any mix of ways succeeds when n is within its retries, after exactly n retries,
    and otherwise fails with a `ServiceError` after retries + 1 calls: never more (budgets stacked by kind would let
    a mix through on more calls than the budget)."""
    scripted(failures)
    client = ApiClient("scripted", service, "SCRIPTED_KEY", max_retries=retries, backoff_seconds=0)
    if len(failures) <= retries:
        assert client.fetch_json("GET", "/things")["ok"] is True
        assert (len(Scripted.arrivals), client.stats.retries) == (len(failures) + 1, len(failures))
    else:
        with pytest.raises(ServiceError) as raised:
            client.fetch_json("GET", "/things")
        assert (len(Scripted.arrivals), client.stats.retries) == (retries + 1, retries)
        # Spent on a throttle, the call was not refused: the check calls that an outage, not the call's fault.
        assert isinstance(raised.value, CallRefused) is False
    assert client.stats.requests == len(Scripted.arrivals)  # every try is a request, paced and counted


@pytest.mark.parametrize(("failures", "retries"), [(["throttled", "503"], 2), (["throttled", "throttled"], 1)])
def test_metas_throttling_draws_on_the_same_budget(service: str, failures: list[str], retries: int) -> None:
    """Meta throttles with a 400 carrying its code, not a 429: those retries count with the rest."""
    scripted(failures)
    audience = meta(service, retries)
    records = [SyncRecord("k", {"email": "someone@example.com", "phone": None})]
    if len(failures) <= retries:
        assert audience.submit("add", records, {"audience_id": "1"}).acknowledged == {"k": None}
    else:
        with pytest.raises(ServiceError, match="throttled"):
            audience.submit("add", records, {"audience_id": "1"})
    assert len(Scripted.arrivals) == min(len(failures), retries) + 1
    assert audience.stats.retries == min(len(failures), retries)


@pytest.mark.parametrize("retries", [0, 1])
def test_mixpanels_export_cut_off_mid_line_is_read_again_within_the_budget(service: str, retries: int) -> None:
    """A streamed export whose last line was cut off is asked for again, under the same budget as any other call."""
    scripted(["lines_cut"])
    export = MixpanelResource(
        base_url=service, service_account_username="u", service_account_secret="s", project_id="1",
        max_retries=retries,
    )
    if retries:
        [page] = export._window(date(2026, 1, 1), date(2026, 1, 1))
        assert [record.payload for record in page] == [{"ok": True, "invalid_entry_samples": {}}]
    else:
        with pytest.raises(ServiceError, match="does not parse"):
            list(export._window(date(2026, 1, 1), date(2026, 1, 1)))
    assert (len(Scripted.arrivals), export.stats.retries) == (retries + 1, retries)


def busiest(arrivals: list[float], seconds: float) -> int:
    """The most calls that arrived within any span of `seconds`."""
    times = sorted(arrivals)
    return max((sum(1 for t in times[i:] if t - start < seconds) for i, start in enumerate(times)), default=0)


def test_a_source_and_a_destination_on_one_account_share_its_limit(service: str) -> None:
    """HubSpot's source and destination, called at once on one account, stay under its one limit together; a client
    on another account (another token) is not held back by them."""
    scripted([])
    plan = {"requests_per_window": 5, "window_seconds": 0.5}
    source = HubSpotResource(base_url=service, access_token="one", **plan)
    destination = HubSpotContactsDestination(base_url=service, access_token="one", **plan)
    threads = [
        threading.Thread(target=lambda client=client: [client.fetch_json("GET", "/crm") for _ in range(6)])
        for client in (source.client, destination.client)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(Scripted.arrivals) == 12
    assert busiest(Scripted.arrivals, 0.4) <= 5  # two pacers of 5 each would let 10 through at once

    scripted([])
    other = HubSpotResource(base_url=service, access_token="another", **plan)
    started = time.monotonic()
    for _ in range(5):
        other.client.fetch_json("GET", "/crm")
    assert time.monotonic() - started < 0.4 and other.stats.waited_seconds == 0


def test_two_limits_declared_for_one_account_pace_both_clients_at_the_stricter(service: str) -> None:
    """A setting given to one client alone (the source's, a lower plan's, say) holds every client of the account,
    whichever was built last: the service counts their calls together."""
    scripted([])
    source = HubSpotResource(base_url=service, access_token="two", requests_per_window=2, window_seconds=0.5)
    source.client.fetch_json("GET", "/crm")
    destination = HubSpotContactsDestination(
        base_url=service, access_token="two", requests_per_window=5, window_seconds=0.5
    )
    for _ in range(3):
        destination.client.fetch_json("GET", "/crm")
    assert busiest(Scripted.arrivals, 0.4) <= 2


@pytest.mark.parametrize(
    ("steps", "waits"),
    [
        (["wait:7"], [7.0]),  # Retry-After, in seconds
        (["wait:1.5"], [1.5]),  # in fractions of one too
        (["wait:soon"], []),  # unreadable: the backoff, whose first retry follows at once
        (["wait:inf"], []),  # not a finite number of seconds: the backoff too
        (["wait:86400"], [600.0]),  # a day: no wait is longer than MAX_WAIT_SECONDS
        (["reset:3"], [3.0]),  # no Retry-After, but the time the limit resets
        (["503", "503", "503"], [1.0, 2.0]),  # exponential backoff after the first
    ],
)
def test_a_retry_waits_as_the_service_asks(
    service: str, monkeypatch: pytest.MonkeyPatch, steps: list[str], waits: list[float]
) -> None:
    slept: list[float] = []
    monkeypatch.setattr(time, "sleep", slept.append)
    scripted(steps)
    client = ApiClient("scripted", service, "SCRIPTED_KEY", max_retries=len(steps), backoff_seconds=0.5)
    assert client.fetch_json("GET", "/things")["ok"] is True
    assert slept == [pytest.approx(wait, abs=0.05) for wait in waits]


@pytest.mark.parametrize(("step", "wait"), [("usage:2", 120.0), ("throttled", 1.0)])
def test_meta_is_asked_again_no_sooner_than_it_says_access_returns(
    service: str, monkeypatch: pytest.MonkeyPatch, step: str, wait: float
) -> None:
    """Meta names the minutes until access returns in `X-Business-Use-Case-Usage`; without them, a second at least."""
    slept: list[float] = []
    monkeypatch.setattr(time, "sleep", slept.append)
    scripted([step])
    audience = meta(service, 1)
    audience.submit("add", [SyncRecord("k", {"email": "someone@example.com", "phone": None})], {"audience_id": "1"})
    assert slept == [wait]

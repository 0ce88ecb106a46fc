"""The bad-input corpus, served over real HTTP: every case reaches its API intact.

A small generated world gets the corpus through ``POST /_sandbox/corpus``; each test
reads it back the way a connector would (incremental filters from the injection time),
so a contract test can rely on exactly these records being served.
"""

from __future__ import annotations

import csv
import json
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests

from sandbox.corpus import CONTROL, DUPLICATED, HTML, HUGE_ID, NAME, OVERSIZED, SCRIPTS, SQL, corpus
from sandbox.runner import SandboxServer
from sandbox.store import ANOMALIES_FILE, TRUTH_FILE, WorldStore
from tests.test_sandbox_server import HUBSPOT, KLAVIYO, LIMITS_OFF, MIXPANEL, STRIPE, ZENDESK

KINDS = {
    "wrong_type", "null_required", "invalid_email", "future_timestamp", "negative_amount", "unknown_enum",
    "oversized_string", "non_ascii", "sql_like", "html_like", "nested_object", "duplicate_id",
    # hostile records: each once stopped a pull before any contract saw it
    "unix_milliseconds", "unix_seconds", "sentinel_date", "far_future_date", "year_one_date", "zoneless_timestamp",
    "string_for_object", "list_for_object", "id_above_2_63", "control_character",
}
VALID_KINDS = {"non_ascii", "sql_like", "html_like", "duplicate_id"}  # unusual but valid: they must be staged
BAD_STREAMS = {
    "stripe.customers", "stripe.invoices", "stripe.subscriptions", "hubspot.contacts", "zendesk.users",
    "zendesk.tickets", "klaviyo.profiles", "klaviyo.events", "mixpanel.events",
}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from sandbox.world import build_world

    folder = tmp_path_factory.mktemp("corpus-world")
    build_world(folder, people=60, seed=3, anchor=1_780_000_000)
    return folder


@pytest.fixture(scope="module")
def server(world: Path) -> Iterator[SandboxServer]:
    # Zendesk holds back the last minute's changes by default; the corpus was just written.
    with SandboxServer(world, {"limits": LIMITS_OFF, "zendesk_recent_exclusion_seconds": 0}) as sandbox:
        yield sandbox


@pytest.fixture(scope="module")
def injected(server: SandboxServer) -> tuple[int, dict[str, list[dict[str, str]]]]:
    """(unix seconds just before the first injection, the route's summary)."""
    before = int(time.time()) - 1
    return before, server.control("corpus", "POST")


@pytest.fixture
def sb(server: SandboxServer) -> Iterator[SandboxServer]:
    yield server
    faults = {"default": {"truncate_rate": 0}, "hubspot": None}
    server.control("config", "PATCH", {"duplicates": {"stripe": False, "zendesk": False}, "faults": faults})


def get(sb: SandboxServer, service: str, path: str, **kwargs: Any) -> requests.Response:
    response = requests.get(sb.base_urls[service] + path, timeout=30, **kwargs)
    response.raise_for_status()
    return response


def day(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d")


def served_since(sb: SandboxServer, stream: str, since: int, until: int) -> dict[str, dict[str, Any]]:
    """id -> object as each API serves records changed since ``since`` (Mixpanel: events dated since..until)."""
    iso = datetime.fromtimestamp(since, UTC).isoformat()
    if stream.startswith("stripe."):
        path = "/v1/" + stream.split(".")[1]
        params: dict[str, Any] = {"limit": 100, "created[gte]": since}
        if stream == "stripe.subscriptions":
            params["status"] = "all"  # ended ones too
        items = get(sb, "stripe", path, auth=STRIPE, params=params).json()["data"]
    elif stream == "hubspot.contacts":
        filters = [{"propertyName": "lastmodifieddate", "operator": "GTE", "value": str(since * 1000)}]
        body = {"filterGroups": [{"filters": filters}], "limit": 200}
        url = sb.base_urls["hubspot"] + "/crm/v3/objects/contacts/search"
        items = requests.post(url, headers=HUBSPOT, json=body, timeout=30).json()["results"]
    elif stream.startswith("zendesk."):
        kind = stream.split(".")[1]
        path = f"/api/v2/incremental/{kind}/cursor.json"
        items = get(sb, "zendesk", path, auth=ZENDESK, params={"start_time": since}).json()[kind]
    elif stream == "klaviyo.profiles":
        params = {"filter": f"greater-than(updated,{iso})", "additional-fields[profile]": "subscriptions"}
        items = get(sb, "klaviyo", "/api/profiles", headers=KLAVIYO, params=params).json()["data"]
    elif stream == "klaviyo.events":
        params = {"filter": f"greater-than(datetime,{iso})"}
        items = get(sb, "klaviyo", "/api/events", headers=KLAVIYO, params=params).json()["data"]
    else:
        params = {"project_id": "1", "from_date": day(since), "to_date": day(until)}
        lines = get(sb, "mixpanel", "/api/2.0/export", auth=MIXPANEL, params=params).text.splitlines()
        return {insert_id(e): e for e in map(json.loads, lines)}
    return {str(item["id"]): item for item in items}


def insert_id(event: dict[str, Any]) -> str:
    """A Mixpanel event's `$insert_id`, also from properties sent as a list of key/value pairs."""
    properties = event["properties"]
    pairs = properties.items() if isinstance(properties, dict) else ((p["key"], p["value"]) for p in properties)
    return dict(pairs)["$insert_id"]


def test_corpus_route_injects_every_kind_into_every_stream_and_lists_it(
    sb: SandboxServer, world: Path, injected: tuple[int, dict[str, list[dict[str, str]]]]
) -> None:
    before, summary = injected
    assert set(summary) == KINDS
    cases = [(kind, c["stream"], c["id"]) for kind, items in summary.items() for c in items]
    assert {stream for _, stream, _ in cases} == BAD_STREAMS
    with (world / ANOMALIES_FILE).open(newline="") as f:
        listed = Counter((row["stream"], row["record_id"], row["kind"]) for row in csv.DictReader(f))
    assert all(listed[(stream, rid, kind)] == 1 for kind, stream, rid in cases)
    # Each case says the quarantine reason it must get, unless it is valid and must be staged.
    for kind, items in summary.items():
        assert all((item["reason"] is None) == (kind in VALID_KINDS) for item in items), kind
    with (world / TRUTH_FILE).open(newline="") as f:
        owned = {row["record_id"] for row in csv.DictReader(f)}
    assert not owned & {rid for _, _, rid in cases}  # the corpus belongs to no person
    store = WorldStore(world)
    for _, stream, rid in cases:
        record = store.get(stream, rid)
        assert record is not None and record.updated >= before * 1000  # so incremental pulls see it
    assert [c["id"] for c in summary["duplicate_id"]] == [DUPLICATED["stripe.customers"], DUPLICATED["zendesk.users"]]


def shape(value: Any, at: str = "") -> set[str]:
    """The dotted key paths of a JSON value (list items under ``[]``): its shape, whatever the values."""
    if isinstance(value, dict):
        return {p for key, item in value.items() for p in {f"{at}{key}", *shape(item, f"{at}{key}.")}}
    if isinstance(value, list):
        return {p for item in value for p in shape(item, f"{at.rstrip('.')}[].")}
    return set()


def test_corpus_records_are_shaped_like_the_worlds_own(world: Path) -> None:
    """Every key the world's records of a stream all carry is in each case; valid cases add none of their own."""
    store = WorldStore(world)
    cases = corpus(int(time.time()), "C0RPVS")
    ids = {case.id for case in cases}
    for stream in BAD_STREAMS:
        shapes = [shape(record.payload) for record in store.scan(stream) if record.id not in ids]
        common, known = set.intersection(*shapes), set.union(*shapes)
        for case in (c for c in cases if c.stream == stream):
            if case.kind not in ("string_for_object", "list_for_object"):  # these break the shape on purpose
                assert not common - shape(case.payload), (case.kind, stream)
            if case.kind in VALID_KINDS:
                assert not shape(case.payload) - known, (case.kind, stream)


def test_every_injected_record_is_served_with_its_bad_value_intact(
    sb: SandboxServer, world: Path, injected: tuple[int, dict[str, list[dict[str, str]]]]
) -> None:
    before, summary = injected
    until = int(time.time()) + 40 * 86400  # the Mixpanel window reaches the future event's day
    served = {stream: served_since(sb, stream, before, until) for stream in BAD_STREAMS}
    store = WorldStore(world)
    for items in summary.values():
        for case in items:
            assert served[case["stream"]][case["id"]] == store.get(case["stream"], case["id"]).payload, case
    customers, invoices = served["stripe.customers"], served["stripe.invoices"]
    assert customers["cus_corpus00000004"]["email"] == {"address": "x@y.com"}
    assert isinstance(customers["cus_corpus00000002"]["created"], str)
    assert customers["cus_corpus00000005"]["name"] == NAME == "Zoë 🚀 Ñandú 李小龙"
    assert invoices["in_corpus000000000000000001"]["amount_due"] == "12.50"
    assert invoices["in_corpus000000000000000002"]["customer"] is None
    assert invoices["in_corpus000000000000000003"]["amount_paid"] == -500
    assert served["stripe.subscriptions"]["sub_corpus000000000000000001"]["status"] == "paused_forever"
    contacts = served["hubspot.contacts"]
    assert len(contacts["9000000002"]["properties"]["firstname"]) == 1_048_576
    assert contacts["9000000003"]["properties"]["lastname"] == SQL
    assert contacts["9000000004"]["properties"]["phone"] == {"number": "+14155550100"}
    tickets, users = served["zendesk.tickets"], served["zendesk.users"]
    assert tickets["9900000000004"]["description"] == OVERSIZED and len(OVERSIZED) == 1_048_576
    assert tickets["9900000000005"]["subject"] == HTML
    assert tickets["9900000000001"]["requester_id"] is None and tickets["9900000000003"]["status"] == "escalated_x"
    created = datetime.fromisoformat(tickets["9900000000002"]["created_at"].replace("Z", "+00:00")).timestamp()
    assert created > time.time() + 86400
    assert users["9900000000002"]["active"] == "yes" and users["9900000000003"]["email"] == "ann@"
    anonymous = served["klaviyo.profiles"]["01C0RPVS000000000000000001"]["attributes"]
    assert anonymous["email"] is None and anonymous["phone_number"] is None and anonymous["external_id"] is None
    assert served["klaviyo.events"]["01C0RPVS000000000000000001"]["attributes"]["timestamp"] > time.time() + 86400
    assert served["mixpanel.events"]["corpus-0002"]["properties"]["utm_campaign"] == SCRIPTS
    # Hostile records, served as the corpus wrote them.
    assert customers["cus_corpus00000006"]["created"] > 10**12  # milliseconds
    assert invoices["in_corpus000000000000000004"]["amount_due"] == 2**64 + 1
    assert contacts["9000000005"]["updatedAt"] == "0001-01-01T00:00:00Z"
    assert "\x00" in contacts["9000000006"]["properties"]["email"]
    assert tickets["9900000000006"]["updated_at"] == "9999-12-31T23:59:59Z"
    assert tickets["9900000000007"]["subject"] == CONTROL and "\x1b" in CONTROL
    assert users[str(HUGE_ID)]["id"] == HUGE_ID > 2**63
    profiles = served["klaviyo.profiles"]
    assert profiles["01C0RPVS000000000000000004"]["attributes"]["updated"].startswith("2300-01-01")
    assert isinstance(profiles["01C0RPVS000000000000000005"]["attributes"], str)
    events = served["klaviyo.events"]
    assert isinstance(events["01C0RPVS000000000000000002"]["attributes"]["datetime"], int)
    assert datetime.fromisoformat(events["01C0RPVS000000000000000003"]["attributes"]["datetime"]).tzinfo is None
    mixpanel = served["mixpanel.events"]
    assert mixpanel["corpus-0003"]["properties"]["time"] > 10**12
    assert isinstance(mixpanel["corpus-0004"]["properties"], list)


def test_stripe_events_announce_the_corpus_to_incremental_pulls(
    sb: SandboxServer, injected: tuple[int, dict[str, list[dict[str, str]]]]
) -> None:
    before, summary = injected
    params = {"limit": 100, "created[gte]": before, "types[]": ["customer.*", "invoice.*"]}
    events = get(sb, "stripe", "/v1/events", auth=STRIPE, params=params).json()["data"]
    announced = {e["data"]["object"]["id"]: e for e in events if e["type"].endswith(".created")}
    stripe_ids = {c["id"] for items in summary.values() for c in items if c["stream"].startswith("stripe.")}
    assert stripe_ids <= announced.keys()
    # The customer created in milliseconds is announced by an event whose own time is in milliseconds.
    assert announced["cus_corpus00000006"]["created"] == announced["cus_corpus00000006"]["data"]["object"]["created"]
    assert announced["cus_corpus00000006"]["created"] > 10**12


def test_mixpanel_serves_the_future_event_only_in_a_window_holding_its_day(
    sb: SandboxServer, world: Path, injected: tuple[int, dict[str, list[dict[str, str]]]]
) -> None:
    store = WorldStore(world)
    future, present = store.get("mixpanel.events", "corpus-0001"), store.get("mixpanel.events", "corpus-0002")
    assert future is not None and present is not None and future.created > time.time() + 86400
    today = served_since(sb, "mixpanel.events", present.created, present.created)
    assert "corpus-0002" in today and "corpus-0001" not in today
    that_day = served_since(sb, "mixpanel.events", future.created, future.created)
    assert set(that_day) == {"corpus-0001"} and that_day["corpus-0001"]["properties"]["time"] == future.created


def test_mixpanel_serves_the_hostile_events_in_the_window_of_the_day_they_were_sent(
    sb: SandboxServer, world: Path, injected: tuple[int, dict[str, list[dict[str, str]]]]
) -> None:
    """The export windows by date: the millisecond event is filed under the day it was sent, not year 58,000."""
    sent = WorldStore(world).get("mixpanel.events", "corpus-0003")
    assert sent is not None and sent.created <= time.time()
    that_day = served_since(sb, "mixpanel.events", sent.created, sent.created)
    assert {"corpus-0003", "corpus-0004"} <= that_day.keys()
    assert that_day["corpus-0003"]["properties"]["time"] == sent.created * 1000


def test_duplicates_within_a_page_and_across_pages_and_nothing_else_repeats(
    sb: SandboxServer, world: Path, injected: tuple[int, dict[str, list[dict[str, str]]]]
) -> None:
    def stripe_pages() -> list[list[str]]:
        pages, params = [], {"limit": 2}
        while True:
            page = get(sb, "stripe", "/v1/customers", auth=STRIPE, params=params).json()
            pages.append([c["id"] for c in page["data"]])
            if not page["has_more"]:
                return pages
            params["starting_after"] = page["data"][-1]["id"]

    def zendesk_pages() -> list[list[str]]:
        path = "/api/v2/incremental/users/cursor.json"
        page = get(sb, "zendesk", path, auth=ZENDESK, params={"start_time": 0, "per_page": 2}).json()
        pages = [[str(u["id"]) for u in page["users"]]]
        while not page["end_of_stream"]:
            page = requests.get(page["after_url"], auth=ZENDESK, timeout=30).json()
            pages.append([str(u["id"]) for u in page["users"]])
        return pages

    conn = WorldStore(world).connect()
    for stream, walk, live in (
        ("stripe.customers", stripe_pages, "archived = 0"),
        ("zendesk.users", zendesk_pages, "1"),  # the export keeps deleted users
    ):
        expected = {r[0] for r in conn.execute(f"SELECT id FROM records WHERE stream = ? AND {live}", (stream,))}
        dup = DUPLICATED[stream]
        plain = walk()
        assert Counter(i for page in plain for i in page) == Counter(expected)
        sb.control("config", "PATCH", {"duplicates": {stream.split(".")[0]: True}})
        pages = walk()
        sb.control("config", "PATCH", {"duplicates": {stream.split(".")[0]: False}})
        counts = Counter(i for page in pages for i in page)
        assert counts[dup] == 3 and all(counts[i] == 1 for i in expected - {dup}) and set(counts) == expected
        held = next(n for n, page in enumerate(pages) if dup in page)
        assert pages[held].count(dup) == 2 and pages[held + 1][0] == dup, stream  # within a page, then across
        assert [i for page in pages for i in page if i != dup] == [i for page in plain for i in page if i != dup]


def test_truncate_rate_sends_complete_responses_whose_json_does_not_parse(
    sb: SandboxServer, injected: tuple[int, dict[str, list[dict[str, str]]]]
) -> None:
    sb.control("config", "PATCH", {"faults": {"default": {"truncate_rate": 1.0}, "hubspot": {"truncate_rate": 0.0}}})
    assert sb.control("config")["faults"]["default"]["truncate_rate"] == 1.0
    response = requests.get(sb.base_urls["stripe"] + "/v1/customers", auth=STRIPE, timeout=30)
    assert response.status_code == 200 and len(response.content) == int(response.headers["content-length"]) > 0
    with pytest.raises(requests.exceptions.JSONDecodeError):
        response.json()
    assert requests.get(sb.base_urls["hubspot"] + "/crm/v3/objects/contacts", headers=HUBSPOT, timeout=30).json()
    params = {"project_id": "1", "from_date": day(int(time.time())), "to_date": day(int(time.time()))}
    lines = get(sb, "mixpanel", "/api/2.0/export", auth=MIXPANEL, params=params).text.splitlines()
    assert lines and all(json.loads(line) for line in lines)  # JSONL is not a JSON response: left whole
    unauthorised = requests.get(sb.base_urls["stripe"] + "/v1/customers", timeout=30)
    assert unauthorised.status_code == 401 and unauthorised.json()["error"]  # only successes are cut
    assert sb.control("health") == {"status": "ok"}  # control routes are never truncated
    assert sb.control("stats")["services"]["stripe"]["truncated"] >= 1


def test_injecting_again_restamps_the_same_records(
    sb: SandboxServer, world: Path, injected: tuple[int, dict[str, list[dict[str, str]]]]
) -> None:
    conn = WorldStore(world).connect()

    def state() -> tuple[dict[str, int], int, str]:
        counts = dict(conn.execute("SELECT stream, COUNT(*) FROM records GROUP BY stream").fetchall())
        stamp = conn.execute("SELECT updated FROM records WHERE stream = 'zendesk.users' AND id = '9900000000002'")
        return counts, stamp.fetchone()[0], (world / ANOMALIES_FILE).read_text()

    counts, updated, anomalies = state()
    time.sleep(0.01)
    assert sb.control("corpus", "POST") == injected[1]
    again, restamped, anomalies_again = state()
    assert again == counts and anomalies_again == anomalies and restamped > updated

"""The sandbox's five fake APIs, through real HTTP against a hand-made world.

The world here is written record by record (not by the generator) so each test knows
exactly what the server must return: which ids, in which order, on which page.
"""

from __future__ import annotations

import errno
import json
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests

from sandbox.apis import keyset
from sandbox.apis.hubspot import search_sql
from sandbox.apis.klaviyo import EVENTS
from sandbox.apis.klaviyo import _filter as klaviyo_filter
from sandbox.config import kept_secret
from sandbox.runner import SandboxServer
from sandbox.store import Record, WorldStore

NOW = int(time.time())
OLD_MS = 1_700_000_000_000  # long before any test runs: safely outside Zendesk's recent-change exclusion
STRIPE = ("sk_test_sandbox", "")
HUBSPOT = {"Authorization": "Bearer pat-sandbox"}
ZENDESK = ("sandbox@example.com/token", "zd-sandbox")
KLAVIYO = {"Authorization": "Klaviyo-API-Key pk_sandbox", "revision": "2024-10-15"}
MIXPANEL = ("sandbox.sa", "mp-sandbox")
LIMITS_OFF = {
    "stripe": {"requests": {"max": 0}},
    "hubspot": {"ten_secondly": {"max": 0}, "search": {"max": 0}},
    "zendesk": {"export": {"max": 0}},
    "klaviyo": {"burst": {"max": 0}, "steady": {"max": 0}},
    "mixpanel": {"secondly": {"max": 0}, "hourly": {"max": 0}},
}
NO_FAULTS = {"default": {"error_rate": 0, "burst_429_every": 0, "burst_429_length": 0, "drop_rate": 0}}
SUB_STATUSES = ("active", "canceled", "trialing", "incomplete_expired", "past_due")
DELETED_CUSTOMERS = {"cus_0003", "cus_0017"}
MP_DAY = int(datetime(2024, 3, 2, tzinfo=UTC).timestamp())


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def world_records() -> Iterator[Record]:
    for i in range(30):  # created collides in pairs: the id must break ties
        cid, created = f"cus_{i:04d}", NOW - 5000 + i // 2
        body = {"id": cid, "object": "customer", "created": created, "email": f"c{i}@example.com"}
        yield Record("stripe.customers", cid, created, created * 1000, body, archived=cid in DELETED_CUSTOMERS)
    for i, status in enumerate(SUB_STATUSES * 2):
        sid = f"sub_{i:04d}"
        yield Record("stripe.subscriptions", sid, NOW - 4000 + i, NOW * 1000, {"id": sid, "status": status})
    for i, (kind, age_days) in enumerate(
        [
            ("customer.created", 1),
            ("customer.updated", 2),
            ("invoice.paid", 3),
            ("customer.deleted", 4),
            ("customer.updated", 40),
        ]
    ):
        eid, created = f"evt_{i:04d}", NOW - age_days * 86400
        yield Record("stripe.events", eid, created, created * 1000, {"id": eid, "type": kind, "created": created})
    for i in range(1, 131):  # ids of 1 to 3 digits: order must be numeric, not textual
        updated = OLD_MS + i * 1000
        props = {
            "email": f"p{i}@example.com",
            "firstname": f"P{i}",
            "hs_object_id": str(i),
            "createdate": iso(OLD_MS),
            "lastmodifieddate": iso(updated),
        }
        body = {
            "id": str(i),
            "properties": props,
            "createdAt": iso(OLD_MS),
            "updatedAt": iso(updated),
            "archived": i % 10 == 0,
        }
        yield Record("hubspot.contacts", str(i), OLD_MS // 1000, updated, body, archived=i % 10 == 0)
    for contact, company in ((1, 501), (2, 502)):
        to = [{"toObjectId": company, "associationTypes": [{"category": "HUBSPOT_DEFINED", "typeId": 1}]}]
        body = {"from": {"id": str(contact)}, "to": to}
        yield Record("hubspot.contact_companies", str(contact), OLD_MS // 1000, OLD_MS, body)
    for i in range(1, 26):
        uid, updated = 1000 + i, OLD_MS + (i // 2) * 60_000  # updated collides in pairs
        body = {"id": uid, "name": f"U{i}", "active": i != 7, "updated_at": iso(updated)}
        yield Record("zendesk.users", str(uid), OLD_MS // 1000, updated, body, archived=i == 7)
    for i in range(20):
        pid, updated = f"01HZ{i:022d}", OLD_MS + (19 - i) * 1000  # updated runs against id order
        attributes = {"email": f"k{i}@example.com", "updated": iso(updated), "subscriptions": {"email": {}}}
        yield Record(
            "klaviyo.profiles",
            pid,
            OLD_MS // 1000,
            updated,
            {"type": "profile", "id": pid, "attributes": attributes},
            archived=i == 5,
        )
    for name, t in [
        ("Signed up", MP_DAY - 1),
        ("Signed up", MP_DAY),
        ("Viewed", MP_DAY + 3600),
        ("Viewed", MP_DAY + 86399),
        ("Signed up", MP_DAY + 86400),
    ]:
        body = {"event": name, "properties": {"time": t, "distinct_id": "d1", "$insert_id": f"ins{t}"}}
        yield Record("mixpanel.events", f"ins{t}", t, t * 1000, body)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("sandbox-world")
    WorldStore(folder).upsert(world_records())
    return folder


@pytest.fixture(scope="module")
def server(world: Path) -> Iterator[SandboxServer]:
    with SandboxServer(world, {"limits": LIMITS_OFF}) as sandbox:
        yield sandbox


@pytest.fixture
def sb(server: SandboxServer) -> Iterator[SandboxServer]:
    """The shared server; limits, faults and knobs a test changes are put back afterwards."""
    yield server
    server.control(
        "config",
        "PATCH",
        {
            "limits": LIMITS_OFF,
            "faults": {**NO_FAULTS, "klaviyo": None},
            "hubspot_search_cap": 10_000,
            "zendesk_recent_exclusion_seconds": 60,
        },
    )


def get(sb: SandboxServer, service: str, path: str, **kwargs: Any) -> requests.Response:
    return requests.get(sb.base_urls[service] + path, timeout=10, **kwargs)


def test_every_service_rejects_missing_and_wrong_credentials(sb: SandboxServer) -> None:
    calls = {
        "stripe": ("/v1/customers", {}, {"auth": ("sk_test_wrong1234", "")}),
        "hubspot": ("/crm/v3/objects/contacts", {}, {"headers": {"Authorization": "Bearer nope"}}),
        "zendesk": ("/api/v2/incremental/users/cursor.json?start_time=0", {}, {"auth": ("a@b.c/token", "x")}),
        "klaviyo": (
            "/api/profiles",
            {"headers": {"revision": "2024-10-15"}},
            {"headers": {"Authorization": "Klaviyo-API-Key nope", "revision": "2024-10-15"}},
        ),
        "mixpanel": (
            "/api/2.0/export?from_date=2024-03-01&to_date=2024-03-01&project_id=1",
            {},
            {"auth": ("sandbox.sa", "wrong")},
        ),
    }
    for service, (path, missing, wrong) in calls.items():
        for kwargs in (missing, wrong):
            response = get(sb, service, path, **kwargs)
            assert response.status_code == 401, service
            body = response.json()
            if service == "stripe":
                assert body["error"]["type"] == "invalid_request_error"
                assert "API key" in body["error"]["message"] or "Invalid API Key" in body["error"]["message"]
            elif service == "hubspot":
                assert body["category"] == "INVALID_AUTHENTICATION" and body["correlationId"]
            elif service == "zendesk":
                assert body == {"error": "Couldn't authenticate you"}
            elif service == "klaviyo":
                assert body["errors"][0]["status"] == 401 and body["errors"][0]["code"] in (
                    "not_authenticated",
                    "authentication_failed",
                )
            else:
                assert body == {"error": "Unable to authenticate request", "status": "error"}
    masked = get(sb, "stripe", "/v1/customers", auth=("sk_test_wrong1234", "")).json()["error"]["message"]
    assert masked.endswith("1234") and "wrong" not in masked
    assert get(sb, "stripe", "/v1/customers", headers={"Authorization": "Bearer sk_test_sandbox"}).ok


def test_stripe_pages_newest_first_and_covers_each_customer_once(sb: SandboxServer) -> None:
    seen: list[str] = []
    params: dict[str, Any] = {"limit": 7}
    while True:
        page = get(sb, "stripe", "/v1/customers", auth=STRIPE, params=params).json()
        assert page["object"] == "list" and page["url"] == "/v1/customers"
        seen += [c["id"] for c in page["data"]]
        if not page["has_more"]:
            break
        params["starting_after"] = page["data"][-1]["id"]
    live = [f"cus_{i:04d}" for i in range(30) if f"cus_{i:04d}" not in DELETED_CUSTOMERS]
    assert seen == sorted(live, key=lambda c: (int(c[4:]) // 2, c), reverse=True)
    back = get(sb, "stripe", "/v1/customers", auth=STRIPE, params={"limit": 3, "ending_before": seen[5]}).json()
    assert [c["id"] for c in back["data"]] == seen[2:5] and back["has_more"]
    created_gte = NOW - 5000 + 10
    newer = get(sb, "stripe", "/v1/customers", auth=STRIPE, params={"limit": 100, "created[gte]": created_gte})
    assert {c["created"] for c in newer.json()["data"]} == set(range(created_gte, NOW - 5000 + 15))
    errors = [
        ({"limit": 101}, "limit", None),
        ({"starting_after": "cus_0001", "ending_before": "cus_0002"}, "ending_before", None),
        ({"starting_after": "cus_nope"}, "starting_after", "resource_missing"),
    ]
    for bad, param, code in errors:
        response = get(sb, "stripe", "/v1/customers", auth=STRIPE, params=bad)
        assert response.status_code == 400 and response.json()["error"]["param"] == param
        assert response.json()["error"].get("code") == code or code is None


def test_stripe_subscription_status_and_event_window(sb: SandboxServer) -> None:
    def statuses(**params: Any) -> list[str]:
        page = get(sb, "stripe", "/v1/subscriptions", auth=STRIPE, params={"limit": 100, **params}).json()
        return [s["status"] for s in page["data"]]

    assert sorted(statuses()) == sorted(["active", "trialing", "past_due"] * 2)
    assert sorted(statuses(status="all")) == sorted(SUB_STATUSES * 2)
    assert statuses(status="canceled") == ["canceled", "canceled"]
    events = get(sb, "stripe", "/v1/events", auth=STRIPE, params={"limit": 100}).json()["data"]
    assert [e["id"] for e in events] == ["evt_0000", "evt_0001", "evt_0002", "evt_0003"]  # 40-day-old one gone
    typed = get(
        sb, "stripe", "/v1/events", auth=STRIPE, params={"types[]": ["customer.updated", "invoice.paid"]}
    ).json()["data"]
    assert [e["id"] for e in typed] == ["evt_0001", "evt_0002"]


def test_hubspot_lists_by_numeric_id_and_separates_archived(sb: SandboxServer) -> None:
    ids: list[int] = []
    params: dict[str, Any] = {"limit": 25, "properties": "email"}
    while True:
        page = get(sb, "hubspot", "/crm/v3/objects/contacts", headers=HUBSPOT, params=params).json()
        ids += [int(r["id"]) for r in page["results"]]
        assert all(
            set(r["properties"]) == {"email", "hs_object_id", "createdate", "lastmodifieddate"} for r in page["results"]
        )
        if "paging" not in page:
            break
        assert page["paging"]["next"]["link"].startswith(sb.base_urls["hubspot"])
        params["after"] = page["paging"]["next"]["after"]
    assert ids == [i for i in range(1, 131) if i % 10]
    archived = get(
        sb, "hubspot", "/crm/v3/objects/contacts", headers=HUBSPOT, params={"archived": "true", "limit": 100}
    ).json()["results"]
    assert [int(r["id"]) for r in archived] == list(range(10, 131, 10))
    assert all(r["archived"] and r["archivedAt"] for r in archived)
    too_big = get(sb, "hubspot", "/crm/v3/objects/contacts", headers=HUBSPOT, params={"limit": 101})
    assert too_big.status_code == 400 and too_big.json()["category"] == "VALIDATION_ERROR"
    batch = requests.post(
        sb.base_urls["hubspot"] + "/crm/v4/associations/contacts/companies/batch/read",
        headers=HUBSPOT,
        json={"inputs": [{"id": "2"}, {"id": "3"}, {"id": "1"}]},
        timeout=10,
    )
    assert batch.json()["status"] == "COMPLETE"
    assert [(r["from"]["id"], r["to"][0]["toObjectId"]) for r in batch.json()["results"]] == [("2", 502), ("1", 501)]


def test_hubspot_search_filters_pages_and_stops_at_the_cap(sb: SandboxServer) -> None:
    url = sb.base_urls["hubspot"] + "/crm/v3/objects/contacts/search"
    since = OLD_MS + 50 * 1000
    body: dict[str, Any] = {
        "filterGroups": [{"filters": [{"propertyName": "lastmodifieddate", "operator": "GTE", "value": str(since)}]}],
        "sorts": [{"propertyName": "hs_object_id", "direction": "ASCENDING"}],
        "limit": 30,
    }
    found: list[int] = []
    while True:
        page = requests.post(url, headers=HUBSPOT, json=body, timeout=10).json()
        assert page["total"] == len([i for i in range(50, 131) if i % 10])
        found += [int(r["id"]) for r in page["results"]]
        if "paging" not in page:
            break
        body["after"] = page["paging"]["next"]["after"]
    assert found == [i for i in range(50, 131) if i % 10]
    by_id = {"filterGroups": [{"filters": [{"propertyName": "hs_object_id", "operator": "GT", "value": "95"}]}]}
    page = requests.post(url, headers=HUBSPOT, json={**by_id, "limit": 3}, timeout=10).json()
    assert [r["id"] for r in page["results"]] == ["96", "97", "98"]
    sb.control("config", "PATCH", {"hubspot_search_cap": 40})
    body.pop("after")
    pages = []
    while True:
        response = requests.post(url, headers=HUBSPOT, json=body, timeout=10)
        if response.status_code != 200:
            break
        pages.append(len(response.json()["results"]))
        body["after"] = response.json()["paging"]["next"]["after"]
    assert pages == [30, 10] and body["after"] == "40"
    assert response.status_code == 400 and response.json()["category"] == "VALIDATION_ERROR"


def test_hubspot_search_compares_ids_as_numbers_across_digit_counts(sb: SandboxServer) -> None:
    url = sb.base_urls["hubspot"] + "/crm/v3/objects/contacts/search"

    def ids(*filters: tuple[str, str]) -> list[str]:
        spec = [{"propertyName": "hs_object_id", "operator": op, "value": value} for op, value in filters]
        body = {"filterGroups": [{"filters": spec}], "limit": 100}
        return [r["id"] for r in requests.post(url, headers=HUBSPOT, json=body, timeout=10).json()["results"]]

    assert ids(("GTE", "99"), ("LTE", "102")) == ["99", "101", "102"]  # 100 is archived
    assert ids(("GT", "8"), ("LT", "12")) == ["9", "11"]
    assert ids(("GT", "128")) == ["129"]


def test_hubspot_incremental_search_costs_what_it_returns(world: Path) -> None:
    """The connector's query (modified since, id above, by id) seeks one index at its position, and its count
    reads that index alone: a page deep in the ids costs what a page at their start does, at any world size."""
    conn = WorldStore(world).connect()

    def plan_and_steps(after: str) -> tuple[str, int, str]:
        filters = [
            {"propertyName": "lastmodifieddate", "operator": "GTE", "value": str(OLD_MS)},
            {"propertyName": "hs_object_id", "operator": "GT", "value": after},
        ]
        spec = {"filterGroups": [{"filters": filters}], "sorts": [{"propertyName": "hs_object_id"}]}
        count, page, params = search_sql("hubspot.contacts", spec, "lastmodifieddate")
        steps = [0]
        conn.set_progress_handler(lambda: steps.__setitem__(0, steps[0] + 1) or 0, 1)  # one call per VM step
        conn.execute(page, (*params, 3, 0)).fetchall()
        conn.set_progress_handler(None, 1)

        def plan(sql: str, values: tuple[Any, ...]) -> str:
            return " ".join(row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", values))

        return plan(page, (*params, 3, 0)), steps[0], plan(count, tuple(params))

    (page_plan, at_start, count_plan), (_, deep, _) = plan_and_steps("11"), plan_and_steps("95")
    assert "INDEX records_by_numeric_id_key" in page_plan and "TEMP B-TREE" not in page_plan, page_plan
    assert deep <= at_start * 1.2, (deep, at_start)  # ids 12 to 95 are not walked past
    assert "COVERING INDEX records_by_numeric_id_key" in count_plan, count_plan


@pytest.mark.parametrize("descending", [False, True])
@pytest.mark.parametrize("per_second", [3, 3000], ids=["three events a second", "every event in one second"])
def test_a_page_deep_in_a_time_range_costs_what_one_at_its_start_does(
    tmp_path: Path, per_second: int, descending: bool
) -> None:
    """A ranged pull (Klaviyo's events between two times, Stripe's objects created in a span) pages each range by
    its time: a page far into the range seeks its position, not the range's start, nor walks the ids, nor reads
    again the rows of its position's time before the position (a churn tick stamps all its changes with one time),
    whatever SQLite would choose on its own. Paging the range also returns each of its records once, in order."""
    events = 3000
    start = OLD_MS + 300_000 if per_second == events else OLD_MS  # one second inside the range, or 1,000 seconds
    store = WorldStore(tmp_path)
    store.upsert(
        Record(
            "klaviyo.events",
            f"{(7919 * i) % 10007:05d}",
            start // 1000 + i // per_second,
            start + (i // per_second) * 1000,
            {"type": "event", "id": f"{(7919 * i) % 10007:05d}"},
        )
        for i in range(events)  # ids out of time order
    )
    conn = store.connect()
    where, params = klaviyo_filter(
        f"and(greater-or-equal(datetime,{iso(OLD_MS + 100_000)}),less-than(datetime,{iso(OLD_MS + 900_000)}))", EVENTS
    )

    def page(after: tuple[int, str] | None) -> tuple[list[Any], int]:
        steps = [0]
        conn.set_progress_handler(lambda: steps.__setitem__(0, steps[0] + 1) or 0, 1)  # one call per VM step
        rows, _ = keyset(store, "klaviyo.events", ("updated", "id"), 50, where=where, params=params, after=after,
                         descending=descending)  # fmt: skip
        conn.set_progress_handler(None, 1)
        return rows, steps[0]

    walked, after, costs = [], None, []
    while True:
        rows, cost = page(after)
        walked += [(row["updated"], row["id"]) for row in rows]
        costs.append(cost)
        if len(rows) < 50:
            break
        after = (rows[-1]["updated"], rows[-1]["id"])
    in_range = conn.execute(
        "SELECT updated, id FROM records WHERE stream = 'klaviyo.events' AND updated >= ? AND updated < ?"
        " ORDER BY updated, id",
        (OLD_MS + 100_000, OLD_MS + 900_000),
    ).fetchall()
    expected = [tuple(row) for row in in_range]
    assert walked == (expected[::-1] if descending else expected) and len(walked) >= 2400
    assert max(costs[1:]) <= 3 * costs[0], costs  # page 47 costs what the first does


def test_zendesk_cursor_export_resumes_from_after_cursor(sb: SandboxServer, world: Path) -> None:
    path = "/api/v2/incremental/users/cursor.json"
    page = get(sb, "zendesk", path, auth=ZENDESK, params={"start_time": 0, "per_page": 10}).json()
    users, pages = page["users"], 1
    while not page["end_of_stream"]:
        assert "start_time" not in page["after_url"] and "per_page=10" in page["after_url"]
        page = requests.get(page["after_url"], auth=ZENDESK, timeout=10).json()
        users, pages = users + page["users"], pages + 1
    assert pages == 3 and [u["id"] for u in users] == list(range(1001, 1026))  # deleted user 1007 included
    assert [u["active"] for u in users].count(False) == 1
    cursor = page["after_cursor"]
    store = WorldStore(world)
    store.upsert(
        [
            Record("zendesk.users", "1003", 0, (NOW - 120) * 1000, {"id": 1003, "name": "renamed"}),
            Record("zendesk.users", "1099", 0, int(time.time() * 1000), {"id": 1099, "name": "fresh"}),
        ]
    )
    later = get(sb, "zendesk", path, auth=ZENDESK, params={"cursor": cursor}).json()
    assert [u["name"] for u in later["users"]] == ["renamed"] and later["end_of_stream"]  # 1099 is too recent
    sb.control("config", "PATCH", {"zendesk_recent_exclusion_seconds": 0})
    resumed = get(sb, "zendesk", path, auth=ZENDESK, params={"cursor": later["after_cursor"]}).json()
    assert [u["name"] for u in resumed["users"]] == ["fresh"]
    missing = get(sb, "zendesk", path, auth=ZENDESK)
    assert missing.status_code == 400 and missing.json()["error"]


def test_klaviyo_follows_links_filters_on_updated_and_needs_revision(sb: SandboxServer) -> None:
    url: str | None = sb.base_urls["klaviyo"] + "/api/profiles?page[size]=6"
    ids: list[str] = []
    while url:
        page = requests.get(url, headers=KLAVIYO, timeout=10).json()
        ids += [p["id"] for p in page["data"]]
        assert all("subscriptions" not in p["attributes"] for p in page["data"])
        url = page["links"]["next"]
    live = [f"01HZ{i:022d}" for i in range(20) if i != 5]
    assert ids == live
    since = iso(OLD_MS + 15 * 1000)  # strictly greater: updated 16..19 s -> profiles 3..0
    params = {
        "filter": f"greater-than(updated,{since})",
        "sort": "-updated",
        "additional-fields[profile]": "subscriptions",
    }
    page = requests.get(sb.base_urls["klaviyo"] + "/api/profiles", headers=KLAVIYO, params=params, timeout=10).json()
    assert [p["id"] for p in page["data"]] == [f"01HZ{i:022d}" for i in range(4)]
    assert all("subscriptions" in p["attributes"] for p in page["data"])
    prev = requests.get(sb.base_urls["klaviyo"] + "/api/profiles?page[size]=6", headers=KLAVIYO, timeout=10).json()
    second = requests.get(prev["links"]["next"], headers=KLAVIYO, timeout=10).json()
    back = requests.get(second["links"]["prev"], headers=KLAVIYO, timeout=10).json()
    assert back["data"] == prev["data"] and back["links"]["prev"] is None
    no_revision = requests.get(
        sb.base_urls["klaviyo"] + "/api/profiles", headers={"Authorization": KLAVIYO["Authorization"]}, timeout=10
    )
    assert no_revision.status_code == 400 and no_revision.json()["errors"][0]["source"] == {"parameter": "revision"}
    too_big = get(sb, "klaviyo", "/api/profiles", headers=KLAVIYO, params={"page[size]": 101})
    assert too_big.status_code == 400


def test_mixpanel_exports_inclusive_utc_day_windows_as_jsonl(sb: SandboxServer) -> None:
    def export(**params: Any) -> requests.Response:
        query = {"project_id": "1", "from_date": "2024-03-02", "to_date": "2024-03-02", **params}
        return get(sb, "mixpanel", "/api/2.0/export", auth=MIXPANEL, params=query)

    response = export()
    assert response.headers["content-type"].startswith("text/plain")
    lines = [line for line in response.text.split("\n") if line]
    times = [json.loads(line)["properties"]["time"] for line in lines]
    assert times == [MP_DAY, MP_DAY + 3600, MP_DAY + 86399]
    assert len(export(to_date="2024-03-03").text.splitlines()) == 4
    assert len(export(event='["Viewed"]').text.splitlines()) == 2
    assert export(to_date="2024-03-01").status_code == 400
    missing = get(
        sb, "mixpanel", "/api/2.0/export", auth=MIXPANEL, params={"from_date": "2024-03-02", "to_date": "2024-03-02"}
    )
    assert missing.status_code == 400 and missing.json()["status"] == "error"


def test_rate_limits_answer_429_in_each_service_dialect(sb: SandboxServer) -> None:
    sb.control(
        "config",
        "PATCH",
        {
            "limits": {
                "stripe": {"requests": {"max": 2, "seconds": 5}},
                "zendesk": {"export": {"max": 2, "seconds": 60}},
                "hubspot": {"ten_secondly": {"max": 50}, "search": {"max": 2, "seconds": 5}},
                "klaviyo": {"burst": {"max": 2, "seconds": 5}},
                "mixpanel": {"hourly": {"max": 1}},
            }
        },
    )
    zd = [
        get(sb, "zendesk", "/api/v2/incremental/users/cursor.json", auth=ZENDESK, params={"start_time": 0})
        for _ in range(3)
    ]
    assert [r.status_code for r in zd] == [200, 200, 429]
    assert zd[0].headers["X-Rate-Limit"] == "2" and zd[1].headers["X-Rate-Limit-Remaining"] == "0"
    assert 50 <= int(zd[2].headers["Retry-After"]) <= 60
    search = [
        requests.post(sb.base_urls["hubspot"] + "/crm/v3/objects/contacts/search", headers=HUBSPOT, json={}, timeout=10)
        for _ in range(3)
    ]
    assert [r.status_code for r in search] == [200, 200, 429]
    assert search[0].headers["X-HubSpot-RateLimit-Max"] == "50"
    assert search[2].json()["policyName"] == "SECONDLY" and "Retry-After" not in search[2].headers
    kl = [get(sb, "klaviyo", "/api/metrics", headers=KLAVIYO) for _ in range(3)]
    assert [r.status_code for r in kl] == [200, 200, 429] and kl[0].headers["RateLimit-Remaining"] == "1"
    assert int(kl[2].headers["Retry-After"]) >= 1 and "RateLimit-Limit" not in kl[2].headers
    st = [get(sb, "stripe", "/v1/invoices", auth=STRIPE) for _ in range(3)]
    assert st[2].status_code == 429 and st[2].json()["error"]["code"] == "rate_limit"
    mp = [
        get(
            sb,
            "mixpanel",
            "/api/2.0/export",
            auth=MIXPANEL,
            params={"project_id": "1", "from_date": "2024-03-02", "to_date": "2024-03-02"},
        )
        for _ in range(2)
    ]
    assert [r.status_code for r in mp] == [200, 429]
    assert sb.control("stats")["services"]["zendesk"]["limiter_429"] >= 1


def test_injected_errors_and_bursts_use_the_service_envelope(sb: SandboxServer) -> None:
    sb.control("config", "PATCH", {"faults": {"default": {"error_rate": 1.0}}})
    stripe = get(sb, "stripe", "/v1/customers", auth=STRIPE)
    assert stripe.status_code in (500, 502, 503) and stripe.json()["error"]["type"] == "api_error"
    zendesk = get(sb, "zendesk", "/api/v2/incremental/users/cursor.json", auth=ZENDESK, params={"start_time": 0})
    assert zendesk.status_code >= 500 and zendesk.json()["error"] == "InternalError"
    assert sb.control("health") == {"status": "ok"}  # control routes never fail
    sb.control(
        "config", "PATCH", {"faults": {"default": {"error_rate": 0, "burst_429_every": 3, "burst_429_length": 2}}}
    )
    codes = [get(sb, "hubspot", "/crm/v3/objects/contacts", headers=HUBSPOT).status_code for _ in range(7)]
    assert codes == [200, 200, 429, 429, 200, 429, 429]
    stats = sb.control("stats")["services"]["hubspot"]
    assert stats["injected_429"] >= 4 and stats["status"]["429"] >= 4


def test_drop_rate_cuts_responses_off_mid_body(sb: SandboxServer) -> None:
    sb.control("config", "PATCH", {"faults": {"klaviyo": {"drop_rate": 1.0}}})
    with pytest.raises((requests.exceptions.ChunkedEncodingError, requests.exceptions.ConnectionError)):
        get(sb, "klaviyo", "/api/profiles", headers=KLAVIYO)
    assert get(sb, "stripe", "/v1/customers", auth=STRIPE).ok  # only klaviyo is configured to drop
    assert sb.control("stats")["services"]["klaviyo"]["drops"] >= 1


def test_control_routes_config_and_stats(sb: SandboxServer) -> None:
    config = sb.control("config")
    assert config["limits"]["hubspot"]["ten_secondly"]["seconds"] == 10
    assert config["credentials"]["zendesk"]["email"] == "sandbox@example.com"
    with pytest.raises(requests.HTTPError) as bad:
        sb.control("config", "PATCH", {"limits": {"stripe": {"nope": {"max": 1}}}})
    assert bad.value.response.status_code == 400 and sb.control("config") == config
    get(sb, "stripe", "/v1/customers", auth=STRIPE)
    stats = sb.control("stats")
    assert stats["services"]["stripe"]["status"]["200"] >= 1
    assert stats["totals"]["requests"] == sum(s["requests"] for s in stats["services"].values())
    assert sb.control("stats", "DELETE") == {"status": "ok"}
    cleared = sb.control("stats")
    assert cleared["services"] == {} and cleared["totals"]["requests"] == 0


def test_churn_ticks_on_demand_and_in_the_background(tmp_path: Path) -> None:
    pytest.importorskip("sandbox.churn")
    from sandbox.world import build_world

    build_world(tmp_path, people=30, seed=7)
    conn = WorldStore(tmp_path).connect()

    def changed_since(ms: int) -> int:
        return conn.execute("SELECT COUNT(*) FROM records WHERE updated >= ?", (ms,)).fetchone()[0]

    with SandboxServer(tmp_path, {"limits": LIMITS_OFF}) as sandbox:
        start = int(time.time() * 1000)
        counts = sandbox.control("tick", "POST", changes=5, count=2)
        assert counts and all(isinstance(v, int) for v in counts.values()) and sum(counts.values()) > 0
        assert changed_since(start) > 0
        start = int(time.time() * 1000)
        sandbox.control("config", "PATCH", {"tick_seconds": 0.2})
        deadline = time.monotonic() + 10
        while changed_since(start) == 0 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert changed_since(start) > 0


def test_a_secret_is_kept_on_a_file_system_without_hard_links(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_links(source: str, target: str) -> None:  # as vfat or some network file systems answer
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    path = tmp_path / "secrets" / "sandbox.token"
    secret = kept_secret(path)
    assert secret and path.stat().st_mode & 0o777 == 0o600 and kept_secret(path) == secret
    assert [p.name for p in path.parent.iterdir()] == ["sandbox.token"]  # no draft left behind


def test_the_webhook_refuses_what_json_has_not_and_still_serves_what_it_kept(sandbox: SandboxServer) -> None:
    """Python's json reads NaN; kept, it would break every later read of the receiver (found by the fuzz test)."""
    refused = requests.post(sandbox.webhook_url, data='{"text": NaN}', timeout=10)
    kept = requests.post(sandbox.webhook_url, json={"text": "run failed"}, timeout=10)

    assert refused.status_code == 400 and kept.status_code == 200
    assert sandbox.control("webhook") == [{"text": "run failed"}]

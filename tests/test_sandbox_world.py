"""The sandbox world: deterministic, API-shaped, fully labelled, hard on purpose, and moving."""

from __future__ import annotations

import csv
import json
import logging
import multiprocessing
import multiprocessing.util
import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import unicodedata
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from sandbox import __main__ as sandbox_cli
from sandbox import chunks, loader, variants
from sandbox import hard as hard_cases
from sandbox.churn import tick
from sandbox.hardness import Hardness
from sandbox.ids import Ids
from sandbox.store import ANOMALIES_FILE, CASES_FILE, DB_FILE, STREAMS, TRUTH_FILE, WorldStore
from sandbox.world import build_world

ANCHOR = 1_750_000_000  # a fixed "now", so every run builds the same world
PEOPLE = 300
NO_PERSON = {"hubspot.companies", "klaviyo.metrics"}
SHAPES: dict[str, set[str]] = {
    "stripe.customers": {"id", "object", "created", "email", "name", "phone", "address", "currency", "balance",
                         "livemode", "metadata"},
    "stripe.subscriptions": {"id", "object", "customer", "status", "created", "canceled_at", "cancel_at_period_end",
                             "currency", "items", "metadata"},
    "stripe.invoices": {"id", "object", "customer", "subscription", "status", "amount_due", "amount_paid",
                        "currency", "created", "period_start", "period_end"},
    "stripe.events": {"id", "object", "type", "created", "api_version", "data"},
    "hubspot.contacts": {"id", "properties", "createdAt", "updatedAt", "archived"},
    "hubspot.companies": {"id", "properties", "createdAt", "updatedAt", "archived"},
    "hubspot.contact_companies": {"from", "to"},
    "zendesk.users": {"id", "url", "name", "email", "phone", "external_id", "role", "active", "suspended",
                      "organization_id", "tags", "user_fields", "time_zone", "locale", "created_at", "updated_at"},
    "zendesk.tickets": {"id", "url", "subject", "description", "status", "priority", "type", "requester_id",
                        "submitter_id", "assignee_id", "organization_id", "tags", "via", "satisfaction_rating",
                        "custom_fields", "created_at", "updated_at"},
    "klaviyo.profiles": {"type", "id", "attributes", "links"},
    "klaviyo.events": {"type", "id", "attributes", "relationships", "links"},
    "klaviyo.metrics": {"type", "id", "attributes", "links"},
    "mixpanel.events": {"event", "properties"},
}
CONTACT_PROPERTIES = {"email", "firstname", "lastname", "phone", "company", "jobtitle", "lifecyclestage", "city",
                      "country", "createdate", "lastmodifieddate", "hs_object_id", "hs_email_optout", "address", "zip",
                      "date_of_birth"}
PROFILE_ATTRIBUTES = {"email", "phone_number", "external_id", "first_name", "last_name", "organization", "title",
                      "locale", "created", "updated", "last_event_date", "location", "properties", "subscriptions"}
IDS = {
    "stripe.customers": r"cus_[0-9A-Za-z]{14}", "stripe.subscriptions": r"sub_[0-9A-Za-z]{24}",
    "stripe.invoices": r"in_[0-9A-Za-z]{24}", "stripe.events": r"evt_[0-9A-Za-z]{24}",
    "hubspot.contacts": r"[0-9]+", "hubspot.companies": r"[0-9]+", "hubspot.contact_companies": r"[0-9]+",
    "zendesk.users": r"[0-9]+", "zendesk.tickets": r"[0-9]+", "klaviyo.profiles": r"[0-9A-HJKMNP-TV-Z]{26}",
    "klaviyo.events": r"[0-9A-HJKMNP-TV-Z]{26}", "klaviyo.metrics": r"[0-9A-Za-z]{6}",
    "mixpanel.events": r"[0-9a-f]{20}",
}
HUBSPOT_TIME = "%Y-%m-%dT%H:%M:%S.%f%z"
ZENDESK_TIME = "%Y-%m-%dT%H:%M:%S%z"
EMAIL = re.compile(r"^[a-z0-9._%+-]+@[a-z0-9-]+(\.[a-z0-9-]+)*\.[a-z]{2,}$")


def dig(payload: Any, *path: str) -> Any:
    for key in path:
        payload = payload.get(key) if isinstance(payload, dict) else None
    return payload


EMAIL_AT = {"stripe.customers": ("email",), "hubspot.contacts": ("properties", "email"), "zendesk.users": ("email",),
            "klaviyo.profiles": ("attributes", "email")}
TIME_AT = {"mixpanel.events": ("properties", "time"), "klaviyo.events": ("attributes", "timestamp")}
MISSING_AT = {"stripe.subscriptions": ("customer",), "stripe.invoices": ("customer",),
              "zendesk.tickets": ("requester_id",), "mixpanel.events": ("properties", "distinct_id")}
WRONG_TYPE_AT = {"stripe.customers": (("created",), str), "stripe.invoices": (("amount_due",), str),
                 "hubspot.contacts": (("properties", "phone"), int), "mixpanel.events": (("properties", "time"), str)}
KNOWN_STATUSES = {"active", "trialing", "past_due", "unpaid", "paused", "canceled", "incomplete", "incomplete_expired",
                  "new", "open", "pending", "hold", "solved", "closed", "deleted"}
# How each anomaly kind shows in a payload of the stream it was listed for.
BAD = {
    "invalid_email": lambda stream, p: not EMAIL.match(dig(p, *EMAIL_AT[stream]).strip().lower()),
    "negative_amount": lambda stream, p: p["amount_due"] < 0,
    "future_timestamp": lambda stream, p: dig(p, *TIME_AT[stream]) > ANCHOR,
    "unknown_enum": lambda stream, p: p["status"] not in KNOWN_STATUSES,
    "missing_id": lambda stream, p: dig(p, *MISSING_AT[stream]) is None,
    "wrong_type": lambda stream, p: isinstance(dig(p, *WRONG_TYPE_AT[stream][0]), WRONG_TYPE_AT[stream][1]),
}


def rows(folder: Path) -> list[tuple[Any, ...]]:
    with sqlite3.connect(folder / DB_FILE) as conn:
        return conn.execute(
            "SELECT stream, id, created, updated, archived, payload FROM records ORDER BY 1, 2"
        ).fetchall()


def records(folder: Path, stream: str) -> list[tuple[str, int, int, bool, dict[str, Any]]]:
    return [(r[1], r[2], r[3], bool(r[4]), json.loads(r[5])) for r in rows(folder) if r[0] == stream]


def read_csv(folder: Path, name: str) -> list[tuple[str, ...]]:
    with (folder / name).open() as f:
        return [tuple(row) for row in list(csv.reader(f))[1:]]


def ms(text: str, fmt: str) -> int:
    return int(datetime.strptime(text, fmt).timestamp() * 1000)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("world")
    counts = build_world(folder, people=PEOPLE, seed=7, anchor=ANCHOR)
    assert counts == Counter(r[0] for r in rows(folder))
    return folder


@pytest.fixture(scope="module")
def truth(world: Path) -> dict[tuple[str, str], int]:
    labelled = read_csv(world, TRUTH_FILE)
    assert len(labelled) == len({(s, i) for s, i, _ in labelled}), "a record is labelled twice"
    return {(s, i): int(p) for s, i, p in labelled}


@pytest.fixture(scope="module")
def anomalies(world: Path) -> dict[tuple[str, str], str]:
    return {(s, i): kind for s, i, kind in read_csv(world, ANOMALIES_FILE)}


def test_same_seed_same_world_other_seed_other_world(tmp_path: Path, world: Path) -> None:
    build_world(tmp_path / "again", people=PEOPLE, seed=7, anchor=ANCHOR)
    build_world(tmp_path / "other", people=PEOPLE, seed=8, anchor=ANCHOR)
    assert rows(tmp_path / "again") == rows(world)
    assert (tmp_path / "again" / TRUTH_FILE).read_bytes() == (world / TRUTH_FILE).read_bytes()
    assert rows(tmp_path / "other") != rows(world)
    with pytest.raises(FileExistsError):
        build_world(tmp_path / "again", people=10, seed=7, anchor=ANCHOR)


def test_every_stream_has_records_of_the_documented_shape(world: Path) -> None:
    for stream in STREAMS:
        sample = records(world, stream)[:50]
        assert sample, stream
        for rid, created, updated, archived, payload in sample:
            assert set(payload) == SHAPES[stream], (stream, rid)
            assert re.fullmatch(IDS[stream], rid), (stream, rid)
            assert not archived and updated >= created * 1000 - 999, (stream, rid)
    contact = records(world, "hubspot.contacts")[0][4]
    assert set(contact["properties"]) == CONTACT_PROPERTIES
    assert all(isinstance(v, str | None) for v in contact["properties"].values())
    profile = records(world, "klaviyo.profiles")[0][4]
    assert set(profile["attributes"]) == PROFILE_ATTRIBUTES
    assert profile["attributes"]["created"].endswith("+00:00")
    assert set(profile["attributes"]["subscriptions"]["email"]["marketing"]) == {
        "can_receive_email_marketing", "consent", "consent_timestamp", "method"}
    metrics = {p["attributes"]["name"] for *_, p in records(world, "klaviyo.metrics")}
    assert metrics == {"Received Email", "Opened Email", "Clicked Email", "Bounced Email", "Unsubscribed"}


def test_row_times_agree_with_payload_times(world: Path) -> None:
    assert_times_agree(world, ANCHOR * 1000)


def assert_times_agree(folder: Path, now_ms: int) -> None:
    """records.created/updated are what the server filters on; they must say what the payload says.

    Second-precision sources agree to the second: churn stamps ``updated`` with the tick's exact ms.
    """
    anomalies = {(s, i): kind for s, i, kind in read_csv(folder, ANOMALIES_FILE)}
    for stream, rid, created, updated, _, text in rows(folder):
        p, second = json.loads(text), updated // 1000 * 1000
        if anomalies.get((stream, rid)) == "wrong_type" or stream == "hubspot.contact_companies" or p.get("deleted"):
            continue
        if stream.startswith("stripe."):
            assert p["created"] == created, rid
        if stream in ("klaviyo.events", "mixpanel.events"):
            assert updated == created * 1000, rid
        if stream == "stripe.events":  # the event's second, then its place among that second's events
            assert created * 1000 <= updated < (created + 1) * 1000, rid
        if stream == "hubspot.contacts":
            props = p["properties"]
            assert ms(props["createdate"], HUBSPOT_TIME) // 1000 == created
            assert ms(props["lastmodifieddate"], HUBSPOT_TIME) == ms(p["updatedAt"], HUBSPOT_TIME) == updated
        if stream == "hubspot.companies":
            assert ms(p["properties"]["hs_lastmodifieddate"], HUBSPOT_TIME) == updated
        if stream.startswith("zendesk."):
            assert (ms(p["created_at"], ZENDESK_TIME), ms(p["updated_at"], ZENDESK_TIME)) == (created * 1000, second)
        if stream == "klaviyo.profiles":
            assert datetime.fromisoformat(p["attributes"]["updated"]).timestamp() * 1000 == second
        if stream == "klaviyo.events":
            assert p["attributes"]["timestamp"] == created
        if stream == "mixpanel.events":
            assert p["properties"]["time"] == created
        if anomalies.get((stream, rid)) != "future_timestamp":
            assert updated <= now_ms, (stream, rid)


def test_truth_labels_every_person_record_exactly_once(world: Path, truth: dict[tuple[str, str], int]) -> None:
    person_records = {(r[0], r[1]) for r in rows(world) if r[0] not in NO_PERSON}
    assert set(truth) == person_records
    assert max(truth.values()) <= PEOPLE and min(truth.values()) >= 1
    store = WorldStore(world)
    assert store.get_meta("seed") == 7 and store.get_meta("anchor") == ANCHOR and store.get_meta("tick") == 0
    assert store.get_meta("next_person") == PEOPLE + 1


def test_stripe_events_cover_only_the_last_30_days(world: Path) -> None:
    events = records(world, "stripe.events")
    assert {p["type"] for *_, p in events} >= {"customer.created", "customer.subscription.created", "invoice.created",
                                               "invoice.paid", "customer.subscription.updated"}
    assert all(ANCHOR - 30 * 86_400 <= created <= ANCHOR for _, created, *_ in events)
    objects = {rid for s in ("stripe.customers", "stripe.subscriptions", "stripe.invoices") for rid, *_ in
               records(world, s)}
    assert {p["data"]["object"]["id"] for *_, p in events} <= objects


def test_households_share_a_device_and_couples_a_login(world: Path, truth: dict[tuple[str, str], int]) -> None:
    people_by_device: dict[str, set[int]] = defaultdict(set)
    users_by_device: dict[str, set[str]] = defaultdict(set)
    people_by_user: dict[str, set[int]] = defaultdict(set)
    for rid, *_, p in records(world, "mixpanel.events"):
        props, person = p["properties"], truth[("mixpanel.events", rid)]
        people_by_device[props["$device_id"]].add(person)
        if "$user_id" in props:
            users_by_device[props["$device_id"]].add(props["$user_id"])
            people_by_user[props["$user_id"]].add(person)
    shared_devices = [d for d, people in people_by_device.items() if len(people) > 1]
    assert shared_devices and all(len(users_by_device[d]) > 1 for d in shared_devices)
    assert any(len(people) == 2 for people in people_by_user.values()), "no couple shares a login"
    anonymous = [p for *_, p in records(world, "mixpanel.events") if "$user_id" not in p["properties"]]
    assert all(p["properties"].get("distinct_id", "$device:")[:8] == "$device:" for p in anonymous)


def test_people_are_known_by_several_and_messy_emails(world: Path, truth: dict[tuple[str, str], int]) -> None:
    emails: dict[int, set[str]] = defaultdict(set)
    sources = {"hubspot.contacts": ("properties", "email"), "stripe.customers": ("email",),
               "zendesk.users": ("email",), "klaviyo.profiles": ("attributes", "email")}
    raw_contacts: dict[int, list[str]] = defaultdict(list)
    for stream, path in sources.items():
        for rid, *_, p in records(world, stream):
            value = p[path[0]] if len(path) == 1 else p[path[0]][path[1]]
            emails[truth[(stream, rid)]].add(value.strip().lower())
            if stream == "hubspot.contacts":
                raw_contacts[truth[(stream, rid)]].append(value)
    assert sum(len(found) >= 2 for found in emails.values()) > PEOPLE // 5
    duplicates = [
        addresses for addresses in raw_contacts.values()
        if len({a.strip().lower() for a in addresses}) < len(addresses) and len(set(addresses)) == len(addresses)
    ]
    assert duplicates and any(a != a.strip() for found in duplicates for a in found), "no whitespace variant"


def test_job_changers_have_an_old_contact_and_a_bouncing_address(
    world: Path, truth: dict[tuple[str, str], int]
) -> None:
    companies_of: dict[int, set[int]] = defaultdict(set)
    for rid, *_, p in records(world, "hubspot.contact_companies"):
        companies_of[truth[("hubspot.contact_companies", rid)]].add(p["to"][0]["toObjectId"])
    movers = {person for person, companies in companies_of.items() if len(companies) > 1}
    metric = {p["attributes"]["name"]: mid for mid, *_, p in records(world, "klaviyo.metrics")}
    bounced = {p["relationships"]["profile"]["data"]["id"] for *_, p in records(world, "klaviyo.events")
               if p["relationships"]["metric"]["data"]["id"] == metric["Bounced Email"]}
    bouncing_people = {truth[("klaviyo.profiles", pid)] for pid in bounced}
    assert movers and bouncing_people and movers & bouncing_people


def test_cases_label_every_hard_case_the_records_show(
    world: Path, truth: dict[tuple[str, str], int], anomalies: dict[tuple[str, str], str]
) -> None:
    labelled = read_csv(world, CASES_FILE)
    assert len(labelled) == len(set(labelled)), "a person is labelled twice with one case"
    cases: dict[str, set[int]] = defaultdict(set)
    for person, case in labelled:
        cases[case].add(int(person))
    assert set(cases) == {"shared_device", "shared_login", "several_emails", "typos", "case_variants", "job_change",
                          *NEW_CASES}
    by_user: dict[str, set[int]] = defaultdict(set)
    by_device: dict[str, set[int]] = defaultdict(set)
    for rid, *_, p in records(world, "mixpanel.events"):
        props, person = p["properties"], truth[("mixpanel.events", rid)]
        by_device[props["$device_id"]].add(person)
        if "$user_id" in props:
            by_user[props["$user_id"]].add(person)
    assert cases["shared_login"] == {person for people in by_user.values() if len(people) > 1 for person in people}
    assert {person for people in by_device.values() if len(people) > 1 for person in people} <= cases["shared_device"]
    emails: dict[int, set[str]] = defaultdict(set)
    names: dict[int, set[str]] = defaultdict(set)
    messy: set[int] = set()
    name_at = {"hubspot.contacts": lambda p: f"{p['properties']['firstname']} {p['properties']['lastname']}",
               "zendesk.users": lambda p: p["name"],
               "klaviyo.profiles": lambda p: f"{p['attributes']['first_name']} {p['attributes']['last_name']}"}
    for stream, path in EMAIL_AT.items():
        for rid, *_, p in records(world, stream):
            person, email = truth[(stream, rid)], dig(p, *path)
            if stream in name_at:
                names[person].add(name_at[stream](p))
            if (stream, rid) in anomalies:
                continue
            emails[person].add(email.strip().lower())
            if email != email.strip().lower():
                messy.add(person)
    other_address = ("several_emails", "email_typo", "plus_address", "role_mailbox")
    assert {person for person, found in emails.items() if len(found) > 1} <= set().union(
        *(cases[case] for case in other_address))
    other_name = ("typos", "name_swap", "nickname", "diacritics")
    assert {person for person, found in names.items() if len(found) > 1} <= set().union(
        *(cases[case] for case in other_name))
    assert messy and messy <= cases["case_variants"]
    companies_of: dict[int, set[int]] = defaultdict(set)
    for rid, *_, p in records(world, "hubspot.contact_companies"):
        companies_of[truth[("hubspot.contact_companies", rid)]].add(p["to"][0]["toObjectId"])
    assert {person for person, found in companies_of.items() if len(found) > 1} <= cases["job_change"]


def test_each_anomaly_kind_is_listed_and_really_bad(world: Path, anomalies: dict[tuple[str, str], str]) -> None:
    assert set(anomalies.values()) == set(BAD)
    payloads = {(r[0], r[1]): json.loads(r[5]) for r in rows(world)}
    for (stream, rid), kind in anomalies.items():
        assert BAD[kind](stream, payloads[(stream, rid)]), (stream, rid, kind)
    per_stream = Counter(stream for stream, _ in anomalies)
    assert 0 < per_stream["mixpanel.events"] < 0.05 * len(records(world, "mixpanel.events"))


def test_ticks_add_update_and_archive_deterministically(tmp_path: Path) -> None:
    worlds = [tmp_path / "a", tmp_path / "b"]
    for folder in worlds:
        build_world(folder, people=120, seed=3, anchor=ANCHOR)
    truth_before = len(read_csv(worlds[0], TRUTH_FILE))
    now_ms = ANCHOR * 1000 + 3_600_123
    results = [[tick(WorldStore(folder), now_ms + i * 60_000) for i in range(3)] for folder in worlds]
    assert results[0] == results[1] and rows(worlds[0]) == rows(worlds[1])
    for name in (TRUTH_FILE, CASES_FILE):
        assert (worlds[0] / name).read_bytes() == (worlds[1] / name).read_bytes()

    first = results[0][0]
    assert first["people_signed_up"] == 5 and first["records_created"] > 0 and first["stripe_events"] > 0
    changed = [r for r in rows(worlds[0]) if r[3] >= now_ms]
    assert {r[0] for r in changed if r[2] * 1000 < now_ms} >= {"hubspot.contacts", "stripe.customers",
                                                               "klaviyo.profiles", "zendesk.tickets"}
    archived = {r[0]: json.loads(r[5]) for r in changed if r[4]}
    assert set(archived) >= {"hubspot.contacts", "hubspot.companies", "stripe.customers", "klaviyo.profiles",
                             "zendesk.users", "zendesk.tickets"}
    assert archived["hubspot.contacts"]["archived"] is True and "archivedAt" in archived["hubspot.contacts"]
    assert archived["stripe.customers"] == {"id": archived["stripe.customers"]["id"], "object": "customer",
                                            "deleted": True}
    assert archived["zendesk.users"]["active"] is False and archived["zendesk.tickets"]["status"] == "deleted"
    events = [json.loads(r[5]) for r in changed if r[0] == "stripe.events"]
    assert {e["type"] for e in events} >= {"customer.updated", "customer.deleted", "customer.subscription.deleted",
                                           "customer.created", "invoice.paid"}
    assert all("previous_attributes" in e["data"] for e in events if e["type"] == "customer.updated")

    truth = read_csv(worlds[0], TRUTH_FILE)
    assert len(truth) > truth_before
    assert any(int(person) > 120 for person, _ in read_csv(worlds[0], CASES_FILE)), "no case of a new person"
    assert {(s, i) for s, i, _ in truth} == {(r[0], r[1]) for r in rows(worlds[0]) if r[0] not in NO_PERSON}
    assert_times_agree(worlds[0], now_ms + 2 * 60_000)
    store = WorldStore(worlds[0])
    assert store.get_meta("tick") == 3 and store.get_meta("next_person") == 120 + 1 + 15


def world_files(folder: Path) -> tuple[Any, ...]:
    """Everything a build writes: records, owners, meta, truth, anomalies and cases."""
    with sqlite3.connect(folder / DB_FILE) as conn:
        owners = conn.execute("SELECT stream, id, person_id FROM owners ORDER BY 1, 2").fetchall()
        meta = conn.execute("SELECT key, value FROM meta ORDER BY key").fetchall()
    csvs = tuple((folder / name).read_bytes() for name in (TRUTH_FILE, ANOMALIES_FILE, CASES_FILE))
    return rows(folder), owners, meta, *csvs


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> int:
    """Chunks of 40 people, and worker processes from 80 people: multi-chunk builds at test size."""
    monkeypatch.setattr(chunks, "CHUNK_PEOPLE", 40)
    monkeypatch.setattr(loader, "POOL_FROM", 80)
    return 40


def test_chunked_world_is_the_same_in_one_or_two_processes(tmp_path: Path, small_chunks: int) -> None:
    people = 3 * small_chunks + 10
    build_world(tmp_path / "one", people=people, seed=5, anchor=ANCHOR, workers=1)
    build_world(tmp_path / "two", people=people, seed=5, anchor=ANCHOR, workers=2)
    assert world_files(tmp_path / "one") == world_files(tmp_path / "two")
    # ... and in another interpreter with another string-hash seed (this one's is random)
    script = "import sys; from sandbox.world import build_world; build_world(*sys.argv[1:2], " \
             f"people={people}, seed=5, anchor={ANCHOR}, workers=2)"
    patch = "import sandbox.chunks as c, sandbox.loader as l; c.CHUNK_PEOPLE = 40; l.POOL_FROM = 80; "
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    subprocess.run([sys.executable, "-c", patch + script, str(tmp_path / "other")], check=True, env=env)
    assert world_files(tmp_path / "other") == world_files(tmp_path / "one")

    store = WorldStore(tmp_path / "one")
    assert store.get_meta("next_person") == people + 1
    gaps = store.get_meta("gaps")
    assert set(gaps) == {"user", "cus", "sub", "si", "in", "evt", "contact", "zd_user", "zd_ticket", "kl_profile",
                         "kl_event", "mp_event"}
    assert all(len(spans) == 3 for spans in gaps.values())  # one after each chunk but the last


def test_a_world_builds_cleanly_in_a_process_that_ran_dagster(tmp_path: Path, small_chunks: int,
                                                             capfd: pytest.CaptureFixture[str],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Dagster maps SIGTERM to SIGINT once it has run a job in a process, as in a test worker, whose threads
    (DuckDB's, Dagster's) a forked child would inherit half-copied. The world's workers start from a clean process
    and leave by themselves, not stopped by a signal: a worker that leaves says so in multiprocessing's log (which
    reaches workers started from a clean process only through log_to_stderr); one ended by a signal does not."""
    previous = signal.signal(signal.SIGTERM, signal.getsignal(signal.SIGINT))  # dagster._utils.interrupts does this
    monkeypatch.setattr(multiprocessing.util, "_log_to_stderr", multiprocessing.util._log_to_stderr)  # undone after
    level = multiprocessing.get_logger().level
    log = multiprocessing.log_to_stderr(logging.INFO)
    handler = log.handlers[-1]
    try:
        for build in range(6):
            build_world(tmp_path / str(build), people=3 * small_chunks + 10, seed=5, anchor=ANCHOR, workers=2)
    finally:
        signal.signal(signal.SIGTERM, previous)
        log.removeHandler(handler)
        log.setLevel(level)
    said = capfd.readouterr().err
    assert "KeyboardInterrupt" not in said and said.count("process exiting with exitcode 0") == 6 * 2


def test_a_closed_turnstile_stops_the_writers_waiting_for_their_turn_even_after_one_was_killed() -> None:
    """A chunk that fails is never written; once the build sees the failure it closes the turnstile, and a writer
    waiting for that chunk's turn stops at once instead of holding the pool's exit for TURN_TIMEOUT. A writer killed
    while it waited (a worker that crashed) must not make the close wait for it, and a writer finishing its chunk
    after the close does not open the turnstile again."""
    context = multiprocessing.get_context("spawn")
    turnstile = loader.Turnstile(context)
    killed = context.Process(target=turnstile.wait, args=(1,), daemon=True)  # chunk 0 never says it is done
    killed.start()
    time.sleep(3)  # it has started and waits
    assert killed.is_alive()
    killed.kill()
    killed.join()
    stopped: list[BaseException] = []

    def writer() -> None:
        try:
            turnstile.wait(1)
        except RuntimeError as error:
            stopped.append(error)

    waiting = threading.Thread(target=writer, daemon=True)
    waiting.start()
    closing = threading.Thread(target=turnstile.close, daemon=True)
    closing.start()
    closing.join(timeout=30)
    waiting.join(timeout=30)
    assert not closing.is_alive() and not waiting.is_alive() and "the build stopped" in str(stopped[0])
    turnstile.done(0)  # chunk 0's writer finishes after the close
    with pytest.raises(RuntimeError, match="the build stopped"):
        turnstile.wait(1)


def test_ids_draw_only_numbers_in_use() -> None:
    ids = Ids(7, {"kl_event": 30}, {"kl_event": [(5, 10), (20, 25)]})
    rng = random.Random(1)
    assert {ids.draw("kl_event", rng) for _ in range(2000)} == {*range(5), *range(10, 20), *range(25, 30)}
    assert Ids(7).draw("user", rng) is None


def test_ticks_work_on_a_chunked_world(tmp_path: Path, small_chunks: int) -> None:
    build_world(tmp_path, people=2 * small_chunks + 5, seed=4, anchor=ANCHOR, workers=2)
    now_ms = ANCHOR * 1000 + 3_600_500  # Stripe events of the tick's second are ordered in its ms
    counts = [tick(WorldStore(tmp_path), now_ms + i * 60_000) for i in range(3)]
    assert all(c["hubspot_contacts_updated"] and c["stripe_customers_updated"] and c["mixpanel_users_active"]
               and c["zendesk_tickets_progressed"] for c in counts)
    truth = read_csv(tmp_path, TRUTH_FILE)
    assert len(truth) == len({(s, i) for s, i, _ in truth})
    assert {(s, i) for s, i, _ in truth} == {(r[0], r[1]) for r in rows(tmp_path) if r[0] not in NO_PERSON}
    assert_times_agree(tmp_path, now_ms + 2 * 60_000)


# --- the hard cases of real customer data (sandbox.hard), on the session's 400-person world -------------------

NEW_CASES = {"role_mailbox", "household_phone", "email_typo", "plus_address", "name_swap", "nickname", "diacritics",
             "moved", "common_name", "two_accounts"}
NAMED = {"hubspot.contacts": (("properties", "firstname"), ("properties", "lastname")),
         "klaviyo.profiles": (("attributes", "first_name"), ("attributes", "last_name"))}
CITY_AT = {"hubspot.contacts": ("properties", "city"), "stripe.customers": ("address", "city"),
           "klaviyo.profiles": ("attributes", "location", "city")}
PHONE_AT = {"hubspot.contacts": ("properties", "phone"), "stripe.customers": ("phone",), "zendesk.users": ("phone",),
            "klaviyo.profiles": ("attributes", "phone_number")}


@dataclass
class Hard:
    """The session world's person records, with their owners and the cases of each person."""

    records: dict[str, list[tuple[int, dict[str, Any]]]]  # stream -> (person, payload)
    clean: dict[str, list[tuple[int, dict[str, Any]]]]  # the same without the records an anomaly spoilt
    cases: dict[str, set[int]]

    def values(self, at: dict[str, tuple[str, ...]], clean: bool = False) -> list[tuple[int, Any]]:
        found = self.clean if clean else self.records
        return [(person, dig(p, *at[stream])) for stream in at for person, p in found[stream]]


@pytest.fixture(scope="module")
def hard(world_template: Path) -> Hard:
    owner = {(s, i): int(p) for s, i, p in read_csv(world_template, TRUTH_FILE)}
    found: dict[str, list[tuple[int, dict[str, Any]]]] = defaultdict(list)
    clean: dict[str, list[tuple[int, dict[str, Any]]]] = defaultdict(list)
    anomalous = {(s, i) for s, i, _ in read_csv(world_template, ANOMALIES_FILE)}
    for stream, rid, *_, text in rows(world_template):
        if stream in {*EMAIL_AT, "mixpanel.events"}:
            found[stream].append((owner[(stream, rid)], json.loads(text)))
            if (stream, rid) not in anomalous:
                clean[stream].append(found[stream][-1])
    cases: dict[str, set[int]] = defaultdict(set)
    for person, case in read_csv(world_template, CASES_FILE):
        cases[case].add(int(person))
    return Hard(found, clean, cases)


def test_role_mailboxes_are_held_by_records_of_several_colleagues(hard: Hard) -> None:
    holders: dict[str, set[int]] = defaultdict(set)
    for person, email in hard.values(EMAIL_AT, clean=True):
        holders[email.strip().lower()].add(person)
    shared = {email: people for email, people in holders.items() if len(people) > 1}
    assert shared and all(email.partition("@")[0] in hard_cases.ROLES for email in shared), shared
    assert set().union(*shared.values()) <= hard.cases["role_mailbox"]


def test_a_household_phone_is_on_two_peoples_records(hard: Hard) -> None:
    holders: dict[str, set[int]] = defaultdict(set)
    for person, phone in hard.values(PHONE_AT, clean=True):
        if phone and "x" not in str(phone):  # an extension's digits would not compare
            holders[re.sub(r"\D", "", str(phone))[-9:]].add(person)
    shared = [people for people in holders.values() if len(people) > 1]
    assert shared and set().union(*shared) <= hard.cases["household_phone"]


def test_mistyped_and_tagged_addresses_are_labelled(hard: Hard) -> None:
    emails: dict[int, set[str]] = defaultdict(set)
    for person, email in hard.values(EMAIL_AT, clean=True):
        emails[person].add(email.strip().lower())
    # A typo differs from the true address (which the person's other records hold) by a letter or two.
    slipped = {person for person, found in emails.items() for a in found for b in found if a < b and _slip(a, b)}
    assert slipped and slipped <= hard.cases["email_typo"]
    tagged = {person for person, found in emails.items() if any("+" in email for email in found)}
    assert tagged and tagged <= hard.cases["plus_address"]


def _slip(a: str, b: str) -> bool:
    """Same local part and a domain one or two edits away, or the same domain and two letters swapped."""
    (la, _, da), (lb, _, db) = a.partition("@"), b.partition("@")
    if la == lb:
        return _edits(da, db) <= 2
    return da == db and len(la) == len(lb) and sorted(la) == sorted(lb) and \
        sum(x != y for x, y in zip(la, lb, strict=True)) == 2


def _edits(a: str, b: str) -> int:
    """Levenshtein distance (small strings)."""
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, y in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (x != y))
    return row[-1]


def test_names_are_swapped_shortened_and_decomposed(hard: Hard) -> None:
    names: dict[int, set[tuple[str, str]]] = defaultdict(set)
    for stream, (first, last) in NAMED.items():
        for person, p in hard.records[stream]:
            names[person].add((dig(p, *first), dig(p, *last)))
    swapped = {person for person, found in names.items() if any((b, a) in found and a != b for a, b in found)}
    assert swapped and swapped <= hard.cases["name_swap"]
    nicknamed = {person for person, found in names.items()
                 if any(b in variants.NICKNAMES.get(a, ()) for a, _ in found for b, _ in found)}
    assert nicknamed and nicknamed <= hard.cases["nickname"]
    nfd = {person for person, found in names.items() for name in found for part in name
           if not unicodedata.is_normalized("NFC", part)}
    assert nfd and nfd <= hard.cases["diacritics"]


def test_movers_give_two_cities_and_namesakes_share_name_and_city(hard: Hard) -> None:
    cities: dict[int, set[str]] = defaultdict(set)
    for person, city in hard.values(CITY_AT):
        cities[person].add(city)
    assert hard.cases["moved"] and all(len(cities[person]) > 1 for person in hard.cases["moved"])
    shown: dict[tuple[str, str, str], set[int]] = defaultdict(set)
    for person, p in hard.records["hubspot.contacts"]:
        props = p["properties"]
        shown[(props["firstname"], props["lastname"], props["city"])].add(person)
    for person, p in hard.records["klaviyo.profiles"]:
        a = p["attributes"]
        shown[(a["first_name"], a["last_name"], a["location"]["city"])].add(person)
    namesakes = [people for people in shown.values() if len(people) > 1]
    assert namesakes and set().union(*namesakes) <= hard.cases["common_name"]


def test_second_accounts_and_person_fields(hard: Hard) -> None:
    logins: dict[int, set[str]] = defaultdict(set)
    for person, p in hard.records["mixpanel.events"]:
        if "$user_id" in p["properties"]:
            logins[person].add(p["properties"]["$user_id"])
    contacts = Counter(person for person, _ in hard.records["hubspot.contacts"])
    assert all(len(logins[person]) > 1 or contacts[person] > 1 for person in hard.cases["two_accounts"])
    assert any(len(logins[person]) > 1 for person in hard.cases["two_accounts"])
    props = [p["properties"] for _, p in hard.records["hubspot.contacts"]]
    born = [prop["date_of_birth"] for prop in props if prop["date_of_birth"]]
    assert 0.3 < len(born) / len(props) < 0.8 and all(re.fullmatch(r"\d{4}-\d\d-\d\d", b) for b in born)
    assert sum(1 for b in born if not _is_date(b)) < 0.1 * len(born)  # errors are few, some unreadable
    assert 0.3 < sum(bool(prop["address"] and prop["zip"]) for prop in props) / len(props) < 0.8
    located = [p["attributes"]["location"] for _, p in hard.records["klaviyo.profiles"]]
    assert any(loc["address1"] and loc["zip"] for loc in located) and any(loc["zip"] is None for loc in located)


def _is_date(text: str) -> bool:
    try:
        datetime.strptime(text, "%Y-%m-%d")
    except ValueError:
        return False
    return True


def test_hardness_from_a_json_file_changes_rates_not_people(tmp_path: Path, world: Path) -> None:
    settings = tmp_path / "hardness.json"
    settings.write_text(json.dumps({"email_typo": 0.3, "moved": 0, "name_swap": 0.2, "role_mailbox": 0}))
    folder = tmp_path / "hard"
    assert sandbox_cli.main(["build", "--folder", str(folder), "--people", str(PEOPLE), "--seed", "7",
                             "--anchor", str(ANCHOR), "--hardness", str(settings)]) == 0
    counts = [Counter(case for _, case in read_csv(f, CASES_FILE)) for f in (world, folder)]
    assert counts[1]["email_typo"] > 4 * counts[0]["email_typo"] and counts[1]["name_swap"] > 4 * counts[0]["name_swap"]
    assert counts[0]["moved"] and not counts[1]["moved"]
    assert counts[0]["role_mailbox"] and not counts[1]["role_mailbox"]  # a rate of 0 is none, even in a small world
    assert WorldStore(folder).get_meta("hardness") == asdict(Hardness.from_dict(json.loads(settings.read_text())))
    # Same people, ids and sources: only what the records show changed.
    kept = ("stripe.", "zendesk.", "klaviyo.")
    assert [r for r in read_csv(world, TRUTH_FILE) if r[0].startswith(kept)] == \
        [r for r in read_csv(folder, TRUTH_FILE) if r[0].startswith(kept)]
    with pytest.raises(ValueError, match="unknown hardness"):
        Hardness.from_dict({"email_typos": 0.1})
    for wrong in ({"shared_login_every": 2.5}, {"role_mailbox": True}, {"moved": "0.1"}):
        with pytest.raises(ValueError, match="must be a"):
            Hardness.from_dict(wrong)
    assert Hardness.held_out() != Hardness() and Hardness.from_dict(asdict(Hardness.held_out())) == Hardness.held_out()

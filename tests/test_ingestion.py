"""Extraction and landing, end to end: the sandbox over HTTP, Dagster runs, a DuckDB file."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from dagster import AssetKey, DagsterEventType, PartitionKeyRange
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
    PARTITION_NAME_TAG,
)

from cdp_assets.raw import days_of_streams
from resources import DESTINATIONS, SOURCES, build_resources, lookback_seconds, pacing_variable
from resources.http import Pacer, RateLimit, pace
from resources.hubspot import HubSpotResource
from resources.klaviyo import KlaviyoResource
from resources.source import LATE_DAYS
from sandbox.config import Credentials
from sandbox.runner import SandboxServer
from sandbox.store import WorldStore
from schedules import days_tags
from tests.conftest import TEST_SANDBOX_CONFIG, Env, Pipeline, with_config, world_records

# World stream -> (staging table, column holding the world's record id).
STAGED: dict[str, tuple[str, str]] = {
    "stripe.customers": ("staging.stripe__customers", "customer_id"),
    "stripe.subscriptions": ("staging.stripe__subscriptions", "subscription_id"),
    "stripe.invoices": ("staging.stripe__invoices", "invoice_id"),
    "hubspot.contacts": ("staging.hubspot__contacts", "contact_id"),
    "hubspot.companies": ("staging.hubspot__companies", "company_id"),
    "zendesk.users": ("staging.zendesk__users", "user_id"),
    "zendesk.tickets": ("staging.zendesk__tickets", "ticket_id"),
    "klaviyo.profiles": ("staging.klaviyo__profiles", "profile_id"),
    "klaviyo.events": ("staging.klaviyo__events", "event_id"),
    "klaviyo.metrics": ("staging.klaviyo__metrics", "metric_id"),
    "mixpanel.events": ("staging.mixpanel__events", "insert_id"),
}
RAW_TABLES = [
    "raw.stripe_customers",
    "raw.stripe_subscriptions",
    "raw.stripe_invoices",
    "raw.hubspot_contacts",
    "raw.hubspot_companies",
    "raw.hubspot_contact_companies",
    "raw.zendesk_users",
    "raw.zendesk_tickets",
    "raw.klaviyo_profiles",
    "raw.klaviyo_events",
    "raw.klaviyo_metrics",
    "raw.mixpanel_events",
]
# Streams whose deletions an incremental pull sees: the source still lists what it deleted or archived, or (Klaviyo
# profiles) the pull lists every id first.
LISTS_DELETIONS = ("stripe.customers", "hubspot.contacts", "hubspot.companies", "zendesk.users", "zendesk.tickets",
                   "klaviyo.profiles")  # fmt: skip


# A quarantined Mixpanel event's `$insert_id` (the world's id), also from properties sent as key/value pairs.
MIXPANEL_INSERT_ID = (
    "coalesce(json_extract_string(r.payload, '$.properties.\"$insert_id\"'),"
    " regexp_extract(r.payload::VARCHAR, '\"key\":\"\\$insert_id\",\"value\":\"([^\"]*)\"', 1))"
)


def staged(pipeline: Pipeline, stream: str) -> dict[str, bool]:
    """Record id -> deleted flag for every record of a stream, in staging or quarantine (never both)."""
    table, column = STAGED[stream]
    passed = dict(pipeline.query(f"SELECT {column}, is_deleted FROM {table}"))
    quarantine, raw = "quarantine." + table.split(".")[1], "raw." + stream.replace(".", "_")
    world_id = MIXPANEL_INSERT_ID if column == "insert_id" else "q.record_id"
    held = dict(
        pipeline.query(
            f"SELECT {world_id}, q.is_deleted FROM {quarantine} q JOIN {raw} r ON r.landing_id = q.raw_landing_id"
        )
    )
    assert not passed.keys() & held.keys(), f"{stream}: records both in staging and quarantine"
    return passed | held


def assert_staging_matches_world(pipeline: Pipeline, world: Path) -> None:
    for stream in STAGED:
        records = world_records(world, stream)
        rows = staged(pipeline, stream)
        live = {record_id for record_id, (_, archived) in records.items() if not archived}
        assert {record_id for record_id, deleted in rows.items() if not deleted} == live, stream
        assert set(rows) <= set(records), f"{stream}: staging holds records the world never had"
    [(rows, distinct)] = pipeline.query("SELECT count(*), count(DISTINCT insert_id) FROM staging.mixpanel__events")
    assert rows == distinct


# Streams whose API serves the stored record unchanged, so the current landed payload must equal it.
SERVED_AS_STORED = (
    "stripe.customers",
    "stripe.subscriptions",
    "stripe.invoices",
    "zendesk.users",
    "zendesk.tickets",
    "klaviyo.profiles",
    "klaviyo.events",
)


def assert_current_payloads_match_world(
    pipeline: Pipeline, world: Path, streams: tuple[str, ...] = SERVED_AS_STORED
) -> None:
    """The version staging calls current is the one the source holds now, field for field."""
    store = WorldStore(world)
    for stream in streams:
        raw_table = "raw." + stream.replace(".", "_")
        current = {
            record_id: json.loads(payload)
            for record_id, payload, deleted in pipeline.query(
                "SELECT record_id, arg_max(payload, (version_at, landing_id)),"
                f" arg_max(deleted, (version_at, landing_id)) FROM {raw_table} GROUP BY record_id"
            )
            if not deleted
        }
        live = {record.id: record.payload for record in store.scan(stream) if not record.archived}
        assert current.keys() == live.keys(), stream
        differing = [record_id for record_id, payload in live.items() if current[record_id] != payload]
        assert not differing, f"{stream}: {len(differing)} records differ, e.g. {differing[:3]}"


def assert_no_version_landed_twice(pipeline: Pipeline, tables: list[str] = RAW_TABLES) -> None:
    """No record's history holds one version twice in a row (a record that returns to an earlier state, A B A,
    is three changes)."""
    for table in tables:
        [(twice,)] = pipeline.query(
            f"SELECT count(*) FROM (SELECT payload_hash || ':' || deleted AS state, lag(payload_hash || ':' ||"
            " deleted) OVER (PARTITION BY coalesce(record_id, '#' || payload_hash) ORDER BY version_at, landing_id)"
            f" AS previous FROM {table}) WHERE state = previous"
        )
        assert twice == 0, table


# Columns that say when or in which run a row was written, which differ between two equal runs.
BOOKKEEPING = ("source_updated_at", "_extracted_at", "_landing_id", "raw_landing_id", "run_id", "quarantined_at")


def staging_snapshot(pipeline: Pipeline) -> dict[str, list[tuple[Any, ...]]]:
    """Every staging, quarantine, identity and consent table's business columns, in a stable order (landing
    bookkeeping, and the measures and logs of runs, which differ in time by nature, left out). Views are left
    out, as is identity.person_lifecycle: they are rebuilt whole from these on every run, and their 7-, 30- and
    90-day windows move with the clock between two runs."""
    snapshot = {}
    for (table,) in pipeline.query(
        "SELECT table_schema || '.' || table_name FROM information_schema.tables"
        " WHERE table_schema IN ('staging', 'quarantine', 'identity', 'privacy') AND NOT starts_with(table_name, '_')"
        " AND NOT starts_with(table_name, 'quality_')"
        " AND table_name NOT IN ('merge_log', 'profile_registry', 'person_lifecycle')"
    ):
        # Identity's times come from the sources' version times, which for Stripe customers is the pull's time.
        times = " AND NOT ends_with(c, '_at')" if table.startswith(("identity.", "privacy.")) else ""
        snapshot[table] = pipeline.query(
            f"SELECT COLUMNS(lambda c: c NOT IN {BOOKKEEPING}{times}) FROM {table} ORDER BY ALL"
        )
    return snapshot


def test_every_record_arrives_exactly_once_despite_faults(world: Path, tmp_path: Path) -> None:
    faults = {"default": {"error_rate": 0.1, "burst_429_every": 40, "burst_429_length": 3, "drop_rate": 0.03}}
    with SandboxServer(world, with_config({"faults": faults})) as sandbox:
        pipeline = Pipeline(sandbox.url, tmp_path / "warehouse.duckdb")
        outcome = pipeline.run()
        stats = sandbox.control("stats")

    assert outcome.success
    injected = stats["totals"]
    assert injected["injected_5xx"] > 0 and injected["status"].get("429", 0) > 0 and injected["drops"] > 0
    assert sum(meta["retries"] for key, meta in outcome.metadata.items() if key.startswith("raw/")) > 0
    assert_staging_matches_world(pipeline, world)
    assert_current_payloads_match_world(pipeline, world)
    assert_no_version_landed_twice(pipeline)


def test_second_run_fetches_only_what_changed(start: Callable[..., Env]) -> None:
    env = start(syncs=False)  # the test world after a first run
    sandbox, pipeline, world = env.sandbox, env.pipeline, env.world
    before = {stream: world_records(world, stream) for stream in [*STAGED, "stripe.events"]}
    sandbox.control("tick", "POST", changes=10)
    second = pipeline.run()
    new_stripe_events = len(world_records(world, "stripe.events").keys() - before["stripe.events"].keys())

    assert second.success
    unchanged = []
    for stream in STAGED:
        if stream == "klaviyo.metrics":  # a handful of rows, read whole every run
            continue
        after = world_records(world, stream)
        changed = {record_id for record_id, version in after.items() if before[stream].get(record_id) != version}
        visible = changed if stream in LISTS_DELETIONS else {i for i in changed if not after[i][1]}
        raw_table = "raw." + stream.replace(".", "_")
        # Mixpanel events land under Mixpanel's own event identity; the world knows them by $insert_id.
        landed_id = (
            "json_extract_string(payload, '$.properties.\"$insert_id\"')"
            if stream == "mixpanel.events"
            else "record_id"
        )
        query = f"SELECT {landed_id} FROM {raw_table} WHERE run_id = $run"
        landed = {row[0] for row in pipeline.query(query, {"run": second.run_id})}
        assert landed == visible, stream
        if not visible:
            unchanged.append(stream)
            continue

        pulled = second.metadata[raw_table.replace(".", "/", 1)]
        fetched = pulled["rows_fetched"] + pulled["rows_marked_deleted"]  # a deletion found by listing ids is marked
        if stream.startswith("stripe."):  # one event per change; one record may change more than once
            assert len(visible) <= fetched <= new_stripe_events, stream
        elif stream != "mixpanel.events":  # Mixpanel re-reads the current day by design
            # Records stamped in the future (bad on purpose) match every "changed since" filter.
            ahead = {i for i, (updated, _) in after.items() if updated > time.time() * 1000} - visible
            assert len(visible) <= fetched <= len(visible) + len(ahead), stream
    assert len(unchanged) <= 2, f"the tick changed too little for the test to prove anything: {unchanged}"
    assert_current_payloads_match_world(pipeline, world)
    assert_no_version_landed_twice(pipeline)


# Each stream exported by day: its world stream, and the id the world knows a landed event by.
DAY_STREAMS = {
    "raw.mixpanel_events": ("mixpanel.events", MIXPANEL_INSERT_ID),
    "raw.klaviyo_events": ("klaviyo.events", "r.record_id"),
}


def _events_by_day(world: Path, stream: str, first_day: date) -> dict[date, set[str]]:
    """The world's events its API serves today, by the partition (UTC day) that reads them: Mixpanel's export serves
    none dated ahead; Klaviyo's listing serves every one, its first day reading those before it and today those
    after."""
    served_until = time.time() if stream == "mixpanel.events" else float("inf")
    rows = WorldStore(world).connect().execute(
        "SELECT id, created FROM records WHERE stream = ? AND archived = 0 AND created <= ?", (stream, served_until)
    ).fetchall()
    today = datetime.now(UTC).date()
    days: dict[date, set[str]] = {}
    for record_id, created in rows:
        day = min(max(datetime.fromtimestamp(created, UTC).date(), first_day), today)
        days.setdefault(day, set()).add(record_id)
    return days


def _moved_on(table: str, cursor: dict[str, Any], asked: datetime, done: datetime) -> bool:
    """Whether a pull of every day, asked for at `asked` and done by `done`, left the cursor where the next pull
    without days resumes: the late window's first day (Mixpanel), or the pull's start less the look-back."""
    if table == "raw.mixpanel_events":
        return cursor == {"from_date": (asked.date() - timedelta(days=LATE_DAYS)).isoformat()}
    since = datetime.fromisoformat(cursor["changed_since"].replace("Z", "+00:00"))
    back = timedelta(seconds=lookback_seconds() + 1)  # the stamp is to the second
    return set(cursor) == {"changed_since"} and asked - back <= since <= done


@pytest.mark.parametrize("table", DAY_STREAMS)
def test_events_land_by_day_partition(pipeline: Pipeline, world: Path, table: str) -> None:
    """Events are partitioned by day: a run over some days (a backfill) or one day exports those days and marks
    them landed, leaving the cursor where it was; the nightly's every day lands the rest, each event once, and moves
    the cursor on as far as a pull through today may."""
    key, selection = AssetKey(table.split(".")), table.replace(".", "/")
    stream, world_id = DAY_STREAMS[table]
    days = days_of_streams()[key]
    by_day = _events_by_day(world, stream, days.start.date())
    today = datetime.now(UTC).date()
    inside = [day for day in by_day if days.start.date() < day < today]  # days read with both bounds closed
    busy = sorted(inside, key=lambda day: len(by_day[day]))[-3:]  # three days that have events, apart or not
    first, last = min(busy), max(busy)
    chosen = {day for day in by_day if first <= day <= last}
    single = max((day for day in inside if day not in chosen), key=lambda day: len(by_day[day]))
    landed_ids = f"SELECT {world_id} FROM {table} r"
    cursor_now = f"SELECT cursor FROM raw._stream_state WHERE stream = '{table}'"

    backfill = pipeline.run(selection=[selection], tags={
        ASSET_PARTITION_RANGE_START_TAG: first.isoformat(), ASSET_PARTITION_RANGE_END_TAG: last.isoformat()})
    assert backfill.success
    assert {row[0] for row in pipeline.query(landed_ids)} == set().union(*(by_day[day] for day in chosen))
    span = days.get_partition_keys_in_range(PartitionKeyRange(first.isoformat(), last.isoformat()))
    assert pipeline.instance.get_materialized_partitions(key) == set(span)
    assert pipeline.query(cursor_now) == [(None,)]

    one_day = pipeline.run(selection=[selection], tags={PARTITION_NAME_TAG: single.isoformat()})
    assert one_day.success
    assert {row[0] for row in pipeline.query(landed_ids)} == set().union(*(by_day[day] for day in {*chosen, single}))
    assert pipeline.instance.get_materialized_partitions(key) == {*span, single.isoformat()}

    for _ in range(2):  # a run the date turned during is asked for again: its last day was no longer today
        now = datetime.now(UTC)
        nightly = pipeline.run(selection=[selection], tags=days_tags({key: days}, now))
        done = datetime.now(UTC)
        if done.date() == now.date():
            break
    assert nightly.success and nightly.metadata[selection]["full_pull"]
    assert {row[0] for row in pipeline.query(landed_ids)} == set().union(*by_day.values())
    assert pipeline.instance.get_materialized_partitions(key) == set(days.get_partition_keys(current_time=now))
    [(cursor,)] = pipeline.query(cursor_now)
    assert _moved_on(table, json.loads(cursor), now, done)
    assert_no_version_landed_twice(pipeline, [table])


def test_killed_run_resumes_to_the_same_staging(world: Path, unsynced: Path, tmp_path: Path) -> None:
    clean = Pipeline("", unsynced / "warehouse.duckdb")  # the test world through one run that nothing stopped

    slow = with_config({"faults": {"default": {"latency_ms": 40}}})
    with SandboxServer(world, slow) as sandbox:
        killed = Pipeline(sandbox.url, tmp_path / "killed" / "warehouse.duckdb")
        command = [
            sys.executable,
            "-m",
            "cdp_assets.cli",
            "pipeline",
            "--sandbox-url",
            sandbox.url,
            "--data",
            str(killed.warehouse.parent),
        ]
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while sandbox.control("stats")["totals"]["requests"] < 25 and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        landed_before = sum(killed.query(f"SELECT count(*) FROM {t}")[0][0] for t in _existing_raw(killed))
        assert killed.run().success

    clean_total = sum(clean.query(f"SELECT count(*) FROM {t}")[0][0] for t in RAW_TABLES)
    assert 0 < landed_before < clean_total, "the kill did not land mid-extraction"
    assert staging_snapshot(killed) == staging_snapshot(clean)
    assert_no_version_landed_twice(killed)


def _existing_raw(pipeline: Pipeline) -> list[str]:
    return [
        f"raw.{name}"
        for (name,) in pipeline.query(
            "SELECT table_name FROM information_schema.tables"
            " WHERE table_schema = 'raw' AND NOT starts_with(table_name, '_')"
        )
    ]


def test_records_deleted_at_the_source_are_flagged(start: Callable[..., Env]) -> None:
    env = start(syncs=False)  # the test world after a first run
    sandbox, pipeline, world = env.sandbox, env.pipeline, env.world
    sandbox.control("tick", "POST", changes=30, count=3)
    assert pipeline.run().success  # hourly: sources that list deletions
    for stream in LISTS_DELETIONS:
        archived = {i for i, (_, gone) in world_records(world, stream).items() if gone}
        rows = staged(pipeline, stream)
        assert archived, f"the world deleted nothing in {stream}; the test proves nothing"
        assert {i for i in archived if i in rows} <= {i for i, deleted in rows.items() if deleted}, stream

    assert pipeline.run(full=True).success  # nightly: a full re-pull finds the silent deletions too
    for stream in LISTS_DELETIONS:
        archived = {i for i, (_, gone) in world_records(world, stream).items() if gone}
        rows = staged(pipeline, stream)
        seen_archived = {i for i in archived if i in rows}
        assert seen_archived, stream
        assert seen_archived <= {i for i, deleted in rows.items() if deleted}, stream
    assert_staging_matches_world(pipeline, world)


@pytest.mark.parametrize("source", ["stripe", "hubspot", "zendesk", "klaviyo", "mixpanel"])
def test_wrong_credentials_are_a_clear_configuration_error(sandbox: SandboxServer, source: str) -> None:
    import requests

    from resources import SOURCES
    from resources.http import ServiceConfigurationError

    probe = {
        "stripe": "/v1/customers",
        "hubspot": "/crm/v3/objects/contacts",
        "zendesk": "/api/v2/incremental/users/cursor.json?start_time=0",
        "klaviyo": "/api/profiles",
        "mixpanel": "/api/2.0/export?from_date=2024-01-01&to_date=2024-01-02&project_id=1",
    }[source]
    assert requests.get(sandbox.base_urls[source] + probe, headers={"revision": "2024-10-15"}).status_code == 401

    resource_cls = SOURCES[source]
    secrets = {
        name: "wrong" for name, field in resource_cls.model_fields.items() if field.is_required() and name != "base_url"
    }
    connector = resource_cls(base_url=sandbox.base_urls[source], **secrets)
    stream = next(iter(resource_cls.streams.values()))
    with pytest.raises(ServiceConfigurationError, match=resource_cls.credential_env):
        next(iter(connector.extract(stream, None, full=True)))


def test_refused_credentials_fail_the_source_check_with_the_variable_named(pipeline: Pipeline, monkeypatch) -> None:
    monkeypatch.setenv("STRIPE_API_KEY", "sk_test_wrong")  # a missing one fails at start
    outcome = pipeline.run(selection=["raw/stripe_customers"])
    assert outcome.metadata["raw/stripe_customers"]["source_status"] == "failed"  # the run goes on without it
    [evaluation] = [
        event.dagster_event.event_specific_data
        for event in pipeline.instance.all_logs(outcome.run_id, of_type=DagsterEventType.ASSET_CHECK_EVALUATION)
        if event.dagster_event.event_specific_data.check_name == "source_reachable"
    ]
    error = evaluation.metadata["error"].value
    assert not evaluation.passed and "STRIPE_API_KEY" in error and "401" in error, error


def test_hubspot_search_cap_loses_no_records(world: Path, tmp_path: Path) -> None:
    cap = 50
    with SandboxServer(world, with_config({"hubspot_search_cap": cap})) as sandbox:
        pipeline = Pipeline(sandbox.url, tmp_path / "warehouse.duckdb")
        assert pipeline.run(selection=["raw/hubspot_contacts"]).success
        before = world_records(world, "hubspot.contacts")
        sandbox.control("tick", "POST", changes=80, count=3)
        after = world_records(world, "hubspot.contacts")
        changed = {i for i, version in after.items() if before.get(i) != version and not version[1]}
        assert len(changed) > cap, "too few contacts changed to exceed the cap"
        outcome = pipeline.run(selection=["raw/hubspot_contacts"])
    assert outcome.success
    landed = {
        row[0]
        for row in pipeline.query(
            "SELECT record_id FROM raw.hubspot_contacts WHERE run_id = $run", {"run": outcome.run_id}
        )
    }
    assert changed <= landed


def test_hubspot_search_is_paced_under_its_own_limit(world: Path) -> None:
    """HubSpot allows 4 searches a second beside the account's 100 calls per 10 s: the connector paces both, so a
    burst of searches (an incremental pull after a sync wrote many contacts) draws no 429, while other routes are
    held only by the account's pace."""
    with SandboxServer(world, TEST_SANDBOX_CONFIG) as sandbox:
        hubspot = HubSpotResource(base_url=sandbox.base_urls["hubspot"], access_token=Credentials().hubspot.token)
        sandbox.control("stats", "DELETE")
        started = time.monotonic()
        for _ in range(9):
            hubspot.client.fetch_json("POST", "/crm/v3/objects/contacts/search", json={"limit": 1})
        searching = time.monotonic() - started
        for _ in range(9):
            hubspot.client.fetch_json("GET", "/crm/v3/objects/contacts", params={"limit": 1})
        listing = time.monotonic() - started - searching
        served = sandbox.control("stats")["services"]["hubspot"]
    assert served["requests"] == 18 and served["throttled_429"] == 0 and hubspot.stats.retries == 0
    limit = HubSpotResource.route_paces[r"/search$"]
    assert searching >= 2 * limit.seconds  # the 5th and the 9th search each waited for a window to pass
    assert listing < limit.seconds  # nine list calls fit the account's pace at once


def test_every_account_that_paces_itself_takes_a_plan_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """An account on a higher plan sets `<SERVICE>_REQUESTS_PER_WINDOW`; every connector with a pace of its own,
    source or destination, reads its account's (the benchmark's raised limits set it too). A source and a
    destination on one account declare one pace, so one setting gives both one limit."""
    kinds = [*SOURCES.items(), *((f"destination_{name}", kind) for name, kind in DESTINATIONS.items())]
    paced = {name: kind for name, kind in kinds if kind.pace is not None}
    for kind in paced.values():
        monkeypatch.setenv(pacing_variable(kind.service_name), str(kind.pace.max * 3))
    resources = build_resources()
    assert {"klaviyo", "hubspot", "destination_hubspot", "zendesk", "destination_zendesk"} <= paced.keys()
    assert {name: resources[name].rate_limit() for name in paced} == {
        name: RateLimit(kind.pace.max * 3, kind.pace.seconds) for name, kind in paced.items()}


def test_klaviyo_is_paced_under_its_burst_limit(world: Path) -> None:
    """Klaviyo allows 75 calls a second beside 750 a minute: eighty calls at once draw no 429, the burst's pacer
    holding the 72nd until a window has passed."""
    with SandboxServer(world, TEST_SANDBOX_CONFIG) as sandbox:
        klaviyo = KlaviyoResource(base_url=sandbox.base_urls["klaviyo"], api_key=Credentials().klaviyo.api_key)
        sandbox.control("stats", "DELETE")
        started = time.monotonic()
        for _ in range(80):
            klaviyo.client.fetch_json("GET", "/api/metrics")
        elapsed = time.monotonic() - started
        served = sandbox.control("stats")["services"]["klaviyo"]
    assert served["requests"] == 80 and served["throttled_429"] == 0 and klaviyo.stats.retries == 0
    assert elapsed >= KlaviyoResource.route_paces["^/"].seconds
    assert klaviyo.rate_limit() == RateLimit(745, 61)  # the steady limit's pace, under 750 a minute


@pytest.mark.parametrize(
    ("account", "searches"),
    [
        ({}, 4),  # the documented limits
        ({"requests_per_window": 950}, 40),  # ten times them, as `cdp bench --limit-scale 10` sets
        ({"requests_per_window": 95, "window_seconds": 5}, 8),  # the same calls in half the window
        ({"window_seconds": 5}, 8),  # the window alone
        ({"requests_per_window": 10}, 1),  # a lower plan, never under one call a window
    ],
)
def test_search_is_paced_at_the_accounts_rate(account: dict[str, float], searches: int) -> None:
    """A plan's account limit (`HUBSPOT_REQUESTS_PER_WINDOW`) moves search's own limit in proportion to its rate."""
    hubspot = HubSpotResource(base_url="http://hubspot.invalid", access_token="unused", **account)
    window = HubSpotResource.route_paces[r"/search$"].seconds
    assert hubspot.route_limits() == {r"/search$": RateLimit(searches, window)}


def test_a_call_held_by_the_accounts_limit_is_counted_by_its_routes_when_it_leaves() -> None:
    """With the account's window full, searches wait for it; each must count in search's window when it goes out,
    not when search let it pass, or the account's release sends more searches at once than search allows."""
    window = 0.2
    search, account = Pacer(RateLimit(4, window)), Pacer(RateLimit(8, window))
    for _ in range(8):
        pace([account])  # other calls fill the account's window
    sent = []
    for _ in range(5):
        pace([search, account])
        sent.append(time.monotonic())
    margin = 0.02  # the time between a slot being granted and its call noted here
    assert all(sum(at <= later < at + window - margin for later in sent) <= 4 for at in sent), sent

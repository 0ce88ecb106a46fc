"""One source down for a whole hourly run: the others reach profiles, views and destinations in that run, the
failure reaches the alerts table, and the first run after the source recovers catches up, nothing lost or twice.

Klaviyo is the source taken down: it is read only, so the syncs' destinations (HubSpot and Zendesk among them)
stay up. The sandbox answers every Klaviyo request with 503 (`faults.klaviyo.outage`). A source that answers with a
page its connector cannot page past is told apart from one that is down: it is a bug of the source's to report.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pytest
from dagster import DagsterEventType

from cdp_assets import raw_checks
from resources.http import ServiceError, UnpageableAnswer
from resources.stripe import StripeResource
from sandbox.store import ANOMALIES_FILE
from tests.conftest import Env, Pipeline, RunOutcome, stand_in, world_records
from tests.test_alerts import sense_failed_checks

DOWN = "klaviyo"
DOWN_STREAMS = ("profiles", "events", "metrics")


def checks(pipeline: Pipeline, outcome: RunOutcome) -> dict[tuple[str, str], Any]:
    """(asset, check) -> its evaluation in the run."""
    found = {}
    for record in pipeline.instance.all_logs(outcome.run_id, of_type=DagsterEventType.ASSET_CHECK_EVALUATION):
        evaluation = record.dagster_event.event_specific_data
        found[(evaluation.asset_key.to_user_string(), evaluation.check_name)] = evaluation
    return found


def raise_alerts(pipeline: Pipeline, outcome: RunOutcome, table: Path) -> list[dict[str, Any]]:
    """Evaluate the check-failure sensor for the run, as the daemon would, and read the alerts table."""
    sense_failed_checks(pipeline, outcome)
    if not table.exists():
        return []
    with duckdb.connect(str(table), read_only=True) as conn:
        cursor = conn.execute("SELECT * FROM alerts WHERE run_id = $run", {"run": outcome.run_id})
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def changed(before: dict[str, tuple[int, bool]], after: dict[str, tuple[int, bool]]) -> set[str]:
    """Ids of live records that a tick created or changed."""
    return {i for i, version in after.items() if before.get(i) != version and not version[1]}


def anomalies(world: Path) -> set[tuple[str, str]]:
    """(stream, record id) of the world's records that are bad on purpose: quarantine, not staging, holds them."""
    with (world / ANOMALIES_FILE).open(newline="") as f:
        return {(row["stream"], row["record_id"]) for row in csv.DictReader(f)}


def landed(pipeline: Pipeline, table: str, outcome: RunOutcome) -> set[str]:
    rows = pipeline.query(f"SELECT record_id FROM {table} WHERE run_id = $run", {"run": outcome.run_id})
    return {row[0] for row in rows}


def test_a_source_down_for_a_whole_run_holds_back_nothing_else_and_the_next_run_catches_up(
    start: Callable[..., Env], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    alerts_table = tmp_path / "alerts.duckdb"
    monkeypatch.setenv("CDP_ALERTS_DB", str(alerts_table))
    monkeypatch.delenv("CDP_ALERT_WEBHOOK_URL", raising=False)
    env = start()
    # Few retries for the source taken down, so its pulls give up in a second rather than after minutes of backoff.
    pipeline = Pipeline(env.sandbox.url, env.pipeline.warehouse, syncs=True, resource_fields={DOWN: {"max_retries": 2}})
    # An hourly run: pulls, every layer, the syncs; with the nightly comparisons too, so that the alerts judge the
    # graph the outage and the catch-up leave against one rebuilt from scratch.
    first = pipeline.run(nightly_checks=True)
    assert first.success
    assert raise_alerts(pipeline, first, alerts_table) == []

    streams = ("hubspot.contacts", "stripe.customers", *(f"{DOWN}.{s}" for s in DOWN_STREAMS))
    before = {stream: world_records(env.world, stream) for stream in streams}
    env.sandbox.control("tick", "POST", changes=40)
    moved = {stream: changed(before[stream], world_records(env.world, stream)) for stream in streams}
    new_contacts = set(world_records(env.world, "hubspot.contacts")) - set(before["hubspot.contacts"])
    assert new_contacts and moved["stripe.customers"] and moved[f"{DOWN}.profiles"], moved

    env.sandbox.control("config", "PATCH", {"faults": {DOWN: {"outage": True}}})
    down = pipeline.run(nightly_checks=True)
    assert down.success  # the failed source did not stop the run
    evaluations = checks(pipeline, down)
    read_keys = {key for key, value in down.metadata["raw/hubspot_contacts"].items() if isinstance(value, int | float)}
    assert {"rows_fetched", "rows_new", "pages", "suppressed", "duplicates_in_pages", "seconds"} <= read_keys
    for stream in DOWN_STREAMS:
        meta = down.metadata[f"raw/{DOWN}_{stream}"]
        assert (meta["source_status"], meta["rows_new"]) == ("failed", 0), meta
        assert read_keys <= meta.keys(), f"a failed pull leaves gaps in the plots of {sorted(read_keys - meta.keys())}"
        assert "503" in meta["error"], meta
        reachable = evaluations[(f"raw/{DOWN}_{stream}", "source_reachable")]
        assert not reachable.passed and reachable.severity.value == "ERROR"
        assert "503" in reachable.metadata["error"].value and reachable.metadata["failure"].value == "unreachable"
    assert evaluations[("raw/hubspot_contacts", "source_reachable")].passed
    assert down.metadata["raw/hubspot_contacts"]["source_status"] == "read"
    assert "staging/klaviyo__profiles" in down.metadata  # rebuilt on Klaviyo's last good raw

    # The other sources' changes went all the way in that run.
    assert moved["hubspot.contacts"] <= landed(pipeline, "raw.hubspot_contacts", down)
    assert moved["stripe.customers"] <= landed(pipeline, "raw.stripe_customers", down)
    profiles = dict(pipeline.query(
        "SELECT record_id, profile_id FROM identity.record_profiles rp JOIN identity.person_profiles USING (profile_id)"
        " WHERE stream = 'hubspot.contacts'"
    ))  # fmt: skip
    assert new_contacts <= set(profiles), "new CRM contacts have no profile"
    in_view = dict(pipeline.query(
        "SELECT crm_contact_id, profile_id FROM views.customer_360 WHERE crm_contact_id IN $ids",
        {"ids": sorted(new_contacts)},
    ))  # fmt: skip
    assert in_view and all(profiles[contact] == profile for contact, profile in in_view.items())
    synced = dict(pipeline.query(
        "SELECT s.destination_id, s.run_id FROM sync.state s WHERE s.sync = 'hubspot_contacts'"
        " AND s.destination_id IN $ids", {"ids": sorted(new_contacts)},
    ))  # fmt: skip
    assert synced and set(synced.values()) == {down.run_id}, "no new contact was synced in the outage run"
    contacts = {c["id"]: c["properties"] for found in env.contacts().values() for c in found}
    assert all(contacts[contact].get("cdp_profile_id") == in_view[contact] for contact in synced)

    [alert] = raise_alerts(pipeline, down, alerts_table)
    assert alert["kind"] == "checks_failed"
    assert f"raw/{DOWN}_profiles:source_reachable (error)" in alert["failed_checks"]
    assert f"Sources not read (the run used their last good data): {DOWN} (" in alert["summary"]

    # The source comes back: the next run lands what changed while it was down, and sends nothing twice.
    env.sandbox.control("config", "PATCH", {"faults": {DOWN: None}})
    back = pipeline.run(nightly_checks=True)
    assert back.success and raise_alerts(pipeline, back, alerts_table) == []
    assert moved[f"{DOWN}.events"], "the tick changed no Klaviyo event: the catch-up would prove nothing"
    assert moved[f"{DOWN}.profiles"] <= landed(pipeline, f"raw.{DOWN}_profiles", back)
    assert moved[f"{DOWN}.events"] <= landed(pipeline, f"raw.{DOWN}_events", back)
    # ... and takes them through every layer in that run: identity, profiles and the views.
    odd = anomalies(env.world)
    people = {rid for rid in moved[f"{DOWN}.profiles"] if (f"{DOWN}.profiles", rid) not in odd}
    linked = dict(pipeline.query(
        "SELECT record_id, profile_id FROM identity.record_profiles JOIN identity.person_profiles USING (profile_id)"
        " WHERE stream = $stream", {"stream": f"{DOWN}.profiles"},
    ))  # fmt: skip
    assert people and people <= set(linked), f"caught-up profiles without a profile: {sorted(people - set(linked))[:3]}"
    in_view = {row[0] for row in pipeline.query("SELECT profile_id FROM views.customer_360")}
    assert {linked[rid] for rid in people} <= in_view
    events = dict(pipeline.query(
        "SELECT event_id, profile_id FROM staging.klaviyo__events WHERE event_id IN $ids",
        {"ids": sorted(moved[f"{DOWN}.events"])},
    ))  # fmt: skip
    of_people = {event for event, person in events.items() if person in linked}
    timeline = {row[0] for row in pipeline.query(
        "SELECT record_id FROM views.customer_timeline WHERE stream = $stream", {"stream": f"{DOWN}.events"},
    )}  # fmt: skip
    assert of_people and of_people <= timeline, f"caught-up events not in the timeline: {sorted(of_people - timeline)}"
    for stream in DOWN_STREAMS:
        assert back.metadata[f"raw/{DOWN}_{stream}"]["source_status"] == "read"
        twice = pipeline.query(
            f"SELECT record_id FROM raw.{DOWN}_{stream} GROUP BY record_id, payload_hash, version_at, deleted"
            " HAVING count(*) > 1"
        )
        assert twice == [], f"{stream}: versions landed twice"
    # What the outage run sent is not sent again. (Between other runs a key may be: `tracks` sends a row again
    # onto the contact that took an archived one's place.)
    resent = pipeline.query("""
        SELECT sync, key FROM (
            SELECT sync, key, run_id, operation || payload::VARCHAR AS sent,
                   lag(operation || payload::VARCHAR) OVER (PARTITION BY sync, key ORDER BY delivered_at) AS previous
            FROM sync.deliveries
        ) WHERE run_id = $run AND sent = previous
    """, {"run": back.run_id})  # fmt: skip
    assert resent == [], f"sent twice: {resent[:5]}"


@pytest.fixture
def idless() -> Iterator[str]:
    """A Stripe whose lists answer with a page of objects without an id, and say there is more."""
    with stand_in(lambda method, body: (200, {"object": "list", "data": [{"object": "customer"}], "has_more": True})
                  ) as url:  # fmt: skip
        yield url


def test_a_page_that_cannot_be_paged_past_is_reported_as_a_source_bug_not_an_outage(idless: str) -> None:
    stripe = StripeResource(base_url=idless, api_key="sk_test_idless", max_retries=0)
    with pytest.raises(UnpageableAnswer) as raised:
        list(stripe.extract(stripe.streams["customers"], None, full=True))
    reachable, _ = raw_checks.check_results("stripe", raised.value, None, datetime.now(UTC))
    assert not reachable.passed and reachable.metadata["failure"].value == "unpageable answer"
    assert "bug of the source's" in (reachable.description or "") and "cannot page" in reachable.metadata["error"].value


def test_a_call_the_source_refuses_is_reported_as_refused_not_as_an_outage() -> None:
    """A 4xx (here a 404 on the list) is no outage: asking again answers the same, and the check says so."""
    with stand_in(lambda method, body: (404, {"error": {"message": "No such endpoint"}})) as url:
        stripe = StripeResource(base_url=url, api_key="sk_test_gone", max_retries=2)
        with pytest.raises(ServiceError) as raised:
            list(stripe.extract(stripe.streams["customers"], None, full=True))
    assert stripe.stats.retries == 0  # a refusal is not retried
    reachable, _ = raw_checks.check_results("stripe", raised.value, None, datetime.now(UTC))
    assert not reachable.passed and reachable.metadata["failure"].value == "call refused"
    assert "No such endpoint" in reachable.metadata["error"].value

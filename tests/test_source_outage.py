"""One source down for a whole hourly run: the others reach profiles, views and destinations in that run, the
failure reaches the alerts table, and the first run after the source recovers catches up, nothing lost or twice.

Klaviyo is the source taken down: it is read only, so the syncs' destinations (HubSpot and Zendesk among them)
stay up. The sandbox answers every Klaviyo request with 503 (`faults.klaviyo.outage`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
import pytest
from dagster import DagsterEventType

from tests.conftest import Env, Pipeline, RunOutcome, world_records
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
    first = pipeline.run()  # an hourly run: pulls, every layer, the syncs
    assert first.success
    assert raise_alerts(pipeline, first, alerts_table) == []

    streams = ("hubspot.contacts", "stripe.customers", *(f"{DOWN}.{s}" for s in DOWN_STREAMS))
    before = {stream: world_records(env.world, stream) for stream in streams}
    env.sandbox.control("tick", "POST", changes=40)
    moved = {stream: changed(before[stream], world_records(env.world, stream)) for stream in streams}
    new_contacts = set(world_records(env.world, "hubspot.contacts")) - set(before["hubspot.contacts"])
    assert new_contacts and moved["stripe.customers"] and moved[f"{DOWN}.profiles"], moved

    env.sandbox.control("config", "PATCH", {"faults": {DOWN: {"outage": True}}})
    down = pipeline.run()
    assert down.success  # the failed source did not stop the run
    evaluations = checks(pipeline, down)
    for stream in DOWN_STREAMS:
        meta = down.metadata[f"raw/{DOWN}_{stream}"]
        assert (meta["source_status"], meta["rows_new"]) == ("failed", 0), meta
        assert "503" in meta["error"], meta
        reachable = evaluations[(f"raw/{DOWN}_{stream}", "source_reachable")]
        assert not reachable.passed and reachable.severity.value == "ERROR"
        assert "503" in reachable.metadata["error"].value
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
    back = pipeline.run()
    assert back.success and raise_alerts(pipeline, back, alerts_table) == []
    assert moved[f"{DOWN}.profiles"] <= landed(pipeline, f"raw.{DOWN}_profiles", back)
    assert moved[f"{DOWN}.events"] <= landed(pipeline, f"raw.{DOWN}_events", back)
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

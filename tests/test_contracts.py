"""Data contracts end to end: bad input from the sandbox over HTTP ends in quarantine with its reason."""

from __future__ import annotations

import json
import time
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import duckdb
import pytest
from dagster import AssetKey, DagsterInstance, asset, materialize

from cdp_assets import contracts
from cdp_assets.definitions import defs
from cdp_assets.mappings import KINDS
from resources import build_resources
from sandbox.runner import SandboxServer
from sandbox.store import Record, WorldStore
from tests.conftest import Pipeline, world_records
from tests.test_hostile_records import quarantined
from tests.test_ingestion import assert_staging_matches_world, with_config

# The check each kind of bad record must fail, by stream (from sandbox/corpus.py).
EXPECTED_CHECK = {
    "wrong_type": "json_kinds_as_promised",
    "nested_object": "json_kinds_as_promised",
    "invalid_email": "email_syntax",
    "negative_amount": "greater_than_or_equal_to(0)",
    "unknown_enum": "one_of",
    "oversized_string": "str_length",
}
QUARANTINE = {
    "stripe.customers": "stripe__customers", "stripe.subscriptions": "stripe__subscriptions",
    "stripe.invoices": "stripe__invoices", "hubspot.contacts": "hubspot__contacts", "zendesk.users": "zendesk__users",
    "zendesk.tickets": "zendesk__tickets", "klaviyo.profiles": "klaviyo__profiles", "klaviyo.events": "klaviyo__events",
    "mixpanel.events": "mixpanel__events",
}  # fmt: skip


def quarantined_checks(pipeline: Pipeline, entity: str, record_id: str) -> set[str]:
    rows = pipeline.query(f"SELECT failed_checks FROM quarantine.{entity} WHERE record_id = $id", {"id": record_id})
    return {reason["check"] for (checks,) in rows for reason in json.loads(checks)}


@pytest.fixture
def corpus_run(world: Path, tmp_path: Path) -> dict[str, Any]:
    """A first run over a world holding the bad-input corpus, with duplicates and truncated pages served."""
    config = with_config(
        {"faults": {"default": {"truncate_rate": 0.15}}, "duplicates": {"stripe": True, "zendesk": True}}
    )
    with SandboxServer(world, config) as sandbox:
        corpus = sandbox.control("corpus", "POST")
        pipeline = Pipeline(sandbox.url, tmp_path / "warehouse.duckdb")
        outcome = pipeline.run()
        stats = sandbox.control("stats")
    return {"corpus": corpus, "pipeline": pipeline, "outcome": outcome, "stats": stats, "world": world}


def test_each_bad_input_ends_as_described(corpus_run: dict[str, Any]) -> None:
    pipeline, corpus = corpus_run["pipeline"], corpus_run["corpus"]
    assert corpus_run["outcome"].success
    assert corpus_run["stats"]["totals"]["truncated"] > 0  # broken pages were served, retried, and the run completed

    for kind, check in EXPECTED_CHECK.items():
        for case in corpus[kind]:
            found = quarantined_checks(pipeline, QUARANTINE[case["stream"]], case["id"])
            assert any(name.startswith(check) for name in found), (kind, case, found)
    for case in corpus["null_required"]:
        found = quarantined_checks(pipeline, QUARANTINE[case["stream"]], case["id"])
        assert found & {"not_nullable", "has_an_identifier"}, (case, found)
    for case in corpus["future_timestamp"]:
        if case["stream"] == "mixpanel.events":  # exported only once its day comes
            continue
        found = quarantined_checks(pipeline, QUARANTINE[case["stream"]], case["id"])
        assert "not_in_future" in found, (case, found)
    # Every case gets the reason the corpus states for it, on a first (full) pull too.
    served = {stream: world_records(corpus_run["world"], stream) for stream in QUARANTINE}
    held = {stream: quarantined(pipeline, stream) for stream in QUARANTINE}
    for case in (case for items in corpus.values() for case in items if case["reason"]):
        if case["id"] in served[case["stream"]]:
            reasons = held[case["stream"]].get(case["id"], [])
            assert any(case["reason"] in reason for reason in reasons), (case, reasons)

    # Valid if unusual text passes through verbatim, and SQL-looking text stays text.
    [(name,)] = pipeline.query("SELECT name FROM staging.stripe__customers WHERE customer_id = 'cus_corpus00000005'")
    assert name == "Zoë 🚀 Ñandú 李小龙"
    [(last_name,)] = pipeline.query("SELECT last_name FROM staging.hubspot__contacts WHERE contact_id = '9000000003'")
    assert last_name == "Robert'); DROP TABLE staging.hubspot__contacts;--"
    [(subject,)] = pipeline.query("SELECT subject FROM staging.zendesk__tickets WHERE ticket_id = '9900000000005'")
    assert subject == "<script>alert(1)</script>"
    # A record served twice in a page and again on the next page is one record, one version, and is counted.
    landed = corpus_run["outcome"].metadata
    assert landed["raw/stripe_customers"]["duplicates_in_pages"] >= 1
    assert landed["raw/zendesk_users"]["duplicates_in_pages"] >= 1
    for table, column, record_id in (("stripe_customers", "customer_id", "cus_corpus00000001"),
                                     ("zendesk_users", "user_id", "9900000000001")):  # fmt: skip
        assert pipeline.query(f"SELECT count(*) FROM raw.{table} WHERE record_id = $id", {"id": record_id}) == [(1,)]
        staged = pipeline.query(
            f"SELECT count(*) FROM staging.{table.replace('_', '__', 1)} WHERE {column} = $id", {"id": record_id}
        )
        assert staged == [(1,)]
    assert_staging_matches_world(pipeline, corpus_run["world"])  # nothing else was lost


def test_rows_in_are_rows_passed_plus_rows_quarantined(sandbox: SandboxServer, pipeline: Pipeline) -> None:
    sandbox.control("corpus", "POST")
    runs = [pipeline.run()]
    sandbox.control("tick", "POST", changes=10)
    runs.append(pipeline.run())
    for outcome in runs:
        staging = {k: m for k, m in outcome.metadata.items() if k.startswith("staging/")}
        assert len(staging) == 12
        for key, meta in staging.items():
            assert meta["rows_in"] == meta["rows_passed"] + meta["rows_quarantined"], key
    for key, meta in runs[-1].metadata.items():
        if key.startswith("staging/"):
            entity = key.removeprefix("staging/")
            [(passed,)] = pipeline.query(f"SELECT count(*) FROM staging.{entity}")
            [(held,)] = pipeline.query(f"SELECT count(*) FROM quarantine.{entity}")
            assert (passed, held) == (meta["rows_passed"], meta["rows_quarantined"]), key
    history = pipeline.query(
        "SELECT count(*), count(DISTINCT run_id), count(*) FILTER (WHERE rows_in <> rows_passed + rows_quarantined)"
        " FROM quarantine.quality_history"
    )
    assert history == [(24, 2, 0)]
    scorecard = runs[-1].metadata["quarantine/quality_scorecard"]
    assert scorecard["entities"] == 12 and 0 < scorecard["worst_quarantine_rate"] < 1


def test_a_contract_fix_replays_history_out_of_quarantine(
    sandbox: SandboxServer, pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    sandbox.control("corpus", "POST")
    assert pipeline.run().success
    paused = "sub_corpus000000000000000001"
    assert "one_of(allowed=SUBSCRIPTION_STATUSES)" in quarantined_checks(pipeline, "stripe__subscriptions", paused)

    # The fix: "paused_forever" is a status this account really uses. No re-pull, only staging again.
    monkeypatch.setattr(contracts, "SUBSCRIPTION_STATUSES", (*contracts.SUBSCRIPTION_STATUSES, "paused_forever"))
    outcome = pipeline.run(selection=["staging/stripe__subscriptions"])
    assert outcome.success
    assert outcome.metadata["staging/stripe__subscriptions"]["mode"] == "full: the contract or mapping changed"
    assert pipeline.query(
        "SELECT status FROM staging.stripe__subscriptions WHERE subscription_id = $id", {"id": paused}
    ) == [("paused_forever",)]
    assert quarantined_checks(pipeline, "stripe__subscriptions", paused) == set()


def test_a_blocking_check_stops_downstream_assets(
    sandbox: SandboxServer, pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert pipeline.run(selection=["raw/zendesk_users"]).success
    ran: list[str] = []

    @asset(deps=[AssetKey(["staging", "zendesk__users"])])
    def identity_stand_in() -> None:
        ran.append("identity")

    monkeypatch.setattr(contracts, "ZENDESK_ROLES", ("agent",))  # a broken contract: every end user now fails
    staging_users = defs.get_assets_def(AssetKey(["staging", "zendesk__users"]))
    result = materialize(
        [staging_users, identity_stand_in], resources=build_resources(), instance=DagsterInstance.ephemeral(),
        raise_on_error=False,
    )  # fmt: skip
    evaluations = result.get_asset_check_evaluations()
    rate = next(e for e in evaluations if e.check_name == "quarantine_rate")
    assert not rate.passed and rate.metadata["quarantine_rate"].value > 0.05
    assert ran == [], "an asset downstream of collapsed data ran"


def test_schema_drift_is_reported_and_broken_rows_are_quarantined(
    sandbox: SandboxServer, pipeline: Pipeline, world: Path
) -> None:
    assert pipeline.run(selection=["raw/zendesk_users", "staging/zendesk__users"]).success
    store = WorldStore(world)
    users = [record for record in store.scan("zendesk.users") if not record.archived][:3]
    now_ms = int(time.time() * 1000)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now_ms / 1000))
    drifted = {**users[0].payload, "loyalty_tier": "gold", "updated_at": stamp}  # a field the API just added
    vanished = {k: v for k, v in users[1].payload.items() if k != "created_at"} | {"updated_at": stamp}
    retyped = {**users[2].payload, "suspended": "no", "updated_at": stamp}
    store.upsert(
        Record("zendesk.users", user.id, user.created, now_ms, payload)
        for user, payload in zip(users, (drifted, vanished, retyped), strict=True)
    )
    outcome = pipeline.run(selection=["raw/zendesk_users", "staging/zendesk__users"])

    assert outcome.success
    assert "loyalty_tier" in outcome.metadata["staging/zendesk__users"]["new_fields"]
    [(kept,)] = pipeline.query(
        "SELECT arg_max(payload->>'loyalty_tier', landing_id) FROM raw.zendesk_users WHERE record_id = $id",
        {"id": users[0].id},
    )
    assert kept == "gold"
    assert pipeline.query("SELECT count(*) FROM staging.zendesk__users WHERE user_id = $id", {"id": users[0].id}) == [
        (1,)
    ]
    assert "not_nullable" in quarantined_checks(pipeline, "zendesk__users", users[1].id)
    assert "json_kinds_as_promised" in quarantined_checks(pipeline, "zendesk__users", users[2].id)


# A date of birth as people type it: read, or NULL when it cannot be (never a fault that would lose the person).
BIRTH_DATES = {"1990-02-28": date(1990, 2, 28), "1990-02-30": None, "28/02/1990": None, "1850-01-01": None,
               "2990-01-01": None, "": None, 19900228: None, None: None}  # fmt: skip


def test_person_fields_are_staged_and_an_unreadable_date_of_birth_is_null(
    sandbox: SandboxServer, pipeline: Pipeline, world: Path
) -> None:
    store = WorldStore(world)
    contacts = [record for record in store.scan("hubspot.contacts") if not record.archived][: len(BIRTH_DATES)]
    profile = next(record for record in store.scan("klaviyo.profiles") if not record.archived)
    store.upsert(
        Record("hubspot.contacts", contact.id, contact.created, contact.updated, {
            **contact.payload,
            "properties": {**contact.payload["properties"], "address": f"{n} Main Street", "zip": f"0{n}123",
                           "date_of_birth": typed},
        })
        for n, (contact, typed) in enumerate(zip(contacts, BIRTH_DATES, strict=True))
    )  # fmt: skip
    location = {**profile.payload["attributes"]["location"], "address1": "1 Rue de la Paix", "zip": "75002"}
    attributes = {**profile.payload["attributes"], "location": location}
    store.upsert([Record("klaviyo.profiles", profile.id, profile.created, profile.updated,
                         {**profile.payload, "attributes": attributes})])  # fmt: skip
    assert pipeline.run(selection=["raw/hubspot_contacts", "staging/hubspot__contacts", "raw/klaviyo_profiles",
                                   "staging/klaviyo__profiles"]).success  # fmt: skip

    staged = {row[0]: row[1:] for row in pipeline.query(
        "SELECT contact_id, street_address, postal_code, date_of_birth FROM staging.hubspot__contacts"
        " WHERE list_contains($ids, contact_id)", {"ids": [c.id for c in contacts]})}  # fmt: skip
    assert staged == {contact.id: (f"{n} Main Street", f"0{n}123", read)
                      for n, (contact, read) in enumerate(zip(contacts, BIRTH_DATES.values(), strict=True))}
    assert pipeline.query(
        "SELECT street_address, postal_code FROM staging.klaviyo__profiles WHERE profile_id = $id", {"id": profile.id}
    ) == [("1 Rue de la Paix", "75002")]


@pytest.mark.parametrize("session_zone", ["UTC", "America/Los_Angeles", "Pacific/Kiritimati"])
def test_a_date_of_birth_is_judged_by_the_utc_day_its_record_was_fetched(session_zone: str) -> None:
    """Every build types the same raw alike (a replay compares them): a date of birth up to the UTC day the record
    was fetched is read, a later one is NULL, whatever the build's clock or its session's time zone."""
    birth_date = KINDS["birth_date"].cast.format(j="j")
    fetched = datetime(2026, 3, 1, 3, 0, tzinfo=UTC)  # 1 March in UTC, still 28 February in Los Angeles
    with duckdb.connect() as conn:
        conn.execute(f"SET TimeZone = '{session_zone}'")
        read = conn.execute(
            f"SELECT {birth_date} FROM (VALUES (to_json('2026-03-01'::VARCHAR), $at),"
            f" (to_json('2026-03-02'::VARCHAR), $at)) AS t(j, extracted_at)",
            {"at": fetched},
        ).fetchall()
    assert read == [(date(2026, 3, 1),), (None,)]

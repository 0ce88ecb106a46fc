"""Reverse-ETL end to end: views synced to the sandbox's HubSpot, Zendesk, Braze and Meta over HTTP, through Dagster.

What a destination holds is read from the sandbox itself (its world file, or its control routes), and compared
with what the warehouse says was acknowledged (`sync.state`), which a dry run then shows equal to the views.
"""

from __future__ import annotations

import copy
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
import pytest
import yaml
from dagster import AssetCheckKey, AssetKey, AssetSelection

from cdp_assets import changes, stack
from cdp_assets.identity import resolution
from cdp_assets.sync.specs import load as load_syncs
from cdp_assets.sync.specs import parse
from cdp_assets.views import following
from resources.destinations.meta import email_hash, phone_hash
from sandbox.clock import zendesk_time
from sandbox.store import Record, WorldStore
from tests.conftest import UPSTREAM, Env, RunOutcome

SYNCS = tuple(load_syncs().syncs)
DESTINATION_SERVICES = ("hubspot", "zendesk", "braze", "meta")
ROOT = Path(__file__).resolve().parents[1]
SYNCS_FILE = ROOT / "cdp_assets" / "sync" / "syncs.yaml"


def sent(outcome: RunOutcome, sync: str) -> dict[str, Any]:
    return outcome.metadata[f"sync/{sync}"]


def assert_nothing_left_to_send(env: Env) -> None:
    """A dry run of every sync, planned from every row of its view, finds the destination acknowledged exactly what
    the views hold."""
    plans = env.sync(dry_run=True, full_refresh=True)
    for name in SYNCS:
        meta = sent(plans, name)
        assert (meta["added"], meta["changed"], meta["removed"], meta["requests"]) == (0, 0, 0, 0), (name, meta)


def assert_upsert_destination_holds(held: set[str], state: set[str], delivered: set[str]) -> None:
    """An upsert destination holds every acknowledged key; beyond them, only keys that were sent once and have
    left the view since (upsert mode leaves them where they are)."""
    assert state <= held, sorted(state - held)[:5]
    assert held - state <= delivered - state, sorted(held - delivered)[:5]


def delivered(env: Env, sync: str) -> set[str]:
    return {k for (k,) in env.pipeline.query("SELECT DISTINCT key FROM sync.deliveries WHERE sync = $s", {"s": sync})}


def assert_destinations_hold_the_state(env: Env) -> None:
    """Each destination holds what sync.state says it acknowledged: every key once, with those values."""
    cdp_contacts = {email: [c for c in found if "cdp_profile_id" in c["properties"]]
                    for email, found in env.contacts().items()}  # fmt: skip
    state = env.state("hubspot_contacts")
    held = {email for email, found in cdp_contacts.items() if found}
    assert_upsert_destination_holds(held, set(state), delivered(env, "hubspot_contacts"))
    ids = dict(env.pipeline.query("SELECT key, destination_id FROM sync.state WHERE sync = 'hubspot_contacts'"))
    for email, values in state.items():
        # The contact HubSpot acknowledged holds the values. A duplicate contact with the same address (a list
        # import's) keeps what it was sent while it was the one the address led to.
        [contact] = [c for c in cdp_contacts[email] if c["id"] == ids[email]]
        # HubSpot keeps every property value as text, and a null as an empty one.
        expected = {k: "" if v is None else str(v) for k, v in values.items()}
        assert {k: contact["properties"][k] for k in values} == expected, email

    cdp_users = {email: [u for u in found if "cdp_profile_id" in (u.get("user_fields") or {})]
                 for email, found in env.users().items()}  # fmt: skip
    state = env.state("zendesk_users")
    held = {email for email, found in cdp_users.items() if found}
    assert_upsert_destination_holds(held, set(state), delivered(env, "zendesk_users"))
    ids = dict(env.pipeline.query("SELECT key, destination_id FROM sync.state WHERE sync = 'zendesk_users'"))
    for email, values in state.items():
        [user] = [u for u in cdp_users[email] if str(u["id"]) == ids[email]]
        assert {f"user_fields.{k}": v for k, v in user["user_fields"].items()} == values, email

    braze = env.sandbox.control("destinations/braze")
    state = env.state("braze_users")
    subscribed = {key for key, attributes in braze.items() if attributes.get("email_subscribe") == "opted_in"}
    assert subscribed == set(state)
    for key, values in state.items():  # opted in when they entered; null attributes are not kept
        assert braze[key] == {**{k: v for k, v in values.items() if v is not None}, "email_subscribe": "opted_in"}

    audiences = env.sandbox.control("destinations/meta")
    for name in ("meta_retargeting", "meta_high_value"):
        audience_id = os.environ[load_syncs().syncs[name].options_env["audience_id"]]
        expected = {(email_hash(v["email"]), phone_hash(v["phone"])) for v in env.state(name).values()}
        assert {tuple(member) for member in audiences.get(audience_id, [])} == expected, name


def assert_in_step(env: Env) -> None:
    assert_nothing_left_to_send(env)
    assert_destinations_hold_the_state(env)


def test_a_second_run_sends_nothing_and_hubspot_does_not_ping_pong_with_its_pull(start: Callable[..., Env]) -> None:
    env = start()
    contacts_before = sum(len(found) for found in env.contacts().values())
    users_before = sum(len(found) for found in env.users().values())

    first = env.pipeline.run()  # an hourly run: pulls, every layer, then the syncs
    assert first.success
    for name in SYNCS:
        meta = sent(first, name)
        assert meta["added"] == meta["acknowledged"] == meta["rows"] > 0, (name, meta)
        assert meta["rejected"] == meta["invalid"] == 0, (name, meta)
    # A key identity judged shared (a team's mailbox) names no one of its holders: such rows are left out with the
    # reason, never sent, and a profile with an address of its own is keyed by that one (survivorship).
    for name in ("hubspot_contacts", "zendesk_users"):
        left_out = env.pipeline.query(
            "SELECT l.key, l.reason, s.reason FROM sync.left_out_rows l LEFT JOIN identity.shared_values s"
            " ON s.id_type = 'email' AND s.value = l.key WHERE l.run_id = $r AND l.sync = $s",
            {"r": first.run_id, "s": name},
        )
        assert len(left_out) == sent(first, name)["left_out"]
        assert all(reason == f"key shared by several people ({why})" for _, reason, why in left_out), left_out
        shared = "SELECT value FROM identity.shared_values WHERE id_type = 'email'"
        assert env.pipeline.query(f"SELECT count(*) FROM sync.state WHERE sync = $s AND key IN ({shared})",
                                  {"s": name}) == [(0,)]  # fmt: skip
    assert sent(first, "zendesk_users")["left_out"] > 0  # keyed by the user's own address: the world's team mailboxes
    assert_in_step(env)

    again = env.sync()  # unchanged data
    assert all(sent(again, name)["requests"] == sent(again, name)["acknowledged"] == 0 for name in SYNCS)

    # The next pull brings back every contact and user the syncs wrote (HubSpot and Zendesk moved their change
    # times), and what comes back changes nothing the syncs send; the pull after that has nothing new.
    echo = env.pipeline.run()
    assert echo.success
    assert echo.metadata["raw/hubspot_contacts"]["rows_new"] == sent(first, "hubspot_contacts")["acknowledged"]
    assert echo.metadata["raw/zendesk_users"]["rows_new"] == sent(first, "zendesk_users")["acknowledged"]
    quiet = env.pipeline.run()
    assert quiet.success
    assert quiet.metadata["raw/hubspot_contacts"]["rows_new"] == quiet.metadata["raw/zendesk_users"]["rows_new"] == 0
    for outcome in (echo, quiet):
        for name in SYNCS:
            meta = sent(outcome, name)
            assert (meta["added"], meta["changed"], meta["removed"], meta["requests"]) == (0, 0, 0, 0), (name, meta)
    # Nothing was created: the syncs wrote onto records the tools had, each the one identity put the person in.
    assert sum(len(found) for found in env.contacts().values()) == contacts_before
    assert sum(len(found) for found in env.users().values()) == users_before
    owners = dict(env.pipeline.query("SELECT record_id, profile_id FROM identity.record_profiles"
                                     " WHERE stream = 'hubspot.contacts'"))  # fmt: skip
    written = [c for found in env.contacts().values() for c in found if "cdp_profile_id" in c["properties"]]
    assert written and all(owners[c["id"]] == c["properties"]["cdp_profile_id"] for c in written)
    assert_in_step(env)


def test_a_changed_trait_is_planned_then_sent_as_exactly_that_row(start: Callable[..., Env]) -> None:
    env = start()
    assert env.sync().success
    [(email, ticket_id, open_tickets)] = env.pipeline.query(
        """
        SELECT c.email, min(t.ticket_id), any_value(c.open_tickets)
        FROM views.customer_360 c
        JOIN identity.record_profiles rp ON rp.profile_id = c.profile_id AND rp.stream = 'zendesk.users'
        JOIN staging.zendesk__tickets t ON t.requester_id = rp.record_id
        WHERE c.email IN (SELECT key FROM sync.state WHERE sync = 'hubspot_contacts')
          AND t.status IN ('new', 'open', 'pending') AND NOT t.is_deleted
        GROUP BY c.email ORDER BY c.email LIMIT 1
        """
    )
    store = WorldStore(env.world)
    ticket = store.get("zendesk.tickets", ticket_id)
    now = time.time()
    ticket.payload.update(status="solved", updated_at=zendesk_time(int(now)))
    store.upsert([Record(ticket.stream, ticket.id, ticket.created, int(now * 1000), ticket.payload)])

    assert env.pipeline.run(selection=UPSTREAM).success  # the views now know; nothing is sent yet
    command = [sys.executable, "-m", "cdp_assets.cli", "sync", "--warehouse", str(env.pipeline.warehouse), "plan",
               "--sync", "hubspot_contacts", "--json"]  # fmt: skip
    planned = json.loads(subprocess.run(command, capture_output=True, text=True, check=True, cwd=ROOT).stdout)
    plan = planned["hubspot_contacts"]
    assert (plan["added"], plan["changed"], plan["removed"], plan["sample"]) == (0, 1, 0, {"change": [email]})

    applied = env.sync()
    meta = sent(applied, "hubspot_contacts")
    assert (meta["added"], meta["changed"], meta["removed"], meta["requests"]) == (0, 1, 0, 1)
    assert all(sent(applied, name)["requests"] == 0 for name in SYNCS if name != "hubspot_contacts")
    [contact] = [c for c in env.contacts()[email] if "cdp_profile_id" in c["properties"]]
    assert contact["properties"]["cdp_open_tickets"] == str(open_tickets - 1)
    assert_in_step(env)


def refuse_advertising(env: Env, user_id: str) -> None:
    """The person of the product login `user_id` turns advertising off in the product's consent banner."""
    now = int(time.time()) - 1
    insert_id = secrets.token_hex(10)
    properties = {"time": now, "distinct_id": user_id, "$user_id": user_id, "$insert_id": insert_id,
                  "mp_processing_time_ms": now * 1000, "analytics": True, "advertising": False}  # fmt: skip
    event = {"event": "Consent updated", "properties": properties}
    WorldStore(env.world).upsert([Record("mixpanel.events", insert_id, now, now * 1000, event)])


def take_an_address(env: Env) -> None:
    """A support user takes the address of a person synced to the CRM: the address's row, and its key, move to
    another profile (or the two profiles merge)."""
    [(user_id, email)] = env.pipeline.query("""
        SELECT u.record_id, c.email FROM identity.record_profiles u
        JOIN views.customer_360 c ON c.profile_id <> u.profile_id AND c.crm_contact_id IS NOT NULL
        JOIN staging.zendesk__users z ON z.user_id = u.record_id AND NOT z.is_deleted
        WHERE u.stream = 'zendesk.users' ORDER BY hash(u.record_id), hash(c.profile_id) LIMIT 1""")
    store = WorldStore(env.world)
    user = store.get("zendesk.users", user_id)
    now = time.time()
    user.payload.update(email=email, updated_at=zendesk_time(int(now)))
    store.upsert([Record(user.stream, user.id, user.created, int(now * 1000), user.payload)])


def test_syncs_follow_their_views_and_send_what_a_plan_of_every_row_would(start: Callable[..., Env]) -> None:
    """After a sync's first run, each run plans from the profiles its view logged since: it reads a small part of
    the view, sends what a plan of every row would (a dry run of every row then finds nothing left to send) and
    counts the whole model, through a tick of the world, a support user taking another person's address and a
    refusal of advertising."""
    env = start()
    first = env.sync()
    assert not any(sent(first, name)["followed_changes"] for name in SYNCS)
    # The pull after a first sync reads back every CRM contact and support user it wrote, with new change times, and
    # the profiles holding them are made again: that run reads most rows, and the rounds below far fewer.
    assert env.pipeline.run().success
    members = env.state("meta_retargeting")
    [(user_id,)] = env.pipeline.query("SELECT product_user_id FROM identity.person_profiles WHERE product_user_id"
                                      " IS NOT NULL AND list_contains($members, profile_id) ORDER BY profile_id"
                                      " LIMIT 1", {"members": list(members)})  # fmt: skip
    rounds: dict[str, Callable[[], object]] = {
        "a tick of the world": lambda: env.sandbox.control("tick", "POST", changes=10),
        "a support user taking another person's address": lambda: take_an_address(env),
        "a refusal of advertising": lambda: refuse_advertising(env, user_id),
    }
    sends = 0
    for change, make in rounds.items():
        make()
        outcome = env.pipeline.run()
        assert outcome.success, change
        whole = env.sync(dry_run=True, full_refresh=True)
        for name in SYNCS:
            meta, planned = sent(outcome, name), sent(whole, name)
            assert meta["followed_changes"] and not planned["followed_changes"], (change, name)
            assert meta["rows_read"] < planned["rows_read"] / 2, (change, name, meta["rows_read"])
            counts = ("rows", "invalid", "left_out")
            assert [meta[c] for c in counts] == [planned[c] for c in counts], (change, name, meta, planned)
            assert (planned["added"], planned["changed"], planned["removed"]) == (0, 0, 0), (change, name, planned)
            sends += meta["added"] + meta["changed"] + meta["removed"]
    assert sends > 0

    # A sync that no longer follows (removed from syncs.yaml, say) leaves no position holding the log back.
    with duckdb.connect(str(env.pipeline.warehouse)) as conn:
        conn.execute(f"INSERT INTO {changes.POSITIONS} (follower, change, fingerprint, as_of)"
                     " VALUES ('sync.retired', 0, 'any', now())")
        conn.execute("INSERT INTO sync.model_rows VALUES ('retired', 'key', 'profile', NULL, NULL)")
    assert env.sync("braze_users").success
    assert env.pipeline.query(f"SELECT (SELECT count(*) FROM {changes.POSITIONS} WHERE follower = 'sync.retired'),"
                              " (SELECT count(*) FROM sync.model_rows WHERE sync = 'retired')") == [(0, 0)]


def test_a_person_who_leaves_an_audience_is_removed_from_meta(start: Callable[..., Env]) -> None:
    env = start()
    assert env.sync().success
    members = env.state("meta_retargeting")
    [(profile_id, user_id)] = env.pipeline.query(
        "SELECT profile_id, product_user_id FROM identity.person_profiles WHERE product_user_id IS NOT NULL"
        " AND list_contains($members, profile_id) ORDER BY profile_id LIMIT 1",
        {"members": list(members)},
    )
    refuse_advertising(env, user_id)

    outcome = env.pipeline.run()
    assert outcome.success
    meta = sent(outcome, "meta_retargeting")
    assert (meta["added"], meta["changed"], meta["removed"], meta["acknowledged"]) == (0, 0, 1, 1)
    [(allowed,)] = env.pipeline.query(
        "SELECT allowed FROM privacy.consent WHERE profile_id = $p AND purpose = 'advertising'", {"p": profile_id}
    )
    assert not allowed
    audience = os.environ["META_AUDIENCE_RETARGETING"]
    held = {tuple(member) for member in env.sandbox.control("destinations/meta")[audience]}
    gone = members[profile_id]
    assert (email_hash(gone["email"]), phone_hash(gone["phone"])) not in held
    assert len(held) == len(members) - 1
    assert_in_step(env)


def test_a_run_killed_mid_sync_leaves_every_record_once_with_its_final_values(
    start: Callable[..., Env], tmp_path: Path
) -> None:
    env = start({"faults": {"hubspot": {"latency_ms": 300}}})
    contacts_before = sum(len(found) for found in env.contacts().values())
    env.sandbox.control("stats", "DELETE")
    environment = {
        **os.environ,
        **stack.sandbox_credentials(),
        "CDP_SANDBOX_URL": env.sandbox.url,
        "CDP_WAREHOUSE": str(env.pipeline.warehouse),
        "DAGSTER_HOME": str(stack.prepare_dagster_home(tmp_path / "dagster_home")),
    }
    command = [str(Path(sys.executable).parent / "dagster"), "asset", "materialize", "-m", "cdp_assets.definitions",
               "--select", "sync/hubspot_contacts"]  # fmt: skip
    process = subprocess.Popen(
        command, cwd=ROOT, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if env.sandbox.control("stats")["services"].get("hubspot", {}).get("requests", 0) >= 1:
            break  # a first batch went through; the next is under way
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()

    [(acknowledged,)] = env.pipeline.query("SELECT count(*) FROM sync.state WHERE sync = 'hubspot_contacts'")
    [(status,)] = env.pipeline.query("SELECT status FROM sync.runs WHERE sync = 'hubspot_contacts'")
    written = sum(1 for found in env.contacts().values() for c in found if "cdp_profile_id" in c["properties"])
    assert status == "in_progress" and written > 0, "the kill did not land mid-sync"

    rerun = env.sync()
    assert rerun.success and acknowledged < len(env.state("hubspot_contacts"))
    assert sum(len(found) for found in env.contacts().values()) == contacts_before  # no duplicate was created
    assert env.pipeline.query("SELECT DISTINCT status FROM sync.runs WHERE run_id IN (SELECT run_id FROM sync.runs"
                              " WHERE sync = 'hubspot_contacts' ORDER BY started_at LIMIT 1)") == [("interrupted",)]
    assert_in_step(env)


def test_rejected_rows_are_kept_with_reasons_and_taken_once_the_cause_is_fixed(start: Callable[..., Env]) -> None:
    env = start()
    # A subscription status both syncs send for some people: the accounts stop accepting it.
    [(refused_status, hubspot_rows, zendesk_rows)] = env.pipeline.query(
        """
        SELECT subscription_status, count(*) FILTER (WHERE hubspot), count(*) FILTER (WHERE zendesk)
        FROM (SELECT subscription_status, crm_contact_id IS NOT NULL AND list_contains(purposes, 'sales_outreach')
                     AS hubspot, help_desk_user_id IS NOT NULL AS zendesk FROM views.customer_360)
        WHERE subscription_status IS NOT NULL
        GROUP BY 1 HAVING count(*) FILTER (WHERE hubspot) > 0 AND count(*) FILTER (WHERE zendesk) > 0
        ORDER BY count(*), 1 LIMIT 1
        """
    )
    options = env.sandbox.control("config")["accounts"]
    allowed = [s for s in options["hubspot_contact_properties"]["cdp_subscription_status"] if s != refused_status]
    narrowed = {"hubspot_contact_properties": {"cdp_subscription_status": allowed},
                "zendesk_user_fields": {"cdp_subscription_status": allowed}}  # fmt: skip
    env.sandbox.control("config", "PATCH", json={"accounts": narrowed})

    for attempt in range(2):  # refused rows are sent again on the next run (planned from their keys), refused again
        outcome = env.sync("hubspot_contacts", "zendesk_users")
        hubspot, zendesk = sent(outcome, "hubspot_contacts"), sent(outcome, "zendesk_users")
        assert hubspot["followed_changes"] == zendesk["followed_changes"] == (attempt == 1)
        assert hubspot["rejected"] == hubspot_rows and zendesk["rejected"] == zendesk_rows, attempt
        assert hubspot["splits"] > 0 and zendesk["splits"] == 0  # HubSpot refuses whole batches; Zendesk per user
        assert hubspot["status"] == zendesk["status"] == "partially_failed"
    reasons = dict(env.pipeline.query("SELECT sync, list(DISTINCT reason) FROM sync.rejections GROUP BY 1"))
    assert all("INVALID_OPTION" in r and f"{refused_status} was not one of the allowed" in r
               for r in reasons["hubspot_contacts"])  # fmt: skip
    assert all(f"'{refused_status}' is not a valid option" in r for r in reasons["zendesk_users"])
    [(open_rows,)] = env.pipeline.query("SELECT count(*) FROM sync.rejections WHERE resolved_at IS NULL")
    assert open_rows == 2 * (hubspot_rows + zendesk_rows)
    refused = {key for (key,) in env.pipeline.query("SELECT DISTINCT key FROM sync.rejections")}
    assert not refused & (set(env.state("hubspot_contacts")) | set(env.state("zendesk_users")))

    env.sandbox.control("config", "PATCH", json={"accounts": {
        "hubspot_contact_properties": {"cdp_subscription_status": [*allowed, refused_status]},
        "zendesk_user_fields": {"cdp_subscription_status": [*allowed, refused_status]}}})  # fmt: skip
    fixed = env.sync("hubspot_contacts", "zendesk_users")
    assert sent(fixed, "hubspot_contacts")["followed_changes"] and sent(fixed, "zendesk_users")["followed_changes"]
    assert sent(fixed, "hubspot_contacts")["acknowledged"] == hubspot_rows
    assert sent(fixed, "zendesk_users")["acknowledged"] == zendesk_rows
    assert env.pipeline.query("SELECT count(*) FROM sync.rejections WHERE resolved_at IS NULL") == [(0,)]
    assert env.sync("braze_users", "meta_retargeting", "meta_high_value").success
    assert_in_step(env)


def test_429_storms_and_5xx_bursts_do_not_fail_a_sync(start: Callable[..., Env]) -> None:
    storm = {"error_rate": 0.3, "burst_429_every": 4, "burst_429_length": 2, "drop_rate": 0.1}
    env = start({"faults": dict.fromkeys(DESTINATION_SERVICES, storm),
                 "limits": {"braze": {"users_track": {"max": 1, "seconds": 1}}}})  # fmt: skip
    outcome = env.sync()
    stats = env.sandbox.control("stats")["services"]

    assert outcome.success
    assert all(sent(outcome, name)["rejected"] == 0 for name in SYNCS)
    assert sum(sent(outcome, name)["retries"] for name in SYNCS) > 0
    assert sum(stats[s]["injected_5xx"] for s in DESTINATION_SERVICES) > 0
    assert sum(stats[s]["injected_429"] for s in DESTINATION_SERVICES) > 0
    assert stats["braze"]["limiter_429"] > 0  # Braze's own limit, retried at its reset time
    assert_in_step(env)


def test_the_deletion_guard_stops_a_run_that_would_wipe_the_audience(start: Callable[..., Env]) -> None:
    env = start()
    assert env.sync("meta_retargeting").success
    audience = os.environ["META_AUDIENCE_RETARGETING"]
    members = env.sandbox.control("destinations/meta")[audience]
    assert len(members) > 5
    with duckdb.connect(str(env.pipeline.warehouse)) as conn:  # a broken build empties the audience
        conn.execute("DELETE FROM views.marketing_audiences WHERE audience = 'retargeting'")
        changes.log(conn, following.logged_as("marketing_audiences"), None)  # as its whole build logs itself

    stopped = env.sync("meta_retargeting", raise_on_error=False)
    assert not stopped.success
    [(status, message)] = env.pipeline.query(
        "SELECT status, message FROM sync.runs WHERE sync = 'meta_retargeting' ORDER BY started_at DESC LIMIT 1"
    )
    assert status == "aborted" and f"would remove {len(members)} of the {len(members)}" in message
    assert env.sandbox.control("destinations/meta")[audience] == members

    allowed = env.sync("meta_retargeting", allow_mass_removal=True)  # once someone has checked
    assert sent(allowed, "meta_retargeting")["removed"] == len(members)
    assert env.sandbox.control("destinations/meta").get(audience, []) == []


def test_the_circuit_breaker_holds_syncs_while_identity_or_a_blocking_check_looks_broken(
    start: Callable[..., Env],
) -> None:
    env = start()
    assert env.sync().success
    requests_before = env.sandbox.control("stats")["totals"]["requests"]
    check = AssetCheckKey(AssetKey(["views", "customer_360"]), "policy_columns")
    with duckdb.connect(str(env.pipeline.warehouse)) as conn:
        conn.execute("ALTER TABLE views.customer_360 ADD COLUMN national_id VARCHAR")
    assert not env.pipeline.run(selection=AssetSelection.checks(check), raise_on_error=False).success

    held = env.sync("hubspot_contacts", "braze_users", raise_on_error=False)
    assert not held.success
    rows = dict(env.pipeline.query(
        "SELECT sync, status || ': ' || message FROM sync.runs WHERE status = 'blocked'"))  # fmt: skip
    assert set(rows) == {"hubspot_contacts"}  # Braze reads another view, whose checks passed
    assert "upstream check failed: views/customer_360:policy_columns" in rows["hubspot_contacts"]

    with duckdb.connect(str(env.pipeline.warehouse)) as conn:  # the column goes
        conn.execute("ALTER TABLE views.customer_360 DROP COLUMN national_id")
    assert env.pipeline.run(selection=AssetSelection.checks(check)).success
    # The held run sent nothing of what it planned, so the next plans from every row, not from the view's log.
    resumed = sent(env.sync("hubspot_contacts"), "hubspot_contacts")
    assert (resumed["status"], resumed["followed_changes"], resumed["requests"]) == ("succeeded", False, 0)
    assert sent(env.sync("hubspot_contacts"), "hubspot_contacts")["followed_changes"]  # settled: it follows again

    with duckdb.connect(str(env.pipeline.warehouse)) as conn:  # a profile swells instead
        conn.execute("UPDATE identity.person_profiles SET records = 1000 WHERE profile_id = (SELECT min(profile_id)"
                     " FROM identity.person_profiles)")  # fmt: skip
    assert not env.sync("braze_users", raise_on_error=False).success
    assert last_message(env, "braze_users") == "the largest profile holds 1,000 records, more than 150"

    with duckdb.connect(str(env.pipeline.warehouse)) as conn:  # now half the profiles vanish
        conn.execute("UPDATE identity.person_profiles SET records = 1 WHERE records = 1000")
        conn.execute("DELETE FROM identity.person_profiles WHERE hash(profile_id) % 2 = 0")
    assert not env.sync("braze_users", raise_on_error=False).success
    message = last_message(env, "braze_users")
    assert message.startswith("profiles moved ") and "more than 10%" in message
    assert env.sandbox.control("stats")["totals"]["requests"] == requests_before  # nothing was sent


def last_message(env: Env, sync: str) -> str:
    [(message,)] = env.pipeline.query(
        "SELECT message FROM sync.runs WHERE sync = $sync ORDER BY started_at DESC LIMIT 1", {"sync": sync}
    )
    return message


def test_rows_without_a_key_of_their_own_are_caught_before_sending(start: Callable[..., Env]) -> None:
    env = start()
    synced = env.sync("hubspot_contacts")
    assert synced.success
    before = sent(synced, "hubspot_contacts")  # a team mailbox's profile is left out already
    held = env.state("hubspot_contacts")
    first, second, third, fourth, fifth, sixth, seventh = sorted(held)[:7]
    disputed = "nobody.placed.this@acme-disputed.io"  # an address identity never saw, so no profile holds it
    with duckdb.connect(str(env.pipeline.warehouse)) as conn:
        owner = conn.execute("SELECT profile_id FROM identity.identifier_profiles WHERE id_type = 'email' "
                             "AND value = $a AND NOT shared", {"a": first}).fetchall()  # fmt: skip
        conn.execute("CREATE TEMP TABLE _edited AS SELECT profile_id FROM views.customer_360"
                     " WHERE list_contains($edited, email)",
                     {"edited": [second, third, fourth, fifth]})
        conn.execute("CREATE TEMP TABLE _regrouped AS SELECT profile_id FROM views.customer_360"
                     " WHERE list_contains($moved, email)",
                     {"moved": [sixth, seventh]})
        # A profile keyed by an address identity placed in another profile (a refused link leaves a record there).
        conn.execute("UPDATE views.customer_360 SET email = $a, mrr_cents = mrr_cents + 100 WHERE email = $b",
                     {"a": first, "b": second})  # fmt: skip
        conn.execute("UPDATE views.customer_360 SET email = NULL WHERE email = $c", {"c": third})
        conn.execute("UPDATE views.customer_360 SET email = $d WHERE email IN ($e, $f)",
                     {"d": disputed, "e": fourth, "f": fifth})  # fmt: skip
        # An address identity placed in a profile with no row here: no other row names its record, so it is sent.
        conn.execute("UPDATE identity.identifier_profiles SET profile_id = 'prof_with_no_row' WHERE id_type = 'email' "
                     "AND value = $s AND NOT shared", {"s": sixth})  # fmt: skip
        # An address judged shared since it was sent: left out, and the destination's record is not removed.
        conn.execute("INSERT INTO identity.shared_values (id_type, value, reason) VALUES ('email', $s, 'role mailbox')",
                     {"s": seventh})  # fmt: skip
        # Logged as the view's build and the graph's would log them, so that the sync follows these changes alone.
        conn.begin()
        changes.log(conn, following.logged_as("customer_360"), "SELECT profile_id AS key, NULL AS before FROM _edited")
        changes.log(conn, resolution.PRODUCER, "SELECT profile_id AS key, NULL AS before FROM _regrouped")
        conn.commit()
    outcome = env.sync("hubspot_contacts")
    meta = sent(outcome, "hubspot_contacts")
    assert meta["followed_changes"] and meta["rows_read"] < meta["rows"] / 2, meta
    assert (meta["invalid"], meta["left_out"] - before["left_out"], meta["requests"], meta["status"]) == (
        3, 2, 0, "succeeded")  # fmt: skip
    reasons = env.pipeline.query("SELECT key, reason FROM sync.invalid_rows WHERE run_id = $r ORDER BY ALL",
                                 {"r": outcome.run_id})  # fmt: skip
    assert reasons == [(disputed, "duplicate key, held by 2 rows"), (disputed, "duplicate key, held by 2 rows"),
                       (None, "no key")]  # fmt: skip
    left_out = env.pipeline.query("SELECT key, reason FROM sync.left_out_rows WHERE run_id = $r AND key = $a",
                                  {"r": outcome.run_id, "a": first})  # fmt: skip
    assert owner and left_out == [(first, f"key held by another profile ({owner[0][0]})")]
    # Nothing was sent: the address's own profile keeps its record, unchanged; the rows that lost their own key
    # left the model, which upsert mode forgets without telling the destination.
    after = env.state("hubspot_contacts")
    assert after[first] == held[first] and not {second, third, fourth, fifth, disputed} & set(after)
    assert after[seventh] == held[seventh]
    assert after[sixth] == held[sixth] and not env.pipeline.query(
        "SELECT * FROM sync.left_out_rows WHERE key = $s", {"s": sixth})  # fmt: skip
    assert meta["removed"] == 4 and env.pipeline.query("SELECT count(*) FROM sync.invalid_rows") == [(3,)]


def test_a_contact_archived_in_the_crm_has_its_duplicate_take_the_synced_fields(start: Callable[..., Env]) -> None:
    env = start(synced=True)  # after a first run with the syncs
    # A person HubSpot knows by two contacts with one address: sales archives the one the sync wrote onto.
    duplicates = {email: found for email, found in env.contacts().items() if len(found) == 2}
    written = next(email for email, found in duplicates.items() if email in env.state("hubspot_contacts")
                   and sum("cdp_profile_id" in c["properties"] for c in found) == 1)  # fmt: skip
    [target] = [c for c in duplicates[written] if "cdp_profile_id" in c["properties"]]
    [other] = [c for c in duplicates[written] if c is not target]
    store = WorldStore(env.world)
    record = store.get("hubspot.contacts", target["id"])
    now_ms = int(time.time() * 1000)
    record.payload.update(archived=True, archivedAt=time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()))
    store.upsert([Record(record.stream, record.id, record.created, now_ms, record.payload, archived=True)])

    outcome = env.pipeline.run()
    assert sent(outcome, "hubspot_contacts")["changed"] == 1  # the same fields, onto another contact
    [live] = env.contacts()[written]
    assert live["id"] == other["id"] and live["properties"]["cdp_profile_id"] == target["properties"]["cdp_profile_id"]
    assert_in_step(env)


def test_a_sync_key_type_must_be_an_identifier_type_on_a_view_with_profiles() -> None:
    from resources import DESTINATIONS

    modes = {name: cls.modes for name, cls in DESTINATIONS.items()}
    stated = yaml.safe_load(SYNCS_FILE.read_text())
    assert parse(stated, modes).syncs["hubspot_contacts"].key_type == "email"  # as shipped, it loads

    misspelt = copy.deepcopy(stated)
    misspelt["syncs"]["hubspot_contacts"]["key_type"] = "emial"
    with pytest.raises(ValueError, match=r"key_type 'emial' is not an identifier type of identity/rules\.yaml"):
        parse(misspelt, modes)
    no_profiles = copy.deepcopy(stated)
    no_profiles["syncs"]["hubspot_contacts"].update(view="account_360", key="domain", purpose=None, tracks=[])
    with pytest.raises(ValueError, match="a consent purpose or a key_type needs a profile_id column"):
        parse(no_profiles, modes)


@pytest.mark.parametrize(("part", "expression"), [
    ("where", "crm_contact_id IS NOT NULL AND as_of > now() - INTERVAL 1 DAY"),
    ("fields", "date_diff('day', last_product_at, current_date)"),
    ("fields", "(SELECT max(plan) FROM views.account_360)"),
])
def test_a_sync_maps_its_views_row_alone(part: str, expression: str) -> None:
    """Not the clock, not another table: a sync following its view's log would otherwise miss what changes them."""
    from resources import DESTINATIONS

    stated = yaml.safe_load(SYNCS_FILE.read_text())
    spec = stated["syncs"]["hubspot_contacts"]
    if part == "where":
        spec["where"] = expression
    else:
        spec["fields"]["cdp_days_quiet"] = expression
    with pytest.raises(ValueError, match=r"reads the clock or another table"):
        parse(stated, {name: cls.modes for name, cls in DESTINATIONS.items()})

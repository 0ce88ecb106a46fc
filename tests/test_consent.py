"""Consent belongs to a person and an address, never to a shared login, and fails closed.

One world, one run with syncs. A household shares one product login, and the identity layer knows it: an operator
keeps the login apart from the partner's help-desk user and address, so records of both partners' profiles carry it.
The partner says yes to advertising on it from the family laptop without naming himself, and again from his phone
with his address; the login's owner never answered. A person who allowed advertising earlier refuses in an event
whose time cannot be read, and a person subscribed by email refuses in a Klaviyo profile whose address cannot be
read: both records are quarantined. Every view and destination must keep the owner and the refusing people out, and
every email audience row must carry an address that consented.
"""

from __future__ import annotations

import secrets
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb

from cdp_assets.identity import explain
from cdp_assets.identity import rules as identity_rules
from cdp_assets.privacy import consent
from resources.destinations.meta import email_hash, phone_hash
from sandbox.store import Record, WorldStore
from tests.conftest import Env
from tests.test_privacy import serve

# An active prospect (never paid, no subscription) with an address, a name, no product login and no consent statement.
QUIET_PROSPECT = """
SELECT p.profile_id, p.email, concat_ws(' ', p.first_name, p.last_name)
FROM identity.person_profiles p JOIN identity.person_lifecycle l USING (profile_id)
WHERE p.is_active AND p.email IS NOT NULL AND p.first_name IS NOT NULL AND p.product_user_id IS NULL
  AND l.first_paid_at IS NULL
  AND NOT l.is_subscribed AND p.profile_id NOT IN (SELECT profile_id FROM privacy.consent_ledger)
ORDER BY p.profile_id LIMIT 1
"""
# Active prospects with a login of their own whose records hold an address, and no consent statement yet.
LOGGED_IN_PROSPECTS = """
SELECT p.profile_id, p.product_user_id
FROM identity.person_profiles p JOIN identity.person_lifecycle l USING (profile_id)
WHERE p.is_active AND p.product_user_id IS NOT NULL AND l.first_paid_at IS NULL AND NOT l.is_subscribed
  AND p.profile_id NOT IN (SELECT profile_id FROM privacy.consent_ledger)
  AND EXISTS (SELECT 1 FROM identity.identifiers l JOIN identity.identifiers e USING (stream, record_id)
              JOIN identity.record_profiles rp USING (stream, record_id)
              WHERE l.id_type = 'user_id' AND l.value = p.product_user_id AND e.id_type = 'email'
                AND rp.profile_id = p.profile_id)
ORDER BY p.profile_id LIMIT 2
"""
# A person sent marketing email through a Klaviyo subscription, with a login Klaviyo can name them by.
SUBSCRIBED_WITH_LOGIN = """
SELECT c.profile_id, p.product_user_id
FROM views.marketing_contacts c JOIN identity.person_profiles p USING (profile_id)
WHERE p.product_user_id IS NOT NULL AND NOT list_contains($others, c.profile_id)
  AND c.profile_id IN (SELECT profile_id FROM privacy.consent_ledger
                       WHERE source = 'klaviyo.profiles' AND choice = 'granted' AND is_current)
ORDER BY c.profile_id LIMIT 1
"""
HELP_DESK_USER = "369999990527"  # the partner's Zendesk user, which names the household login
QUARANTINED_PROFILE = "01H5QUARANTINEDREFUSAL0001"  # a Klaviyo profile whose address cannot be read


def product_event(insert_id: str, at: int, stamp: Any, **properties: Any) -> Record:
    """A product `Consent updated` event as Mixpanel exports it; `stamp` is what its `time` holds."""
    body = {"time": stamp, "$insert_id": insert_id, "mp_processing_time_ms": at * 1000, **properties}
    body["distinct_id"] = body.get("$user_id") or body.get("$device_id")
    return Record("mixpanel.events", insert_id, at, at * 1000, {"event": "Consent updated", "properties": body})


def test_consent_binds_a_person_and_an_address_and_fails_closed(start: Callable[..., Env]) -> None:
    env = start()
    query = env.pipeline.query
    [(partner, partner_email, partner_name)] = query(QUIET_PROSPECT)
    (owner, login), (refuser, refuser_login) = query(LOGGED_IN_PROSPECTS)
    [(unsubscriber, unsubscriber_login)] = query(SUBSCRIBED_WITH_LOGIN, {"others": [owner, refuser]})
    assert len({partner, owner, refuser, unsubscriber}) == 4

    # The partner's help-desk user names the household login; the operator keeps the login apart from him. It is
    # his, so it carries his name: under another name his address would be on records that disagree on who they
    # are, a shared value that places no record (identity/shared.py), and the user would be a profile of its own.
    serve(env, "zendesk.users", HELP_DESK_USER, email=partner_email, phone=None, external_id=login, name=partner_name)
    with duckdb.connect(str(env.pipeline.warehouse)) as conn:
        for other in (f"zendesk_user:{HELP_DESK_USER}", f"email:{partner_email}"):
            explain.add_never_link(conn, identity_rules.load(), f"user_id:{login}", other, "a household login", "test")
    now = int(time.time()) - 60
    ids = {name: secrets.token_hex(10) for name in ("laptop", "phone", "grant", "refusal")}
    WorldStore(env.world).upsert([
        # The partner says yes on the household login from the family laptop without naming himself: no one...
        product_event(ids["laptop"], now - 40, now - 40, advertising=True, analytics=True,
                      **{"$user_id": login, "$device_id": "h5-family-laptop"}),
        # ...and again from his phone with his address: him.
        product_event(ids["phone"], now - 30, now - 30, advertising=True, email=partner_email,
                      **{"$user_id": login, "$device_id": "h5-his-phone"}),
        # A person allows advertising, then refuses in an event whose time is in milliseconds (quarantined).
        product_event(ids["grant"], now - 20, now - 20, advertising=True, **{"$user_id": refuser_login}),
        product_event(ids["refusal"], now - 10, (now - 10) * 1000, advertising=False, **{"$user_id": refuser_login}),
    ])  # fmt: skip
    # A subscribed person unsubscribes in a second Klaviyo profile whose address cannot be read (quarantined).
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(now))
    serve(env, "klaviyo.profiles", QUARANTINED_PROFILE, **{
        "attributes.email": "unsubscribed at nowhere", "attributes.phone_number": None,
        "attributes.external_id": unsubscriber_login,
        "attributes.subscriptions.email.marketing.consent": "UNSUBSCRIBED",
        "attributes.subscriptions.email.marketing.consent_timestamp": stamp})  # fmt: skip

    assert env.pipeline.run().success

    # The login is shared as the identity layer sees it: records of both people's profiles carry it.
    [(holders,)] = query(
        "SELECT list(DISTINCT rp.profile_id ORDER BY rp.profile_id) FROM identity.identifiers i"
        " JOIN identity.record_profiles rp USING (stream, record_id) WHERE i.id_type = 'user_id' AND i.value = $v",
        {"v": login},
    )
    assert holders == sorted([owner, partner])
    # The ledger: the yes without a name binds no one; the named one binds the partner, on his address;
    # both refusals are read from their quarantined records, and win over the older grants.
    ledger = {
        (record_id, profile_id, purpose): (choice, addresses, quarantined, is_current, evidence)
        for record_id, profile_id, purpose, choice, addresses, quarantined, is_current, evidence in query(
            "SELECT record_id, profile_id, purpose, choice, addresses, quarantined, is_current, evidence"
            " FROM privacy.consent_ledger WHERE list_contains($ids, record_id)",
            {"ids": [*ids.values(), QUARANTINED_PROFILE]})
    }  # fmt: skip
    assert not [key for key in ledger if key[0] == ids["laptop"]]
    assert ledger[(ids["phone"], partner, "advertising")][:4] == ("granted", [partner_email], False, True)
    assert ledger[(ids["grant"], refuser, "advertising")][0::3] == ("granted", False)  # the refusal supersedes it
    refusal = ledger[(ids["refusal"], refuser, "advertising")]
    assert (refusal[0], *refusal[2:4]) == ("denied", True, True) and "time unreadable" in refusal[4]
    unsubscribed = ledger[(QUARANTINED_PROFILE, unsubscriber, "email_marketing")]
    assert unsubscribed[:4] == ("denied", [], True, True)
    consent = {(p, purpose): (state, allowed) for p, purpose, state, allowed in query(
        "SELECT profile_id, purpose, state, allowed FROM privacy.consent WHERE list_contains($p, profile_id)",
        {"p": [owner, partner, refuser, unsubscriber]})}  # fmt: skip
    assert consent[(owner, "advertising")] == ("no_choice", False)
    assert consent[(owner, "analytics")][0] == "no_choice"
    assert consent[(partner, "advertising")] == ("granted", True)  # the control: a yes that binds reaches the views
    assert consent[(refuser, "advertising")] == ("denied", False)
    assert consent[(unsubscriber, "email_marketing")] == ("denied", False)

    # Every view: no row uses the owner or the refusing people for what they did not allow.
    kept_out = {owner: "advertising", refuser: "advertising", unsubscriber: "email_marketing"}
    for table, purposes_column, purpose_column, consent_column in query(
        "SELECT table_name, bool_or(column_name = 'purposes'), bool_or(column_name = 'purpose'),"
        " bool_or(column_name = 'consent') FROM information_schema.columns WHERE table_schema = 'views'"
        " GROUP BY 1 HAVING bool_or(column_name = 'profile_id') ORDER BY 1"
    ):
        for person, purpose in kept_out.items():
            uses = [f"list_contains(purposes, '{purpose}')"] * purposes_column + [f"purpose = '{purpose}'"] * (
                purpose_column) + [f"consent['{purpose}'] = 'granted'"] * consent_column
            if table == "marketing_contacts" and purpose == "email_marketing":
                uses = ["true"]  # every row of it is for email
            for use in uses:
                assert not query(f"SELECT 1 FROM views.{table} WHERE profile_id = $p AND {use}", {"p": person}), (
                    table, use)
    audiences = query("SELECT profile_id, audience, purpose, email FROM views.marketing_audiences")
    assert (partner, "retargeting", "advertising", partner_email) in audiences

    # Every email audience row, and every person Braze is told to mail, carries an address a current grant binds;
    # for some the consented address is not the golden one.
    granted = {
        purpose: set(addresses) for purpose, addresses in query(
            "SELECT purpose, list(DISTINCT a) FROM (SELECT purpose, unnest(addresses) AS a FROM privacy.consent_ledger"
            " WHERE is_current AND choice = 'granted') GROUP BY 1")
    }  # fmt: skip
    email_rows = [row for row in audiences if row[2] == "email_marketing"]
    assert email_rows and all(email in granted["email_marketing"] for _, _, _, email in email_rows)
    [(not_golden,)] = query(
        "SELECT count(*) FROM views.marketing_audiences a JOIN identity.person_profiles p USING (profile_id)"
        " WHERE a.purpose = 'email_marketing' AND a.email <> p.email"
    )
    assert not_golden > 0
    braze = env.sandbox.control("destinations/braze")
    mailed = {key: user for key, user in braze.items() if user.get("email_subscribe") != "unsubscribed"}
    assert mailed and all(user["email"] in granted["email_marketing"] for user in mailed.values())
    assert unsubscriber not in mailed

    # Meta: only addresses that allowed advertising; not the login's owner, not the refusing person.
    members = {tuple(member) for held in env.sandbox.control("destinations/meta").values() for member in held}
    allowed_hashes = {email_hash(address) for address in granted["advertising"]}
    assert members and all(email in allowed_hashes for email, _ in members if email)
    assert email_hash(partner_email) in {email for email, _ in members}
    held = {value for member in members for value in member if value}
    kept = [(email_hash(value) if kind == "email" else phone_hash(value)) for kind, value in query(
        "SELECT 'email', email FROM identity.email_addresses WHERE list_contains($p, profile_id) UNION ALL"
        " SELECT 'phone', phone FROM identity.person_profiles WHERE list_contains($p, profile_id) AND phone <> ''",
        {"p": [owner, refuser]})]  # fmt: skip
    assert kept and not set(kept) & held


def test_a_login_is_judged_shared_by_its_own_type(unsynced: Path, tmp_path: Path) -> None:
    """A product event's login binds the addresses its holders' records carry unless the login is a shared value; a
    device id that happens to be written as that login, on two other people's records (a shared device), says
    nothing about the login. Run on a copy of the test world's warehouse through the real ledger build."""
    warehouse = tmp_path / "warehouse.duckdb"
    shutil.copy(unsynced / "warehouse.duckdb", warehouse)
    statement = """
        SELECT l.profile_id, l.addresses FROM privacy.consent_ledger l
        WHERE l.source = 'mixpanel.events' AND l.record_id = $event"""
    with duckdb.connect(str(warehouse)) as conn:
        [(event, login)] = conn.execute("""
            SELECT l.record_id, i.value FROM privacy.consent_ledger l
            JOIN identity.identifiers i ON i.stream = l.source AND i.record_id = l.record_id AND i.id_type = 'user_id'
            WHERE l.source = 'mixpanel.events' AND NOT l.quarantined AND len(l.addresses) > 0 AND NOT EXISTS (
                SELECT 1 FROM identity.identifiers o WHERE o.stream = l.source AND o.record_id = l.record_id
                  AND o.id_type = 'email')
            ORDER BY ALL LIMIT 1""").fetchall()
        bound = conn.execute(statement, {"event": event}).fetchall()
        # Two help-desk users of two other profiles carry a device written as the login.
        conn.execute("""
            INSERT INTO identity.identifiers BY NAME
            SELECT rp.stream, rp.record_id, 'device_id' AS id_type, $login AS value, $login AS raw_value
            FROM identity.record_profiles rp
            WHERE rp.stream = 'zendesk.users' AND rp.profile_id NOT IN (
                SELECT profile_id FROM identity.record_profiles WHERE (stream, record_id) IN (
                    SELECT stream, record_id FROM identity.identifiers WHERE id_type = 'user_id' AND value = $login))
            ORDER BY rp.record_id LIMIT 2""", {"login": login})
        consent.build_ledger(conn, consent.load())
        [(shared_by,)] = conn.execute("SELECT list(DISTINCT shared_by) FROM _subject_crossings WHERE id_type ="
                                      " 'device_id' AND value = $login", {"login": login}).fetchall()
        assert shared_by == ["device"]  # the device is a shared value, two profiles holding it
        assert conn.execute(statement, {"event": event}).fetchall() == bound

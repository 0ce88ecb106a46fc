"""Identifiers, person profiles, email addresses, accounts, lifecycles, customer timelines, consent and the views of
follow the change log (cdp_assets/changes.py, identity/identifiers.py, identity/profile_changes.py, views/timeline.py,
privacy/consent.py, views/following.py): an hourly run reads only the records, and makes again only the profiles,
addresses, timelines, consent and view rows, its changes reach, and ends with the same rows as reading every record
and making every one of them again."""

from __future__ import annotations

import shutil
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import duckdb
from dagster import AssetKey, AssetSelection

from cdp_assets import changes
from cdp_assets.identity import identifiers, lifecycle, profile_changes
from cdp_assets.identity.profiles import (
    ACCOUNT_PEOPLE,
    ACCOUNTS,
    DOMAINS,
    build_accounts,
    build_email_addresses,
    build_person_profiles,
)
from cdp_assets.identity.rules import load as load_rules
from cdp_assets.mappings import MAPPINGS
from cdp_assets.privacy import consent
from cdp_assets.views import build, following, policy, timeline
from resources import SOURCES, primary_key
from sandbox.clock import hubspot_time, zendesk_time
from sandbox.render_hubspot import touch
from sandbox.render_klaviyo import event_payload
from sandbox.store import Record, WorldStore
from tests.conftest import Env

PROFILES = AssetSelection.assets(AssetKey(["identity", "person_profiles"]), AssetKey(["identity", "email_addresses"]),
                                AssetKey(["views", "customer_timeline"]), consent.CONSENT_KEY,
                                *(AssetKey(["views", name]) for name in following.FOLLOWING)).upstream()


def _zendesk_stamp(payload: dict[str, Any], seconds: int) -> None:
    payload["updated_at"] = zendesk_time(seconds)


def _hubspot_stamp(payload: dict[str, Any], seconds: int) -> None:
    touch(payload, seconds * 1000)


def _after_last_pull(env: Env, stream: str) -> int:
    """A second after the last pull of `stream` read it, once that second has come: a change stamped then is new."""
    [(last_read,)] = env.pipeline.query(f"SELECT max(extracted_at) FROM raw.{stream.replace('.', '_')}")
    changed = max(int(time.time()), int(last_read.timestamp()) + 1)
    while time.time() < changed:  # Zendesk's cursor counts whole seconds
        time.sleep(0.05)
    return changed


def _touch(env: Env, stream: str, record_id: str, change: Callable[[dict[str, Any]], None],
           stamped: int | None = None, stamp: Callable[[dict[str, Any], int], None] = _zendesk_stamp) -> None:
    """Change a record in the world after the last pull read it, as its source stamps a change (Zendesk's by
    default: its payload's `updated_at` the moment of the change, or `stamped`)."""
    changed = _after_last_pull(env, stream)
    store = WorldStore(env.world)
    record = store.get(stream, record_id)
    assert record is not None
    payload = dict(record.payload)
    change(payload)
    stamp(payload, stamped or changed)
    store.upsert([Record(stream, record_id, record.created, changed * 1000, payload)])


def _merge(env: Env) -> None:
    """A support user takes the email of a person in another profile."""
    [(user_id, email)] = env.pipeline.query("""
        SELECT u.record_id, o.email FROM identity.record_profiles u
        JOIN identity.person_profiles o ON o.profile_id <> u.profile_id AND o.email IS NOT NULL
        JOIN staging.zendesk__users z ON z.user_id = u.record_id AND NOT z.is_deleted
        WHERE u.stream = 'zendesk.users' ORDER BY hash(u.record_id), hash(o.profile_id) LIMIT 1""")
    _touch(env, "zendesk.users", user_id, lambda payload: payload.update(email=email))


def _move_ticket(env: Env) -> None:
    """An open ticket is handed to another requester: the profile it leaves counts one ticket fewer."""
    [(ticket_id, requester)] = env.pipeline.query("""
        SELECT t.ticket_id, (SELECT min(user_id) FROM staging.zendesk__users u
                             WHERE NOT u.is_deleted AND u.user_id <> t.requester_id)
        FROM staging.zendesk__tickets t WHERE NOT t.is_deleted AND t.status = 'open'
        ORDER BY hash(t.ticket_id) LIMIT 1""")
    _touch(env, "zendesk.tickets", ticket_id, lambda payload: payload.update(requester_id=int(requester)))
    handed.append((ticket_id, requester))


handed: list[tuple[str, str]] = []  # a ticket and the requester it was handed to
quarantined: list[str] = []  # the support user sent to quarantine


def _quarantine(env: Env) -> None:
    """A support user comes back breaking its contract (a role Zendesk has not): it leaves staging for quarantine,
    and its identifiers leave with it. Not the user a ticket was just handed to, whose profile that round checks."""
    [(user_id,)] = env.pipeline.query("""
        SELECT user_id FROM staging.zendesk__users WHERE NOT is_deleted AND email IS NOT NULL
          AND user_id NOT IN (SELECT unnest($handed::VARCHAR[]))
        ORDER BY hash(user_id) LIMIT 1""", {"handed": [requester for _, requester in handed]})
    _touch(env, "zendesk.users", user_id, lambda payload: payload.update(role="wizard"))
    quarantined.append(user_id)


def _newcomer(env: Env) -> None:
    """A support user nobody else knows signs up with neither address nor phone: a profile of its own, with consent
    decided by the purposes' bases alone."""
    [(user_id, newest)] = env.pipeline.query("SELECT max(user_id::BIGINT), max(user_id::BIGINT) + 1"
                                             " FROM staging.zendesk__users")
    store = WorldStore(env.world)
    record = store.get("zendesk.users", str(user_id))
    assert record is not None
    now = _after_last_pull(env, "zendesk.users")
    payload = {**record.payload, "id": newest, "name": "Ottoline Vasquez-Brindle", "email": None, "phone": None,
               "external_id": None, "organization_id": None, "created_at": zendesk_time(now),
               "updated_at": zendesk_time(now), "url": record.payload["url"].replace(str(user_id), str(newest))}
    store.upsert([Record("zendesk.users", str(newest), now, now * 1000, payload)])
    newcomers.append(str(newest))


newcomers: list[str] = []


moved: list[tuple[str, str]] = []  # an address and the support user it moved to


def _shared_address_changing_hands(env: Env) -> None:
    """A support user, alone on its profile, takes a team mailbox another profile holds once (identity links no one
    through it): the address's row moves to the newer holder's profile, and leaves the old one."""
    [(email, user_id)] = env.pipeline.query("""
        WITH holdings AS (SELECT email, profile_id, count(*) AS n FROM identity.email_holders GROUP BY ALL),
        address AS (
            SELECT a.email, a.profile_id FROM identity.email_addresses a
            WHERE list_contains($roles, split_part(a.email, '@', 1))
              AND (SELECT max(n) FROM holdings h WHERE h.email = a.email) = 1
            ORDER BY hash(a.email) LIMIT 1)
        SELECT a.email, min(rp.record_id) FROM address a
        JOIN identity.record_profiles rp ON rp.stream = 'zendesk.users' AND rp.profile_id <> a.profile_id
        JOIN staging.zendesk__users z ON z.user_id = rp.record_id AND NOT z.is_deleted
        WHERE rp.profile_id IN (SELECT profile_id FROM identity.record_profiles GROUP BY profile_id
                                HAVING count(*) = 1)
        GROUP BY a.email""", {"roles": list(load_rules().shared.role_mailboxes)})
    _touch(env, "zendesk.users", user_id, lambda payload: payload.update(email=email))
    moved.append((email, user_id))


refused: list[tuple[str, str]] = []  # the address refused and the profile its row is on


def _refuse_an_address_another_profile_holds(env: Env) -> None:
    """A HubSpot contact opts out of email with an address whose row is on another profile (identity keeps the two
    apart): the refusal denies the address on that profile too."""
    [(contact_id, email, owner)] = env.pipeline.query("""
        SELECT h.contact_id, a.email, a.profile_id FROM staging.hubspot__contacts h
        JOIN identity.record_profiles rp ON rp.stream = 'hubspot.contacts' AND rp.record_id = h.contact_id
        JOIN identity.identifiers i ON i.stream = rp.stream AND i.record_id = rp.record_id AND i.id_type = 'email'
        JOIN identity.email_addresses a ON a.email = i.value AND a.profile_id <> rp.profile_id
        WHERE NOT h.is_deleted AND NOT h.email_opt_out ORDER BY hash(h.contact_id) LIMIT 1""")
    _touch(env, "hubspot.contacts", contact_id, lambda payload: payload["properties"].update(hs_email_optout="true"),
           stamp=_hubspot_stamp)
    refused.append((email, owner))


ledger_only: list[str] = []  # the profile a quarantined contact's refusal binds


def _refusal_only_the_ledger_reads(env: Env) -> None:
    """A new HubSpot contact breaking its contract (a lifecycle stage HubSpot has not) opts out of email with the
    address of a person who allows email marketing: it goes to quarantine, so identity never places it and no profile
    or address is made again for it; only the consent ledger reads its refusal, which binds that person's profile."""
    [(profile_id, email)] = env.pipeline.query("""
        WITH own AS (
            SELECT i.value FROM identity.identifiers i JOIN identity.record_profiles rp USING (stream, record_id)
            WHERE i.id_type IN ('email', 'email_canonical') GROUP BY i.value HAVING count(DISTINCT rp.profile_id) = 1)
        SELECT c.profile_id, a.email FROM privacy.consent c JOIN identity.email_addresses a USING (profile_id)
        WHERE c.purpose = 'email_marketing' AND c.allowed AND a.email IN (FROM own) AND NOT EXISTS (
            SELECT 1 FROM identity.identifiers e JOIN identity.identifiers k USING (stream, record_id)
            WHERE e.id_type = 'email' AND e.value = a.email AND k.id_type = 'email_canonical'
              AND k.value NOT IN (FROM own))
        ORDER BY hash(a.email) LIMIT 1""")
    store = WorldStore(env.world)
    contacts = list(store.scan("hubspot.contacts"))
    newest = str(max(int(record.id) for record in contacts) + 1)
    now = _after_last_pull(env, "hubspot.contacts")
    properties = {**contacts[0].payload["properties"], "email": email, "phone": None, "hs_object_id": newest,
                  "hs_email_optout": "true", "lifecyclestage": "wizard",
                  "createdate": hubspot_time(now * 1000), "lastmodifieddate": hubspot_time(now * 1000)}
    payload = {**contacts[0].payload, "id": newest, "properties": properties,
               "createdAt": hubspot_time(now * 1000), "updatedAt": hubspot_time(now * 1000)}
    store.upsert([Record("hubspot.contacts", newest, now, now * 1000, payload)])
    ledger_only.append(profile_id)


renamed: list[tuple[str, str, str]] = []  # a profile at the renamed company, its new name, and the company


def _company_renamed(env: Env) -> None:
    """A HubSpot company is renamed: its people's views show the new name, though no person record changed."""
    [(company_id, profile_id)] = env.pipeline.query("""
        SELECT a.hubspot_company_ids[1], v.profile_id FROM views.customer_360 v
        JOIN identity.accounts a USING (account_id) WHERE len(a.hubspot_company_ids) = 1
        ORDER BY hash(v.profile_id) LIMIT 1""")
    name = f"Renamed Holdings {company_id}"
    _touch(env, "hubspot.companies", company_id, lambda payload: payload["properties"].update(name=name),
           stamp=_hubspot_stamp)
    renamed.append((profile_id, name, company_id))


moved_companies: list[tuple[str, str, str]] = []  # a company moved, its new domain, its account before


def _company_moving_domain(env: Env) -> None:
    """Another HubSpot company moves to a new domain: its account is a new one, and its people are linked to it,
    though no person record changed (the accounts' build finds them by the account, not by the log)."""
    [(company_id, account_id)] = env.pipeline.query("""
        SELECT a.hubspot_company_ids[1], a.account_id FROM identity.accounts a
        WHERE len(a.hubspot_company_ids) = 1 AND a.hubspot_company_ids[1] <> $renamed AND a.account_id IN (
            SELECT account_id FROM identity.account_people WHERE list_contains(via, 'hubspot_association'))
        ORDER BY hash(a.account_id) LIMIT 1""", {"renamed": renamed[-1][2]})
    domain = f"moved{company_id}.com"
    _touch(env, "hubspot.companies", company_id, lambda payload: payload["properties"].update(domain=domain),
           stamp=_hubspot_stamp)
    moved_companies.append((company_id, domain, account_id))


bounced: list[tuple[str, str]] = []  # a work address that hard-bounced, and a profile linked by it that does not own it
# A live work address held by a Klaviyo profile's record and by a record of another profile, neither the address's owner
# nor holding another live address at its domain, which links that profile to the account at the domain.
SHARED_WORK_ADDRESS_SQL = """
WITH at_domain AS (
    SELECT h.profile_id, e.domain, count(DISTINCT h.email) AS addresses
    FROM identity.email_holders h JOIN identity.email_addresses e USING (email)
    WHERE h.is_live AND e.is_work AND NOT e.hard_bounced GROUP BY ALL
)
SELECT k.email, k.record_id, h.profile_id
FROM identity.email_holders k
JOIN identity.email_holders h USING (email)
JOIN identity.email_addresses e USING (email)
JOIN at_domain d ON d.profile_id = h.profile_id AND d.domain = e.domain AND d.addresses = 1
JOIN identity.accounts a ON a.domain = e.domain
JOIN identity.account_people ap ON ap.account_id = a.account_id AND ap.profile_id = h.profile_id
WHERE k.stream = 'klaviyo.profiles' AND k.is_live AND h.is_live AND h.profile_id NOT IN (k.profile_id, e.profile_id)
  AND e.is_work AND NOT e.hard_bounced
ORDER BY hash(k.email), h.profile_id LIMIT 1"""


def _bounce_on_another_holder(env: Env) -> None:
    """A work address two profiles hold hard-bounces on one's Klaviyo profile: the other, whose records and
    addresses are as they were and which owns no address logged, no longer works at the address's domain by it."""
    [(email, klaviyo_id, holder)] = env.pipeline.query(SHARED_WORK_ADDRESS_SQL)
    [(metric,)] = env.pipeline.query("SELECT metric_id FROM staging.klaviyo__metrics WHERE name = 'Bounced Email'")
    seconds = _after_last_pull(env, "klaviyo.events")
    event = f"01B0VNCE{len(bounced):018d}"
    payload = event_payload(event, seconds, str(uuid.uuid5(uuid.NAMESPACE_URL, event)), {"Bounce Type": "hard"},
                            klaviyo_id, metric)
    WorldStore(env.world).upsert([Record("klaviyo.events", event, seconds, seconds * 1000, payload)])
    bounced.append((email, holder))


runs: list[float] = []  # how long each round's run took
due: list[float] = []
dated: list[str] = []  # the ticket dated ahead


def _date_ahead(env: Env) -> None:
    """A support user, alone on its profile, says it was created a little in the future, and so does a ticket: each
    counted, and the ticket on its requester's timeline, once it is past."""
    [(user_id,)] = env.pipeline.query("""
        SELECT min(record_id) FROM identity.record_profiles WHERE stream = 'zendesk.users' AND profile_id IN (
            SELECT profile_id FROM identity.record_profiles GROUP BY profile_id HAVING count(*) = 1)""")
    [(ticket_id,)] = env.pipeline.query("SELECT min(ticket_id) FROM staging.zendesk__tickets WHERE NOT is_deleted")
    # Twice the longest run so far ahead: the build of the round that dates it, lighter than the longest, still sees
    # it in the future, and the next round waits for it no longer than it must, on a fast host or a slow one.
    due.append(time.time() + 2 * max(runs))
    ahead = int(due[-1])
    _touch(env, "zendesk.users", user_id, lambda payload: payload.update(created_at=zendesk_time(ahead)))
    # A ticket is updated no earlier than it is created (its contract), so it says both at once.
    _touch(env, "zendesk.tickets", ticket_id, lambda payload: payload.update(created_at=zendesk_time(ahead)), ahead)
    dated.append(ticket_id)


def _time_passing(env: Env) -> None:
    """No change at all, but the clock passes the time the user gave."""
    while time.time() < due[-1] + 1:
        time.sleep(0.2)


CHANGES: dict[str, Callable[[Env], None]] = {
    "a tick of the world": lambda env: env.sandbox.control("tick", "POST", changes=30),
    "a merge": _merge,
    "a ticket changing hands": _move_ticket,
    "a record quarantined": _quarantine,
    "an address refused on another profile": _refuse_an_address_another_profile_holds,
    "a newcomer with no address": _newcomer,
    "a refusal only the consent ledger reads": _refusal_only_the_ledger_reads,
    "a company renamed": _company_renamed,
    "a company moving domain": _company_moving_domain,
    "a shared work address bouncing": _bounce_on_another_holder,
    "a shared address changing hands": _shared_address_changing_hands,
    "a record dated ahead": _date_ahead,
    "its time passing": _time_passing,
    "another tick": lambda env: env.sandbox.control("tick", "POST", changes=30),
}
NO_RECORD = (("its time passing",), ("a shared work address bouncing",))  # rounds changing no record
# Each round makes its changes, then runs. Changes to records of different people share a round (each reaches its
# own profiles, which the comparison with a whole build checks all the same); the merge, the ticks and the clock
# have one each, as does the address changing hands.
ROUNDS: list[tuple[str, ...]] = [
    ("a tick of the world",), ("a merge",), ("a ticket changing hands", "a record quarantined"),
    ("an address refused on another profile", "a newcomer with no address"),
    ("a refusal only the consent ledger reads", "a company renamed", "a company moving domain"),
    ("a shared address changing hands",), ("a shared work address bouncing",),
    ("a record dated ahead",), ("its time passing",), ("another tick",),
]


COMPARED = (  # the tables made by following the log, or from what an earlier build kept (accounts: domains met)
    "identity.identifiers", "identity.normalised_values", "identity.person_profiles", "identity.email_addresses",
    ACCOUNTS, ACCOUNT_PEOPLE,
    "identity.email_holders", "identity.person_lifecycle", "views.customer_timeline", consent.LEDGER,
    *consent.TABLES, *(f"views.{name}" for name in following.FOLLOWING),
)


def _differing(made: Path, whole: Path) -> dict[str, tuple[int, int]]:
    """Per table of COMPARED, rows only in `made` and only in `whole`."""
    with duckdb.connect() as conn:
        conn.execute(f"ATTACH '{made}' AS made (READ_ONLY); ATTACH '{whole}' AS whole (READ_ONLY)")
        return {table: tuple(
            conn.execute(f"SELECT count(*) FROM (FROM {x}.{table} EXCEPT ALL FROM {y}.{table})").fetchall()[0][0]
            for x, y in (("made", "whole"), ("whole", "made"))
        ) for table in COMPARED}  # type: ignore[misc]


def test_hourly_profiles_follow_their_changes_and_equal_a_whole_build(
    start: Callable[..., Env], tmp_path: Path
) -> None:
    env = start(syncs=False)  # the test world after one run
    for made in ROUNDS:
        change = " and ".join(made)
        for name in made:
            CHANGES[name](env)
        started = time.monotonic()
        outcome = env.pipeline.run(selection=PROFILES)
        runs.append(time.monotonic() - started)
        assert outcome.success, change
        read = outcome.metadata["identity/identifiers"]
        assert read["followed_changes"] is True, change
        # The clock passing and an email event change no record; a quarantined contact and a company are on no profile.
        no_person = set(made) <= {"a refusal only the consent ledger reads", "a company renamed",
                                  "a company moving domain"}
        assert read["records_read"] > 0 or no_person or made in NO_RECORD, (change, read)
        if set(made) & {"a tick of the world", "a merge", "another tick"}:  # the graph took what identifiers logged
            assert outcome.metadata["identity/identity_graph"]["profiles_resolved"] > 0, change
        profiles = outcome.metadata["identity/person_profiles"]
        assert profiles["followed_changes"] is True, change
        assert profiles["profiles_made"] > 0 or no_person, (change, profiles)
        assert profiles["profiles_made"] < profiles["profiles"] / 2, (change, profiles)
        addresses = outcome.metadata["identity/email_addresses"]
        assert addresses["followed_changes"] is True, change
        assert addresses["addresses_made"] > 0 or no_person, (change, addresses)
        assert addresses["addresses_made"] < addresses["addresses"] / 2, (change, addresses)
        accounts = outcome.metadata["identity/accounts"]
        assert accounts["followed_changes"] is True, change
        assert accounts["profiles_relinked"] < profiles["profiles"] / 2, (change, accounts)
        lifecycles = outcome.metadata["identity/person_lifecycle"]
        assert lifecycles["followed_changes"] is True, change
        assert lifecycles["profiles_made"] < profiles["profiles"] / 2, (change, lifecycles)
        timelines = outcome.metadata["views/customer_timeline"]
        assert timelines["followed_changes"] is True, change
        assert timelines["profiles_made"] < profiles["profiles"] / 2, (change, timelines)
        decided = outcome.metadata["privacy/consent"]
        assert decided["followed_changes"] is True, change
        assert decided["profiles_decided"] > 0, (change, decided)
        assert decided["profiles_decided"] < profiles["profiles"] / 2, (change, decided)
        for name in following.FOLLOWING:
            view = outcome.metadata[f"views/{name}"]
            assert view["followed_changes"] is True, (change, name)
            assert view["profiles_made"] > 0, (change, name, view)
            assert view["profiles_made"] < profiles["profiles"] / 2, (change, name, view)
        if set(made) & {"a record dated ahead", "its time passing"}:  # on its requester's timeline once it is past
            [(shown,)] = env.pipeline.query("SELECT count(*) FROM views.customer_timeline WHERE stream = "
                                            "'zendesk.tickets' AND record_id = $id", {"id": dated[-1]})
            assert shown == ("its time passing" in made), change
        if "a ticket changing hands" in made:  # on its new requester's timeline, and on no other
            [(holders, requester)] = env.pipeline.query("""
                SELECT (SELECT list(DISTINCT profile_id) FROM views.customer_timeline
                        WHERE stream = 'zendesk.tickets' AND record_id = $ticket),
                       (SELECT [profile_id] FROM identity.record_profiles
                        WHERE stream = 'zendesk.users' AND record_id = $user)""",
                dict(zip(("ticket", "user"), handed[-1], strict=True)))
            assert holders == requester, change
        if "a record quarantined" in made:  # out of staging and off every profile
            assert env.pipeline.query("""
                SELECT (SELECT count(*) FROM staging.zendesk__users WHERE user_id = $id),
                       (SELECT count(*) FROM identity.record_profiles WHERE stream = 'zendesk.users'
                                                                        AND record_id = $id)""",
                {"id": quarantined[-1]}) == [(0, 0)], change
        if "an address refused on another profile" in made:
            [(state,)] = env.pipeline.query("SELECT state FROM privacy.address_consent WHERE email = $email AND"
                                            " profile_id = $owner AND purpose = 'email_marketing'",
                                            dict(zip(("email", "owner"), refused[-1], strict=True)))
            assert state == "denied", change
        if "a refusal only the consent ledger reads" in made:  # denied in consent and the view, no profile made
            [(allowed, purposes)] = env.pipeline.query(
                "SELECT c.allowed, v.purposes FROM privacy.consent c JOIN views.customer_360 v USING (profile_id)"
                " WHERE c.profile_id = $id AND c.purpose = 'email_marketing'", {"id": ledger_only[-1]})
            assert not allowed and "email_marketing" not in purposes, change
        if "a company renamed" in made:
            [(name,)] = env.pipeline.query("SELECT account_name FROM views.customer_360 WHERE profile_id = $id",
                                           {"id": renamed[-1][0]})
            assert name == renamed[-1][1], change
        if "a company moving domain" in made:  # its contacts at the new domain's account, none at the old one's
            [(at_new, at_old)] = env.pipeline.query("""
                SELECT count(*) FILTER (WHERE a.domain = $domain), count(*) FILTER (WHERE ap.account_id = $old)
                FROM identity.account_people ap LEFT JOIN identity.accounts a USING (account_id)
                WHERE list_contains(ap.via, 'hubspot_association')""",
                {"domain": moved_companies[-1][1], "old": moved_companies[-1][2]})
            assert at_new > 0 and at_old == 0, (change, at_new, at_old)
        if "a shared work address bouncing" in made:  # its other holder no longer linked by it
            [(linked,)] = env.pipeline.query("""
                SELECT count(*) FROM identity.account_people ap JOIN identity.accounts a USING (account_id)
                WHERE ap.profile_id = $holder AND list_contains(ap.via, 'email_domain')
                  AND a.domain = (SELECT domain FROM identity.email_addresses WHERE email = $email)""",
                dict(zip(("email", "holder"), bounced[-1], strict=True)))
            assert linked == 0, change
        if "a shared address changing hands" in made:  # on the user's profile now, and on that one alone
            [(owners, holder)] = env.pipeline.query("""
                SELECT (SELECT list(DISTINCT profile_id) FROM privacy.address_consent WHERE email = $email),
                       (SELECT [profile_id] FROM identity.record_profiles WHERE stream = 'zendesk.users'
                                                                           AND record_id = $user)""",
                dict(zip(("email", "user"), moved[-1], strict=True)))
            assert owners == holder, change
        if "a newcomer with no address" in made:  # a row per purpose, on a profile of its own
            [(purposes, records)] = env.pipeline.query("""
                SELECT count(DISTINCT c.purpose), count(DISTINCT (o.stream, o.record_id))
                FROM identity.record_profiles rp JOIN identity.record_profiles o USING (profile_id)
                LEFT JOIN privacy.consent c USING (profile_id)
                WHERE rp.stream = 'zendesk.users' AND rp.record_id = $id""", {"id": newcomers[-1]})
            assert (purposes, records) == (len(consent.load().purposes), 1), change
        whole = tmp_path / "whole.duckdb"
        shutil.copy(env.pipeline.warehouse, whole)
        with duckdb.connect(str(whole)) as conn:
            [(records,)] = conn.execute("SELECT count(DISTINCT (stream, record_id)) FROM identity.identifiers"
                                        ).fetchall()
            assert read["records_read"] < records / 2, (change, read, records)
            conn.execute(f"DELETE FROM {changes.POSITIONS}")  # no position: every record read, every profile made
            assert identifiers.build(conn, load_rules(), follow=True)["followed_changes"] is False
            assert build_person_profiles(conn).whole == "no earlier build"
            assert build_email_addresses(conn).whole == "no earlier build"
            [(as_of,)] = conn.execute("SELECT any_value(as_of) FROM identity.person_lifecycle").fetchall()
            assert lifecycle.build(conn, as_of).whole == "no earlier build"  # as of the same moment
            conn.execute(f"DROP TABLE {DOMAINS}")  # every company domain normalised again
            assert build_accounts(conn).whole == "no earlier build"
            assert timeline.build(conn)["followed_changes"] is False  # as of the same moment, the lifecycle's
            # A ledger of other columns (as an older release left it) is written whole, every statement made again.
            conn.execute(f"ALTER TABLE {consent.LEDGER} ADD COLUMN retired INTEGER")
            assert consent.build_ledger(conn, consent.load()) is None
            assert consent.build_consent(conn, consent.load()).whole == "no earlier build"
            for name in following.FOLLOWING:
                assert build.build(conn, policy.load(), name)["followed_changes"] is False, name
        assert _differing(env.pipeline.warehouse, whole) == dict.fromkeys(COMPARED, (0, 0)), change


def _logged_ids(entity: str) -> set[str]:
    """The ids the change log keeps of a replaced row of `entity`: its key and its stream's linked_ids."""
    source, name = entity.split("__", 1)
    [stream] = [s for s in SOURCES[source].streams.values() if s.entity == name]
    return {primary_key(entity), *stream.linked_ids}


def test_the_log_keeps_every_id_a_follower_reads_of_a_replaced_row() -> None:
    """A follower finds where a row hung before only through the ids the log kept: a column it reads that the
    stream does not declare among its linked_ids would be NULL there, and the old owner never made again."""
    read = {entity: {column} for entity, (_, column) in profile_changes.OWNERS.items()}
    for source in load_rules().sources:
        read.setdefault(source.table.removeprefix("staging."), set()).add(source.key)
    for entity, columns in read.items():
        assert columns <= _logged_ids(entity), (entity, columns - _logged_ids(entity))
    for entity in {f"{s}__{st.entity}" for s, r in SOURCES.items() for st in r.streams.values()}:
        mapped = {column.name for column in MAPPINGS[entity]}
        assert _logged_ids(entity) - {primary_key(entity)} <= mapped, entity


def _abandon_a_checkout(env: Env) -> str:
    """A person with no subscription, whose address may be emailed, starts a checkout now (a new Stripe customer with
    their address, and its creation event) and leaves: returns their profile, which the next run puts in the
    abandoned_checkout audience until its window closes. One with no product event or ticket, whose lifecycle the
    clock never makes again."""
    [(profile_id, email, first, last)] = env.pipeline.query("""
        SELECT p.profile_id, ca.email, p.first_name, p.last_name FROM identity.person_profiles p
        JOIN identity.person_lifecycle l USING (profile_id) JOIN privacy.consented_addresses ca USING (profile_id)
        WHERE p.is_active AND l.subscriptions = 0 AND l.last_product_at IS NULL AND p.tickets = 0
          AND ca.purpose = 'email_marketing'
        ORDER BY hash(p.profile_id) LIMIT 1""")
    store = WorldStore(env.world)
    template = next(iter(store.scan("stripe.customers")))
    now = _after_last_pull(env, "stripe.customers")
    payload = {**template.payload, "id": "cus_Abandoned0001", "created": now, "email": email,
               "name": f"{first} {last}", "phone": None, "metadata": {}}
    event = {"id": "evt_Abandoned0001", "object": "event", "type": "customer.created", "created": now,
             "api_version": "2024-06-20", "data": {"object": payload}}
    store.upsert([Record("stripe.customers", payload["id"], now, now * 1000, payload),
                  Record("stripe.events", event["id"], now, now * 1000, event)])
    return profile_id


def _use_the_product(env: Env) -> None:
    """A product user uses the product now: an event the lifecycle's 7- and 30-day windows hold until the clock takes
    it out of them (the world's own history ends months before today, so without it which window a build crosses
    would hang on the time of day)."""
    store = WorldStore(env.world)
    template = next(record for record in store.scan("mixpanel.events") if record.payload.get("event")
                    not in lifecycle.NOT_ACTIVITY and isinstance(record.payload.get("properties"), dict)
                    and isinstance(record.payload["properties"].get("$user_id"), str))  # fmt: skip
    now, insert_id = int(time.time()) - 1, uuid.uuid4().hex
    properties = {**template.payload["properties"], "time": now, "$insert_id": insert_id,
                  "mp_processing_time_ms": now * 1000}  # fmt: skip
    event = {**template.payload, "properties": properties}
    store.upsert([Record("mixpanel.events", insert_id, now, now * 1000, event)])


def test_lifecycles_follow_the_clock_out_of_their_windows(start: Callable[..., Env], tmp_path: Path) -> None:
    """With nothing staged changed, a following build a week and then a month later makes again the lifecycles whose
    product events or bad ratings left a window in between, and the views of people follow them, the audiences by
    their clocks too (a checkout abandoned a month ago is no longer recent): each ends with the rows of a whole build
    at that moment."""
    tables = ("identity.person_lifecycle", *(f"views.{name}" for name in following.FOLLOWING))
    env = start(syncs=False)
    abandoned = _abandon_a_checkout(env)
    _use_the_product(env)
    assert env.pipeline.run(selection=PROFILES).success
    member = ("SELECT count(*) FROM views.marketing_audiences WHERE profile_id = $id"
              " AND audience = 'abandoned_checkout'")  # fmt: skip
    assert env.pipeline.query(member, {"id": abandoned}) == [(1,)]
    followed, whole = tmp_path / "followed.duckdb", tmp_path / "whole.duckdb"
    shutil.copy(env.pipeline.warehouse, followed)
    with duckdb.connect(str(followed)) as conn:
        [(as_of,)] = conn.execute("SELECT any_value(as_of) FROM identity.person_lifecycle").fetchall()
    for days in (8, 31):
        later = as_of + timedelta(days=days)
        with duckdb.connect(str(followed)) as conn:
            position = lifecycle.build(conn, later)
            [(made,)] = conn.execute(f"SELECT count(*) FROM {profile_changes.AFFECTED}").fetchall()
            [(profiles,)] = conn.execute("SELECT count(*) FROM identity.person_lifecycle").fetchall()
            for name in following.FOLLOWING:
                assert build.build(conn, policy.load(), name)["followed_changes"] is True, (days, name)
            # Nothing of theirs changed: only the audience's clock makes them again, a month on.
            assert conn.execute(member, {"id": abandoned}).fetchall() == [(int(days < 30),)], days
        assert position.whole is None and 0 < made < profiles, (days, made, profiles)
        shutil.copy(followed, whole)
        with duckdb.connect(str(whole)) as conn:
            conn.execute(f"DELETE FROM {changes.POSITIONS}")
            assert lifecycle.build(conn, later).whole == "no earlier build"
            for name in following.FOLLOWING:
                assert build.build(conn, policy.load(), name)["followed_changes"] is False, (days, name)
        with duckdb.connect() as conn:
            conn.execute(f"ATTACH '{followed}' AS followed (READ_ONLY); ATTACH '{whole}' AS whole (READ_ONLY)")
            differing = {table: tuple(conn.execute(f"SELECT count(*) FROM (FROM {x}.{table} EXCEPT ALL "
                                              f"FROM {y}.{table})").fetchall()[0][0]
                                 for x, y in (("followed", "whole"), ("whole", "followed"))) for table in tables}
        assert differing == dict.fromkeys(tables, (0, 0)), days

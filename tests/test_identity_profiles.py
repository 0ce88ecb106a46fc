"""Person profiles, email addresses and accounts on a real pipeline run, checked against the world's payloads.

Expected numbers are recomputed in Python from the world's JSON payloads of the records staging holds (bad
records on purpose are quarantined and never count), grouped by the profile the identity graph put each
record in, after a tick that deleted and archived records in every person stream. So these tests check the
profile layer's arithmetic and survivorship whatever the graph decided; the graph is scored in test_identity.
"""

from __future__ import annotations

import fnmatch
import hashlib
import math
import re
import shutil
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import duckdb

from cdp_assets.identity import identifiers, normalise
from cdp_assets.identity.profiles import TRAITS
from cdp_assets.identity.rules import load as load_identity_rules
from sandbox.pools import COUNTRIES, JUNK_PROVIDERS
from sandbox.store import Record
from tests.conftest import Profiled

# Where each person-level stream keeps its email and the column holding the graph's record id in staging.
EMAIL_PATHS = {
    "stripe.customers": (("email",), "staging.stripe__customers", "customer_id"),
    "hubspot.contacts": (("properties", "email"), "staging.hubspot__contacts", "contact_id"),
    "zendesk.users": (("email",), "staging.zendesk__users", "user_id"),
    "klaviyo.profiles": (("attributes", "email"), "staging.klaviyo__profiles", "profile_id"),
    "mixpanel.events": (("properties", "email"), "staging.mixpanel__events", "insert_id"),
}
# Stated here, not imported from the code under test, so a wrong classification there fails these tests.
RUNNING_STATUSES = ("active", "trialing", "past_due", "unpaid", "paused")
MRR_STATUSES = ("active", "past_due")  # trials and unpaid subscriptions bring no recurring revenue
CLOSED_TICKET_STATUSES = ("solved", "closed", "deleted")
# The sandbox's webmail and throwaway providers: no account may come from them.
NOT_WORK_DOMAINS = sorted({provider for country in COUNTRIES for provider in country.providers} | set(JUNK_PROVIDERS))
VALID_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[a-z]{2,}")


def email_of(record: Record) -> str | None:
    value: Any = record.payload
    for key in EMAIL_PATHS[record.stream][0]:
        value = value.get(key) if isinstance(value, dict) else None
    email = value.strip().lower() if isinstance(value, str) else None
    return email if email and VALID_EMAIL.fullmatch(email) else None


def test_person_numbers_match_the_world(profiled: Profiled) -> None:
    owners = profiled.owners()
    customer_of = {r.id: owners[key] for r in profiled.scan("stripe.customers") if (key := (r.stream, r.id)) in owners}
    staged_invoices = profiled.staged("staging.stripe__invoices", "invoice_id")
    staged_subscriptions = profiled.staged("staging.stripe__subscriptions", "subscription_id")
    staged_tickets = profiled.staged("staging.zendesk__tickets", "ticket_id")
    staged_events = profiled.staged("staging.klaviyo__events", "event_id")

    revenue, mrr, running, ended, subscriptions = Counter(), Counter(), Counter(), Counter(), Counter()
    for r in profiled.scan("stripe.invoices"):
        p = r.payload
        if r.id in staged_invoices and p["customer"] in customer_of and p["status"] == "paid" and p["amount_paid"] > 0:
            revenue[customer_of[p["customer"]]] += p["amount_paid"]
    for r in profiled.scan("stripe.subscriptions"):
        if r.id not in staged_subscriptions or r.payload["customer"] not in customer_of:
            continue
        person, status, item = customer_of[r.payload["customer"]], r.payload["status"], r.payload["items"]["data"][0]
        subscriptions[person] += 1
        running[person] += status in RUNNING_STATUSES
        ended[person] += status == "canceled"
        if status in MRR_STATUSES:
            months = 12 if item["price"]["recurring"]["interval"] == "year" else 1
            # the glossary: each subscription to the cent, halves away from zero
            mrr[person] += math.floor(item["price"]["unit_amount"] * item["quantity"] / months + 0.5)
    user_of = {r.id: owners[key] for r in profiled.scan("zendesk.users") if (key := (r.stream, r.id)) in owners}
    open_tickets = Counter(
        user_of[str(r.payload["requester_id"])]
        for r in profiled.scan("zendesk.tickets")
        if r.id in staged_tickets and not r.archived and r.payload["status"] not in CLOSED_TICKET_STATUSES
    )
    metric = {r.id: r.payload["attributes"]["name"] for r in profiled.scan("klaviyo.metrics")}
    klaviyo_of = {r.id: owners[key] for r in profiled.scan("klaviyo.profiles") if (key := (r.stream, r.id)) in owners}
    opens, sends = Counter(), Counter()
    for r in profiled.scan("klaviyo.events"):
        person = klaviyo_of.get(r.payload["relationships"]["profile"]["data"]["id"])
        name = metric[r.payload["relationships"]["metric"]["data"]["id"]]
        if r.id in staged_events and person:
            opens[person] += name == "Opened Email"
            sends[person] += name in ("Received Email", "Bounced Email")
    staged_product_events = profiled.staged("staging.mixpanel__events", "insert_id")
    first_touch: dict[str, tuple[float, str]] = {}
    for r in profiled.scan("mixpanel.events"):
        if r.id not in staged_product_events:
            continue
        props, t = r.payload["properties"], r.payload["properties"].get("time")
        utm = [props[k] for k in ("utm_source", "utm_medium", "utm_campaign") if props.get(k)]
        person = owners[(r.stream, r.id)]
        if (
            utm
            and isinstance(t, int)
            and t <= time.time()
            and (person not in first_touch or t < first_touch[person][0])
        ):
            first_touch[person] = (t, " / ".join(utm))

    profiles = profiled.rows("SELECT * FROM identity.person_profiles")
    assert len(profiles) == len({person for (stream, _), person in owners.items() if stream in EMAIL_PATHS})
    assert sum(revenue.values()) > 0 and sum(open_tickets.values()) > 0 and sum(opens.values()) > 0
    for p in profiles:
        person = p["profile_id"]
        assert p["lifetime_revenue_cents"] == revenue[person], person
        assert p["mrr_cents"] == round(mrr[person]), person
        assert p["open_tickets"] == open_tickets[person], person
        assert (p["email_opens"], p["email_sends"]) == (opens[person], sends[person]), person
        assert p["first_touch_channel"] == first_touch.get(person, (0, "direct"))[1], person
        churned = subscriptions[person] > 0 and ended[person] == subscriptions[person]
        assert (p["lifecycle_stage"] == "churned") == churned, person
        if running[person]:
            assert p["lifecycle_stage"] in ("customer", "evangelist"), person
    assert profiled.metadata["identity/person_profiles"]["profiles"] == len(profiles)


def test_the_golden_email_comes_from_the_most_trusted_live_record_then_the_latest(profiled: Profiled) -> None:
    trust = [candidate.stream for candidate in TRAITS["email"]]
    owners = profiled.owners()
    live: dict[str, dict[str, dict[str, str]]] = defaultdict(lambda: defaultdict(dict))  # person, stream, record
    for stream, (_, table, key) in EMAIL_PATHS.items():
        staged = profiled.staged(table, key)
        for r in profiled.scan(stream):
            if r.id in staged and not r.archived and (email := email_of(r)):
                live[owners[(stream, r.id)]][stream][r.id] = email
    changed = {
        (stream, row["record_id"]): row["changed_at"]
        for stream, (_, table, key) in EMAIL_PATHS.items()
        for row in profiled.rows(f"SELECT {key} AS record_id, source_updated_at AS changed_at FROM {table}")
    }
    profiles = {p["profile_id"]: p for p in profiled.rows("SELECT * FROM identity.person_profiles")}
    # A value several people use (a team mailbox) is golden only for a profile with no address of its own.
    shared = {row["value"] for row in profiled.rows("SELECT value FROM identity.shared_values WHERE id_type = 'email'")}
    identity_rules = load_identity_rules()
    for person, streams in live.items():
        own = {stream: kept for stream, records in streams.items()
               if (kept := {r: e for r, e in records.items() if normalise.email(e, identity_rules) not in shared})}
        candidates = own or streams
        best = min(candidates, key=trust.index)
        p = profiles[person]
        assert p["email_source"] == best, person
        assert candidates[best][p["email_record_id"]] == p["email"], person
        assert p["email_at"] == max(changed[(best, record)] for record in candidates[best]), person
    deleted_only = [p for p in profiles.values() if not p["is_active"]]
    assert all(p["profile_id"] not in live for p in deleted_only)
    # The tick archived CRM contacts whose address staging still holds: a live record of a less trusted source won.
    [outranked] = profiled.rows(
        "SELECT count(DISTINCT p.profile_id) AS n FROM identity.person_profiles p"
        " JOIN identity.record_profiles rp USING (profile_id) JOIN identity.identifiers i USING (stream, record_id)"
        " JOIN staging.hubspot__contacts c ON c.contact_id = rp.record_id"
        " WHERE c.is_deleted AND p.email_source <> 'hubspot.contacts'"
    )
    assert outranked["n"] > 0


def test_each_address_has_its_own_row_and_engagement(profiled: Profiled) -> None:
    staged_events = profiled.staged("staging.klaviyo__events", "event_id")
    staged_profiles = profiled.staged("staging.klaviyo__profiles", "profile_id")
    address = {r.id: e for r in profiled.scan("klaviyo.profiles") if r.id in staged_profiles and (e := email_of(r))}
    metric = {r.id: r.payload["attributes"]["name"] for r in profiled.scan("klaviyo.metrics")}
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    hours: dict[str, Counter[int]] = defaultdict(Counter)
    for r in profiled.scan("klaviyo.events"):
        email = address.get(r.payload["relationships"]["profile"]["data"]["id"])
        if r.id not in staged_events or email is None:
            continue
        name, t = metric[r.payload["relationships"]["metric"]["data"]["id"]], r.payload["attributes"]["timestamp"]
        counts[email][name] += 1
        hard = r.payload["attributes"]["event_properties"].get("Bounce Type") == "hard"
        counts[email]["hard"] += name == "Bounced Email" and hard
        if name in ("Opened Email", "Clicked Email") and t <= time.time():
            hours[email][time.gmtime(t).tm_hour] += 1

    rows = {row["email"]: row for row in profiled.rows("SELECT * FROM identity.email_addresses")}
    assert set(address.values()) <= rows.keys()
    for email in set(address.values()):
        row, seen = rows[email], counts[email]
        best = min(hours[email].items(), key=lambda hour: (-hour[1], hour[0]))[0] if hours[email] else None
        sends = seen["Received Email"] + seen["Bounced Email"]
        assert (row["sends"], row["opens"], row["clicks"]) == (sends, seen["Opened Email"], seen["Clicked Email"])
        assert row["bounces"] == seen["Bounced Email"], email
        assert row["hard_bounced"] == (seen["hard"] > 0), email
        assert row["best_send_hour"] == best, email
    assert not [row for row in rows.values() if row["is_work"] and (row["is_free_mail"] or row["is_disposable"])]
    assert any(row["hard_bounced"] and row["is_work"] for row in rows.values())  # job changers' old addresses
    kinds = defaultdict(set)
    for row in rows.values():
        kinds[row["profile_id"]].add(row["is_work"])
    assert sum(kinds_ == {True, False} for kinds_ in kinds.values()) > 0  # work and home addresses, one row each


def test_accounts_gather_crm_contacts_and_live_work_addresses(profiled: Profiled) -> None:
    owners = profiled.owners()
    staged_contacts = profiled.staged("staging.hubspot__contacts", "contact_id")
    live_contacts = {r.id for r in profiled.scan("hubspot.contacts") if r.id in staged_contacts and not r.archived}
    domain_of = {r.id: r.payload["properties"]["domain"] for r in profiled.scan("hubspot.companies") if not r.archived}
    expected: dict[str, set[str]] = defaultdict(set)
    for r in profiled.scan("hubspot.contact_companies"):
        for company in r.payload["to"]:
            if r.id in live_contacts and str(company["toObjectId"]) in domain_of:
                expected[domain_of[str(company["toObjectId"])]].add(owners[("hubspot.contacts", r.id)])
    bounced = {row["email"] for row in profiled.rows("SELECT email FROM identity.email_addresses WHERE hard_bounced")}
    patterns = NOT_WORK_DOMAINS
    for stream, (_, table, key) in EMAIL_PATHS.items():
        staged = profiled.staged(table, key)
        for r in profiled.scan(stream):
            email = email_of(r)
            if r.id in staged and not r.archived and email and email not in bounced:
                domain = email.split("@")[1]
                if not any(fnmatch.fnmatchcase(domain, pattern) for pattern in patterns):
                    expected[domain].add(owners[(stream, r.id)])

    linked: dict[str, set[str]] = defaultdict(set)
    people = (
        "SELECT a.domain, ap.profile_id FROM identity.account_people ap JOIN identity.accounts a USING (account_id)"
    )
    for row in profiled.rows(people):
        linked[row["domain"]].add(row["profile_id"])
    assert linked == expected
    accounts = profiled.rows("SELECT account_id, domain FROM identity.accounts")
    assert all(a["account_id"] == "acct_" + hashlib.md5(a["domain"].encode()).hexdigest()[:16] for a in accounts)
    primaries = Counter(
        r["profile_id"] for r in profiled.rows("SELECT * FROM identity.account_people WHERE is_primary")
    )
    assert primaries and max(primaries.values()) == 1
    identity = [meta for key, meta in profiled.metadata.items() if key.startswith("identity/")]
    assert len(identity) == 6
    assert all(isinstance(value, int | float) for meta in identity for value in meta.values())


def test_the_normalisation_memo_forgets_what_no_record_carries_and_changes_nothing(
    profiled: Profiled, tmp_path: Path
) -> None:
    """After a run around deletions, the memo holds only values current records carry; rebuilt without it,
    identity.identifiers is the same."""
    stale = profiled.pipeline.query(
        "SELECT count(*) FROM identity.normalised_values m WHERE NOT EXISTS (SELECT 1 FROM identity.identifiers i "
        "WHERE i.raw_value = m.raw_value AND i.id_type = m.id_type AND i.value = m.value)"
    )[0][0]
    assert stale == 0
    assert profiled.metadata["identity/identifiers"]["raw_values_normalised"] < (
        profiled.metadata["identity/identifiers"]["distinct_raw_values"]
    )  # the second run met most values in the memo

    copy = tmp_path / "warehouse.duckdb"
    shutil.copy(profiled.pipeline.warehouse, copy)
    everything = "SELECT * FROM identity.identifiers ORDER BY ALL"
    with duckdb.connect(str(copy)) as conn:
        remembered = conn.execute(everything).fetchall()
        conn.execute("DROP TABLE identity.normalised_values")
        identifiers.build(conn, load_identity_rules())
        assert conn.execute(everything).fetchall() == remembered

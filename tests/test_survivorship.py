"""Golden-record survivorship: the value a profile's records agree on beats a trusted misspelling of it, a
genuinely different trusted value keeps trust order, and Stripe-sourced values are timed when Stripe says they
changed, not when they were read.

The rule's decision (sql/survivors.sql) is checked on its own with hypothesis over candidate tables in memory, then
through a real pipeline run: records served by the sandbox, pulled in full, resolved and profiled.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime

import duckdb
from dagster import AssetKey, AssetSelection
from hypothesis import given, settings
from hypothesis import strategies as st

from cdp_assets.identity import explain
from cdp_assets.identity.profiles import choose_survivors
from cdp_assets.identity.rules import AgreementRule
from sandbox.store import Record, WorldStore
from tests.conftest import Env
from tests.test_privacy import serve

# Stated here, not read from rules.yaml, so a changed rule fails these tests.
RULE = AgreementRule(traits=("first_name", "last_name", "city"), min_records=2, max_edits=1, min_length=4)
CANDIDATES = (
    "CREATE OR REPLACE TABLE _trait_candidates (trait VARCHAR, trust INT, witness BOOLEAN, profile_id VARCHAR,"
    " stream VARCHAR, record_id VARCHAR, value VARCHAR, changed_at TIMESTAMPTZ, is_deleted BOOLEAN, shared BOOLEAN)"
)
# Trust order of first names as profiles.TRAITS has it; Stripe's name only witnesses.
STREAMS = (("hubspot.contacts", 0, False), ("klaviyo.profiles", 1, False), ("zendesk.users", 2, False),
           ("stripe.customers", 3, True))  # fmt: skip

names = st.text("abcdefghijklmnopqrstuvwxyz", min_size=4, max_size=10).map(str.capitalize)


@st.composite
def slips(draw: st.DrawFn) -> tuple[str, str]:
    """A name and the same name after one typing slip: a letter dropped, doubled or swapped with its neighbour."""
    name = draw(names)
    i = draw(st.integers(0, len(name) - 2))
    slip = draw(st.sampled_from(["drop", "double", "swap"]))
    if slip == "drop":
        typo = name[:i] + name[i + 1 :]
    elif slip == "double":
        typo = name[: i + 1] + name[i] + name[i + 1 :]
    else:
        typo = name[:i] + name[i + 1] + name[i] + name[i + 2 :]
    return name, typo


CONN = duckdb.connect()  # one in-memory database for every example: a connection costs more than the rule


def winners(rows: list[tuple[str, str, str, str]]) -> dict[str, tuple[str, str, str]]:
    """profile -> (value, stream, rule) for candidate rows (profile, trait, stream, value)."""
    trust = {stream: (rank, witness) for stream, rank, witness in STREAMS}
    CONN.execute(CANDIDATES)
    CONN.executemany(
        "INSERT INTO _trait_candidates VALUES (?, ?, ?, ?, ?, ?, ?, TIMESTAMPTZ '2026-01-01 00:00:00+00', false,"
        " false)",
        [(trait, *trust[stream], profile, stream, f"r{n}", value)
         for n, (profile, trait, stream, value) in enumerate(rows)],
    )  # fmt: skip
    choose_survivors(CONN, RULE)
    found = CONN.execute("SELECT profile_id, value, stream, rule FROM _trait_winners").fetchall()
    return {profile: (value, stream, rule) for profile, value, stream, rule in found}


@settings(max_examples=40, deadline=None)
@given(slips(), st.sampled_from(["klaviyo.profiles", "zendesk.users", "stripe.customers"]))
def test_a_trusted_slip_gives_way_to_the_spelling_two_records_agree_on(pair: tuple[str, str], second: str) -> None:
    name, typo = pair
    won = winners([
        ("agreed", "first_name", "hubspot.contacts", typo),
        ("agreed", "first_name", "zendesk.users", name.upper()),  # case does not split the vote
        ("agreed", "first_name", second, name),
        # One record against the trusted one is no agreement; nor is a trait the rule does not name.
        ("alone", "first_name", "hubspot.contacts", typo),
        ("alone", "first_name", second, name),
        ("company", "company", "hubspot.contacts", typo),
        ("company", "company", "zendesk.users", name),
        ("company", "company", "klaviyo.profiles", name),
    ])  # fmt: skip
    assert won["alone"] == won["company"] == (typo, "hubspot.contacts", "trust")
    if typo.lower() == name.lower():  # a doubled letter swapped with itself: no slip at all
        assert won["agreed"] == (typo, "hubspot.contacts", "trust")
        return
    value, stream, rule = won["agreed"]
    assert value.lower() == name.lower() and rule == "agreement"
    assert stream != "stripe.customers"  # a witness holds the agreed value, and a candidate that does wins


@settings(max_examples=40, deadline=None)
@given(names)
def test_a_trusted_value_two_edits_away_keeps_trust_order(trusted: str) -> None:
    different = trusted + "xq"  # two letters more: two edits from the trusted value at least
    won = winners([("p", "last_name", "hubspot.contacts", trusted)]
                  + [("p", "last_name", stream, different) for stream, _, _ in STREAMS[1:]])  # fmt: skip
    assert won["p"] == (trusted, "hubspot.contacts", "trust")


def test_a_tie_or_a_short_name_keeps_trust_order() -> None:
    won = winners([
        ("tie", "first_name", "hubspot.contacts", "Jonh"), ("tie", "first_name", "klaviyo.profiles", "John"),
        ("tie", "first_name", "zendesk.users", "Jonh"), ("tie", "first_name", "stripe.customers", "John"),
        # An agreed value shorter than four letters corrects nothing: one edit there makes another name.
        ("short", "first_name", "hubspot.contacts", "Rob"), ("short", "first_name", "klaviyo.profiles", "Bob"),
        ("short", "first_name", "zendesk.users", "Bob"),
        # The positive control: a slip in a three-letter value of a longer agreed name is corrected.
        ("control", "first_name", "hubspot.contacts", "Mke"), ("control", "first_name", "klaviyo.profiles", "Mike"),
        ("control", "first_name", "stripe.customers", "Mike"),
    ])  # fmt: skip
    assert won["tie"] == ("Jonh", "hubspot.contacts", "trust")
    assert won["short"] == ("Rob", "hubspot.contacts", "trust")
    assert won["control"] == ("Mike", "klaviyo.profiles", "agreement")


def test_an_address_of_the_profiles_own_beats_a_shared_one_whatever_its_trust() -> None:
    """A team's mailbox (identity.shared_values) reaches colleagues too: it wins only when nothing else is there."""
    CONN.execute(CANDIDATES)
    CONN.executemany(
        "INSERT INTO _trait_candidates VALUES ('email', ?, false, ?, ?, ?, ?, TIMESTAMPTZ '2026-01-01 00:00:00+00',"
        " false, ?)",
        [(0, "own", "hubspot.contacts", "1", "info@acme.example", True),
         (1, "own", "stripe.customers", "cus_1", "ada@acme.example", False),
         (0, "only", "hubspot.contacts", "2", "info@acme.example", True)],
    )  # fmt: skip
    choose_survivors(CONN, RULE)
    found = dict(CONN.execute("SELECT profile_id, value FROM _trait_winners").fetchall())
    assert found == {"own": "ada@acme.example", "only": "info@acme.example"}


def person(env: Env, key: str, hubspot: tuple[str, str], klaviyo: tuple[str, str], zendesk: str) -> str:
    """A new person in HubSpot, Klaviyo and Zendesk under one fresh address, with these names and no phone."""
    email = f"{key}.survivorship@qvistmail.com"
    serve(env, "hubspot.contacts", f"9{int(time.time()) % 10**8}{len(key)}", **{
        "properties.email": email, "properties.firstname": hubspot[0], "properties.lastname": hubspot[1],
        "properties.phone": None})  # fmt: skip
    serve(env, "klaviyo.profiles", f"01SURV{key.upper()}", **{
        "attributes.email": email, "attributes.first_name": klaviyo[0], "attributes.last_name": klaviyo[1],
        "attributes.phone_number": None})  # fmt: skip
    serve(env, "zendesk.users", f"77{len(key)}{int(time.time()) % 10**7}", email=email, name=zendesk, phone=None)
    return email


def test_golden_names_and_stripe_change_times_through_the_pipeline(start: Callable[..., Env]) -> None:
    env = start()
    jonh = person(env, "jonh", ("Jonh", "Qvistberg"), ("John", "Qvistberg"), "John Qvistberg")
    robert = person(env, "robert", ("Robert", "Hallvard"), ("Bob", "Lindqvar"), "Bob Lindqvar")

    # A Stripe customer whose city wins its profile moves; Stripe reports the change as a customer.updated event.
    [(customer, last_read)] = env.pipeline.query(
        "SELECT p.city_record_id, (SELECT max(extracted_at) FROM raw.stripe_customers) FROM identity.person_profiles p"
        " WHERE p.city_source = 'stripe.customers' ORDER BY p.profile_id LIMIT 1"
    )
    store = WorldStore(env.world)
    record = store.get("stripe.customers", customer)
    assert record is not None
    changed = max(int(time.time()), int(last_read.timestamp()) + 1)
    while time.time() < changed:  # a change after the last read, in Stripe's whole seconds
        time.sleep(0.05)
    payload = json.loads(json.dumps(record.payload))
    payload["address"]["city"] = "Tromsø"
    event = {"id": "evt_survivorship1", "object": "event", "type": "customer.updated", "created": changed,
             "api_version": "2024-06-20", "data": {"object": payload, "previous_attributes": {}}}  # fmt: skip
    store.upsert([Record("stripe.customers", customer, record.created, changed * 1000, payload),
                  Record("stripe.events", event["id"], changed, changed * 1000, event)])  # fmt: skip

    profiles = AssetSelection.assets(AssetKey(["identity", "person_profiles"])).upstream()
    assert env.pipeline.run(full=True, selection=profiles).success

    def golden(email: str) -> tuple[object, ...]:
        [row] = env.pipeline.query(
            "SELECT first_name, first_name_rule, first_name_source, last_name, last_name_rule"
            " FROM identity.person_profiles WHERE email = $email",
            {"email": email},
        )
        return row

    assert golden(jonh) == ("John", "agreement", "klaviyo.profiles", "Qvistberg", "trust")
    assert golden(robert) == ("Robert", "trust", "hubspot.contacts", "Hallvard", "trust")
    with duckdb.connect(str(env.pipeline.warehouse), read_only=True) as conn:  # what `cdp profile explain` shows
        [(profile,)] = conn.execute(
            "SELECT profile_id FROM identity.person_profiles WHERE email = $e", {"e": jonh}
        ).fetchall()
        shown = {t["trait"]: (t["value"], t["rule"]) for t in explain.explain(conn, profile).traits}
    assert shown["first_name"] == ("John", "agreement") and shown["last_name"] == ("Qvistberg", "trust")

    [(city, city_at, read_at)] = env.pipeline.query(
        "SELECT p.city, p.city_at, (SELECT max(extracted_at) FROM raw.stripe_customers)"
        " FROM identity.person_profiles p WHERE p.city_record_id = $customer AND p.city_source = 'stripe.customers'",
        {"customer": customer},
    )
    assert city == "Tromsø"
    assert city_at == datetime.fromtimestamp(changed, UTC) < read_at
    # No Stripe-sourced value is timed at its extraction: a customer with no event in reach is timed no later than
    # the start of that reach or its creation.
    [(extraction_timed, stripe_timed)] = env.pipeline.query(
        "SELECT count(*) FILTER (WHERE p.city_at = s._extracted_at), count(*) FROM identity.person_profiles p"
        " JOIN staging.stripe__customers s ON s.customer_id = p.city_record_id WHERE p.city_source = 'stripe.customers'"
    )
    assert stripe_timed > 10 and extraction_timed == 0

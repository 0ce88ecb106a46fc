"""A request reaches the whole person: a person identity keeps over two profiles is exported and deleted whole, and
a value two different people share (a household's phone) takes no one else along; they are listed for review.

The world's own people split over two profiles are joined by nothing the warehouse holds (an anonymous product
profile) or by a match under review, so the test makes the split identity keeps apart by a limit: a second record of
a person, with another address and product login, carrying the person's phone. Linking it would give one profile two
logins (`user_id` limit 1), so the link is refused and the record gets a profile of its own. A record of someone else
carrying another person's phone is kept apart the same way.
"""

from __future__ import annotations

import csv
import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import duckdb
import pytest

from cdp_assets.privacy import subject
from cdp_assets.privacy.paths import PERSON_STREAMS
from sandbox.runner import SandboxServer
from tests.conftest import TEST_SANDBOX_CONFIG, Env, Pipeline
from tests.test_privacy import (
    SHARED_CASES,
    carried,
    cli,
    destinations_holding,
    landed,
    process,
    requests_table,
    resolved,
    serve,
    traces,
    truth,
)

SAME_PERSON = ("369999990101", "qx.second.inbox@fastmail.com", "u_qx0101")  # Zendesk id, address, product login
HOUSEHOLD = ("369999990102", "zoe.qxlund@fastmail.com", "u_qx0102")


@dataclass
class Split:
    """The world after one run: a person with a second record under their name and phone, and a person whose phone
    a record of someone else in their household carries; (profile id, the other record's profile id) each."""

    env: Env
    same_person: tuple[str, str]
    household: tuple[str, str]


def holders_of_a_phone(env: Env) -> list[tuple[str, str, str]]:
    """(profile id, full name, phone) of profiles that are exactly one person of the world's truth (as `resolved`
    picks them), with a name, an address, a product login and a phone no other profile's records carry."""
    rows = env.pipeline.query(
        "SELECT p.profile_id, p.first_name || ' ' || p.last_name, p.phone FROM identity.person_profiles p"
        " WHERE p.product_user_id IS NOT NULL AND p.first_name IS NOT NULL AND p.last_name IS NOT NULL"
        " AND p.email IS NOT NULL AND (SELECT count(DISTINCT rp.profile_id) FROM identity.identifiers i"
        "   JOIN identity.record_profiles rp USING (stream, record_id) WHERE i.id_type = 'phone'"
        "   AND i.value = p.phone) = 1 ORDER BY p.profile_id"
    )
    owners: dict[str, set[tuple[str, str]]] = {}
    for profile_id, stream, record_id in env.pipeline.query("SELECT profile_id, stream, record_id FROM"
                                                            " identity.record_profiles"):  # fmt: skip
        owners.setdefault(profile_id, set()).add((stream, record_id))
    profile_of = {record: profile for profile, records in owners.items() for record in records}
    with (env.world / "cases.csv").open() as f:
        shared = {int(row["person_id"]) for row in csv.DictReader(f) if row["case"] in SHARED_CASES}
    present = landed(env)
    exact = set()
    for person_id, records in truth(env.world).items():
        profiles = {profile_of.get(r) for r in records & present if r[0] in PERSON_STREAMS}
        if person_id not in shared and len(profiles) == 1 and (profile := profiles.pop()) in owners and \
                owners[profile] <= records:  # fmt: skip
            exact.add(profile)
    return [row for row in rows if row[0] in exact]


def zendesk_user(env: Env, given: tuple[str, str, str], name: str, phone: str) -> tuple[str, str]:
    record_id, email, login = given
    return serve(env, "zendesk.users", record_id, name=name, email=email, phone=phone, external_id=login,
                 locale="en-US")  # fmt: skip


def profile_of(env: Env, stream: str, record_id: str) -> str:
    [(profile_id,)] = env.pipeline.query(
        "SELECT profile_id FROM identity.record_profiles WHERE stream = $s AND record_id = $r",
        {"s": stream, "r": record_id},
    )
    return profile_id


@pytest.fixture(scope="module")
def split(unsynced: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Split]:
    """One pipeline run (pulls, every layer, syncs) for both cases, on a copy of the unsynced world."""
    folder = tmp_path_factory.mktemp("whole-person")
    shutil.copytree(unsynced / "world", folder / "world")
    shutil.copy(unsynced / "warehouse.duckdb", folder / "warehouse.duckdb")
    with SandboxServer(folder / "world", TEST_SANDBOX_CONFIG) as server:
        env = Env(folder / "world", server, Pipeline(server.url, folder / "warehouse.duckdb", syncs=True))
        (same, name, phone), (household, _, shared_phone), *_ = holders_of_a_phone(env)
        second = zendesk_user(env, SAME_PERSON, name, phone)  # the same person: their name, their phone
        other = zendesk_user(env, HOUSEHOLD, "Zoe Qxlund", shared_phone)  # someone else, at the same number
        assert env.pipeline.run().success
        yield Split(env, (same, profile_of(env, *second)), (household, profile_of(env, *other)))


def export_of(env: Env, request_id: str) -> dict[str, Any]:
    row = requests_table(env)[request_id]
    assert row["status"] == "done"
    return json.loads(Path(row["export_path"]).read_text())


def test_a_person_split_over_two_profiles_is_exported_and_deleted_whole(split: Split) -> None:
    env, (profile_id, other) = split.env, split.same_person
    assert other != profile_id  # identity keeps the two apart ...
    [(refused,)] = env.pipeline.query(
        "SELECT count(*) FROM identity.refused_links WHERE refused_by = 'limit user_id 1'"
        " AND $a IN (profile_a, profile_b) AND $b IN (profile_a, profile_b)", {"a": profile_id, "b": other})
    assert refused  # ... because the link would give one profile two logins
    person = next(p for p in resolved(env) if p.profile_id == profile_id)
    record_id, email, login = SAME_PERSON
    whole = replace(person, records=person.records | {("zendesk.users", record_id)}, emails=person.emails | {email},
                    texts=person.texts | {email, login, other.lower()})  # fmt: skip
    assert f"zendesk.users:{record_id}" in destinations_holding(env, whole)

    access = cli(env, "access", "--email", person.email).split()[0]
    process(env)
    export = export_of(env, access)  # read before the deletion, which removes earlier exports of the person
    assert sorted(export["profiles"]) == sorted([profile_id, other])
    assert {(r["stream"], r["record_id"]) for r in export["source_records"]} == whole.records
    assert other not in {c["profile_id"] for c in review(env, person.email)}

    deletion = cli(env, "delete", "--email", person.email).split()[0]
    process(env)
    row = requests_table(env)[deletion]
    assert (row["status"], row["profiles"]) == ("done", 2)
    assert traces(env, whole) == {}
    assert destinations_holding(env, whole) == [] and other not in env.sandbox.control("destinations/braze")
    assert email not in env.contacts() and email not in env.users()


def test_a_phone_two_people_share_takes_no_one_else_along_and_lists_them_for_review(split: Split) -> None:
    env, (profile_id, other) = split.env, split.household
    assert other != profile_id
    person = next(p for p in resolved(env) if p.profile_id == profile_id)
    phones = {spelling.lower() for spelling in carried(env.world, person.records)[2]}
    own = replace(person, texts=person.texts - phones)  # the phone stays: the other person still has it
    kept = env.pipeline.query("SELECT stream, record_id FROM identity.record_profiles WHERE profile_id = $p",
                              {"p": other})  # fmt: skip
    synced = env.pipeline.query("SELECT sync, payload FROM sync.state WHERE key = $p ORDER BY 1", {"p": other})

    access = cli(env, "access", "--email", person.email).split()[0]
    process(env)
    export = export_of(env, access)
    assert export["profiles"] == [profile_id] and "candidates" not in export  # the person sees no one else's id
    reasons = {c["profile_id"]: c["reason"] for c in review(env, person.email)}
    assert "phone shared (names differ)" in reasons[other]

    deletion = cli(env, "delete", "--email", person.email).split()[0]
    process(env)
    row = requests_table(env)[deletion]
    assert (row["status"], row["profiles"]) == ("done", 1) and row["candidates"] >= 1
    assert traces(env, own) == {} and destinations_holding(env, own) == []
    # The other person is untouched: their records, profile, synced state, landed record and Zendesk user.
    assert env.pipeline.query("SELECT stream, record_id FROM identity.record_profiles WHERE profile_id = $p",
                              {"p": other}) == kept  # fmt: skip
    assert env.pipeline.query("SELECT sync, payload FROM sync.state WHERE key = $p ORDER BY 1", {"p": other}) == synced
    assert env.pipeline.query("SELECT count(*) FROM raw.zendesk_users WHERE record_id = $r", {"r": HOUSEHOLD[0]})[0][0]
    assert HOUSEHOLD[1] in env.users()


def review(env: Env, email: str) -> list[dict[str, str]]:
    """The candidates an operator is shown for review before carrying out a request (`--dry-run`)."""
    return json.loads(cli(env, "delete", "--dry-run", "--json", "--email", email))["candidates"]


# Profiles as identity might leave them: (profile, name, [(type, value)] its records carry).
HELD = [
    ("p_ann", "Ann Lee", [("email", "ann@acme.io"), ("phone", "+14155550101"), ("device_id", "d1")]),
    ("p_ann2", "ann  LEE", [("phone", "+14155550101"), ("email", "a.lee@home.net"), ("user_id", "u2")]),
    ("p_ann3", None, [("email", "a.lee@home.net")]),  # nameless: nothing says it is someone else
    ("p_bob", "Bob Lee", [("email", "b@home.net"), ("device_id", "d1")]),  # a shared laptop
    ("p_cat", "Ann Lee", [("email", "info@acme.io"), ("user_id", "u3")]),  # same name, but a team's mailbox
    ("p_ann_info", "Ann Lee", [("email", "info@acme.io")]),
    ("p_dan", "Dan Roe", [("email", "dan@roe.io"), ("phone", "+14155550199")]),
    ("p_eve", "Eve Roe", [("phone", "+14155550199")]),  # a household's phone
    ("p_gil", "Gil Ray", [("email", "gil@ray.io"), ("phone", "+14155550123")]),
    ("p_x", None, [("phone", "+14155550123"), ("email", "x@home.net")]),  # nameless: reached, leads nowhere
    ("p_hal", "Hal Roe", [("email", "x@home.net")]),  # beyond the nameless profile: someone else
    ("p_co", "Co Op", [("email", "sales@co.io")]),  # a team's mailbox only one profile holds
]


def test_widening_follows_person_identifiers_to_a_fixed_point_and_stops_at_shared_values() -> None:
    """The rules on a warehouse built by hand, so each one is seen alone: a value whose holders agree on who they
    are widens, transitively; a device, a role mailbox and a value held under two names widen nothing and are listed
    for review."""
    with duckdb.connect() as conn:
        conn.execute("CREATE SCHEMA identity")
        conn.execute("CREATE TABLE identity.identifiers (stream VARCHAR, record_id VARCHAR, id_type VARCHAR,"
                     " value VARCHAR)")  # fmt: skip
        conn.execute("CREATE TABLE identity.record_profiles (stream VARCHAR, record_id VARCHAR, profile_id VARCHAR)")
        conn.execute("CREATE TABLE identity.person_profiles (profile_id VARCHAR, first_name VARCHAR,"
                     " last_name VARCHAR)")  # fmt: skip
        conn.execute("CREATE TABLE identity.profile_registry (profile_id VARCHAR, merged_into VARCHAR)")
        conn.execute("CREATE TABLE identity.match_review (profile_l VARCHAR, profile_r VARCHAR, probability DOUBLE)")
        conn.execute("CREATE TABLE identity.refused_links (profile_a VARCHAR, profile_b VARCHAR, refused_by VARCHAR)")
        for profile, name, values in HELD:
            conn.execute("INSERT INTO identity.record_profiles VALUES ('zendesk.users', $p, $p)", {"p": profile})
            first, _, last = (name or "").partition(" ")
            conn.execute("INSERT INTO identity.person_profiles VALUES ($p, nullif($f, ''), nullif($l, ''))",
                         {"p": profile, "f": first, "l": last.strip()})  # fmt: skip
            for id_type, value in values:
                conn.execute("INSERT INTO identity.identifiers VALUES ('zendesk.users', $p, $t, $v)",
                             {"p": profile, "t": id_type, "v": value})  # fmt: skip
        conn.execute("INSERT INTO identity.match_review VALUES ('p_dan', 'p_ann', 0.87)")

        def reach(id_type: str, value: str) -> tuple[set[str], dict[str, str]]:
            conn.execute(subject.SETUP_SQL)
            conn.execute("INSERT INTO _subject_given VALUES ($t, $v)", {"t": id_type, "v": value})
            subject.shared_values(conn)
            subject.reach_whole_person(conn)
            profiles = {p for (p,) in conn.execute("SELECT profile_id FROM _subject_profiles").fetchall()}
            return profiles, {c["profile_id"]: c["reason"] for c in subject.candidates(conn)}

        profiles, candidates = reach("email", "ann@acme.io")
        assert profiles == {"p_ann", "p_ann2", "p_ann3"}  # by the phone, then by the second address
        assert candidates == {"p_bob": "device id shared (device)", "p_dan": "match review (probability 0.87)"}
        values = set(conn.execute("SELECT id_type, value FROM _subject_values").fetchall())
        assert ("device_id", "d1") not in values and ("user_id", "u2") in values  # a shared value suppresses no one

        profiles, candidates = reach("user_id", "u3")
        assert profiles == {"p_cat"} and candidates == {"p_ann_info": "email shared (role mailbox)"}
        assert reach("email", "gil@ray.io")[0] == {"p_gil", "p_x"}  # a nameless profile bridges no one

        # A quarantined record's role mailbox leads nowhere, though only one profile holds it; its own address does.
        conn.execute(subject.SETUP_SQL)
        conn.execute("INSERT INTO _subject_given VALUES ('record:zendesk.users', 'q1')")
        for id_type, value in (("record:zendesk.users", "q1"), ("email", "sales@co.io"), ("email", "dan@roe.io")):
            conn.execute("INSERT INTO _payload_identifiers VALUES ('raw.zendesk_users', 'zendesk.users', 1, $t, $v,"
                         " NULL)", {"t": id_type, "v": value})  # fmt: skip
        subject.shared_values(conn)
        conn.execute(subject.UNSEEN_SQL)
        assert set(conn.execute("SELECT id_type, value FROM _subject_given").fetchall()) == {
            ("record:zendesk.users", "q1"), ("email", "dan@roe.io")}  # fmt: skip

        profiles, candidates = reach("email", "dan@roe.io")
        assert profiles == {"p_dan"}
        assert candidates == {"p_eve": "phone shared (names differ)", "p_ann": "match review (probability 0.87)"}

"""A request says what it reached: identifiers looked up as identity read them (a national phone with each record's
region, a quarantined record by its landed payload), `not_found` for nobody, counts per layer and destination, and
a dry run whose counts are what the deletion then does.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import duckdb
import phonenumbers
import pytest

from cdp_assets.privacy import inbox, subject
from cdp_assets.privacy.cli import describe, status
from cdp_assets.privacy.subject import Identifier
from cdp_assets.sync.specs import load as load_syncs
from resources import privacy_folders
from tests.conftest import Env
from tests.test_privacy import cli, destinations_holding, only_phone, process, requests_table, resolved, serve, traces

PHONES_SQL = """
SELECT stream, record_id, phone FROM (
    SELECT 'stripe.customers' AS stream, record_id, payload->>'$.phone' AS phone FROM raw.stripe_customers
    UNION ALL SELECT 'hubspot.contacts', record_id, payload->>'$.properties.phone' FROM raw.hubspot_contacts
    UNION ALL SELECT 'zendesk.users', record_id, payload->>'$.phone' FROM raw.zendesk_users
    UNION ALL SELECT 'klaviyo.profiles', record_id, payload->>'$.attributes.phone_number' FROM raw.klaviyo_profiles
)
WHERE phone IS NOT NULL AND NOT starts_with(trim(phone), '+')
"""
# National spellings looked up, of those on records identity put in a profile (each lookup reads every landed payload:
# ~0.3 s on the test world; every one of the test world's 182 spellings was checked once, none missed).
SAMPLE = 30
AU_NATIONAL = "(02) 9374 4000"  # a Sydney number, read as the record's en-AU locale says (no configured country)


def reached(conn: duckdb.DuckDBPyConnection, *identifiers: Identifier) -> set[str]:
    subject.resolve(conn, list(identifiers), subject.existing_raw_tables(conn))
    return {p for (p,) in conn.execute("SELECT profile_id FROM _subject_profiles").fetchall()}


def test_each_national_phone_spelling_the_payloads_hold_reaches_the_profiles_of_its_records(unsynced: Path) -> None:
    with duckdb.connect(str(unsynced / "warehouse.duckdb"), read_only=True) as conn:  # a lookup writes nothing
        holders: dict[str, set[tuple[str, str]]] = defaultdict(set)
        for stream, record_id, phone in conn.execute(PHONES_SQL).fetchall():
            holders[phone].add((stream, record_id))
        profile_of = dict(((s, r), p) for s, r, p in conn.execute(
            "SELECT stream, record_id, profile_id FROM identity.record_profiles").fetchall())  # fmt: skip
        spellings = sorted(phone for phone, records in holders.items() if records & profile_of.keys())
        assert len(spellings) > SAMPLE
        missed = {}
        for phone in spellings[:: len(spellings) // SAMPLE][:SAMPLE]:
            expected = {profile_of[record] for record in holders[phone] if record in profile_of}
            if not expected <= (found := reached(conn, Identifier("phone", phone))):
                missed[phone] = (expected, found)
        assert missed == {}


def test_national_phones_and_quarantined_records_reach_the_whole_person_and_requests_say_what_they_reached(
    start: Callable[..., Env], monkeypatch: pytest.MonkeyPatch
) -> None:
    env = start()
    monkeypatch.setenv("CDP_WAREHOUSE", str(env.pipeline.warehouse))  # whose inbox privacy_folders names
    assert env.sync().success  # the destinations hold everyone, so a request has them to reach
    people = resolved(env)
    by_record, by_phone = people[0], next(p for p in people[1:] if only_phone(env, p))
    national = phonenumbers.format_number(phonenumbers.parse(only_phone(env, by_phone)),
                                          phonenumbers.PhoneNumberFormat.NATIONAL)  # fmt: skip
    # Served with a field staging refuses (Zendesk's `active` as text): quarantined, so identity never sees them.
    quarantined = serve(env, "zendesk.users", "369999990101", email=by_record.email, phone=None, locale="en-US",
                        active="yes")  # fmt: skip
    alone = serve(env, "zendesk.users", "369999990102", email="wombat.qxlund@koala-mail.com.au", phone=None,
                  active="yes")  # fmt: skip
    serve(env, "zendesk.users", "369999990103", email="numbat.qxlund@koala-mail.com.au", phone=AU_NATIONAL,
          locale="en-AU")  # fmt: skip
    assert env.pipeline.run().success
    held = env.pipeline.query("SELECT record_id FROM quarantine.zendesk__users")
    assert {(quarantined[1],), (alone[1],)} <= set(held)
    [(sydney,)] = env.pipeline.query("SELECT profile_id FROM identity.record_profiles WHERE record_id = '369999990103'")
    for person in (by_record, by_phone):
        assert traces(env, person) and destinations_holding(env, person)

    # Access by the quarantined record's id and by the phone as HubSpot and Stripe write it: the whole person.
    access = [file("access", "record", ":".join(quarantined)), file("access", "phone", national)]
    process(env)
    for request_id, person, extra in zip(access, (by_record, by_phone), ([quarantined], []), strict=True):
        row = requests_table(env)[request_id]
        assert row["status"] == "done"
        export = json.loads(Path(row["export_path"]).read_text())
        assert export["profiles"] == [person.profile_id]
        assert person.records | set(extra) <= {(r["stream"], r["record_id"]) for r in export["source_records"]}

    # A dry run files nothing and deletes nothing, and counts what the deletion then does.
    plan = json.loads(cli(env, "delete", "--dry-run", "--json", "--record", ":".join(quarantined)))
    assert plan["profiles"] == [by_record.profile_id] and plan["source_records"]["zendesk.users"] >= 1
    syncs = load_syncs().syncs
    assert {syncs[s].destination for s in plan["destinations"]} == {syncs[s].destination for s in by_record.synced_to}
    sydney_plan = cli(env, "access", "--dry-run", "--phone", AU_NATIONAL).splitlines()
    assert sydney_plan[0] == f"would reach 1 profiles: {sydney}"  # read with its record's en-AU locale, as identity did
    assert sydney_plan[-1] == "nothing filed (--dry-run)"
    assert traces(env, by_record) and len(requests_table(env)) == len(access)

    deletions = [file("deletion", "record", ":".join(quarantined)), file("deletion", "phone", national),
                 file("deletion", "record", ":".join(alone))]  # fmt: skip
    process(env)
    rows = requests_table(env)
    assert [rows[r]["status"] for r in deletions] == ["done", "done", "done"]
    assert (rows[deletions[2]]["profiles"], rows[deletions[2]]["detail"].split("; ")[-1]) == (
        0, "found 1 source records but no profile")  # fmt: skip
    for person in (by_record, by_phone):
        assert traces(env, person) == {}
        assert destinations_holding(env, person) == []
    assert env.pipeline.query("SELECT count(*) FROM raw.zendesk_users WHERE record_id = $id", {"id": quarantined[1]}) \
        == [(0,)]  # fmt: skip

    [shown] = status(env.pipeline.warehouse, deletions[0], 1, 0)  # what `cdp privacy status --json` prints
    deleted = dict(env.pipeline.query(
        "SELECT target, items FROM privacy.request_actions WHERE request_id = $id AND action = 'deleted'"
        " AND target LIKE '%.%'", {"id": deletions[0]}))  # fmt: skip
    assert deleted == {table: n for tables in plan["rows"].values() for table, n in tables.items()}
    assert shown["rows_per_layer"] == {layer: sum(tables.values()) for layer, tables in plan["rows"].items()}
    assert sum(shown["rows_per_layer"].values()) == rows[deletions[0]]["rows_deleted"]
    assert {syncs[s].destination for s in by_record.synced_to} <= set(shown["destinations"])
    text = describe([shown], as_json=False)
    assert f"raw {shown['rows_per_layer']['raw']}" in text and all(f"  {d}: " in text for d in shown["destinations"])


def file(kind: str, id_type: str, value: str) -> str:
    """A request filed in the inbox as `cdp privacy` files it (in process: the CLI's filing is tested elsewhere)."""
    return inbox.file_request(privacy_folders()[0], kind, [Identifier(id_type, value)], "test").request_id

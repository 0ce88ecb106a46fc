"""Privacy requests end to end: deletion with lasting suppression, access exports and consent withdrawal, against
the sandbox's sources and destinations, through the inbox, its sensor and the privacy job in Dagster.

Who a person is comes from the world's ground truth, never from the warehouse: the test scans every table for
what the person's own source records carry, so a copy the platform forgot to delete is found.
"""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
import time
import unicodedata
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import phonenumbers
import pytest
from dagster import DagsterInstance, RunRequest, build_sensor_context
from hypothesis import given, settings
from hypothesis import strategies as st
from phonenumbers import geocoder

from cdp_assets.identity import normalise
from cdp_assets.identity.rules import load as load_rules
from cdp_assets.privacy import erasure, inbox, paths, subject
from cdp_assets.privacy.paths import PERSON_PATHS, PERSON_STREAMS
from cdp_assets.privacy.subject import Identifier
from cdp_assets.sync.specs import load as load_syncs
from resources import privacy_folders
from resources.destinations.meta import email_hash, phone_hash
from sandbox.store import Record, WorldStore
from tests.conftest import Env

ROOT = Path(__file__).resolve().parents[1]
SHARED_CASES = ("shared_device", "shared_login")  # their devices or logins also name someone else
LONG_ID = 8  # ids shorter than this (HubSpot contacts, tickets) are looked for by key, not by text


@dataclass
class Person:
    person_id: int
    profile_id: str
    email: str
    records: set[tuple[str, str]]  # (stream, id) of every record of the person the warehouse landed
    texts: set[str]  # what their records carry: addresses, numbers, logins, devices, long ids
    emails: set[str]
    phones: set[str]
    synced_to: set[str]  # syncs whose state held the person before the request


def truth(world: Path) -> dict[int, set[tuple[str, str]]]:
    records: dict[int, set[tuple[str, str]]] = defaultdict(set)
    with (world / "truth.csv").open() as f:
        for row in csv.DictReader(f):
            if row["stream"] in PERSON_PATHS:
                records[int(row["person_id"])].add((row["stream"], row["record_id"]))
    return records


def landed(env: Env) -> set[tuple[str, str]]:
    """Every record the warehouse holds, as (stream, source id)."""
    found = set()
    for stream in PERSON_PATHS:
        key = "payload->>'$.properties.\"$insert_id\"'" if stream == "mixpanel.events" else "record_id"
        table = "raw." + stream.replace(".", "_")
        found |= {(stream, r) for (r,) in env.pipeline.query(f"SELECT DISTINCT {key} FROM {table}")}
    return found


def carried(world: Path, records: set[tuple[str, str]]) -> tuple[set[str], set[str], set[str]]:
    """What the records' payloads name (texts to scan for), and the addresses and E.164-ready numbers among them."""
    store = WorldStore(world)
    texts, emails, phones = set(), set(), set()
    for stream, record_id in records:
        record = store.get(stream, record_id)
        if record is None:
            continue
        for id_type, dotted in PERSON_PATHS[stream].items():
            for path in dotted:
                value: Any = record.payload
                for key in path.split("."):
                    value = value.get(key) if isinstance(value, dict) else None
                if value is None or str(value).strip() == "":
                    continue
                text = str(value).strip().lower()
                if id_type == "email":
                    emails.add(text)
                if id_type == "phone":
                    phones.add(str(value).strip())
                if not id_type.startswith("record:") or len(text) >= LONG_ID:
                    texts.add(text)
    return texts, emails, phones


def resolved(env: Env) -> list[Person]:
    """People the identity layer resolved exactly (one profile, holding only their records), not sharing a device
    or login, with an address: most synced first."""
    cases = defaultdict(set)
    with (env.world / "cases.csv").open() as f:
        for row in csv.DictReader(f):
            cases[int(row["person_id"])].add(row["case"])
    owners = defaultdict(set)
    for stream, record_id, profile_id in env.pipeline.query("SELECT stream, record_id, profile_id FROM "
                                                            "identity.record_profiles"):  # fmt: skip
        owners[profile_id].add((stream, record_id))
    held = defaultdict(set)
    for sync, key in env.pipeline.query("SELECT sync, key FROM sync.state"):
        held[key].add(sync)
    emails = dict(env.pipeline.query("SELECT profile_id, email FROM identity.person_profiles WHERE email IS NOT NULL"))
    profile_of = {record: profile for profile, records in owners.items() for record in records}
    present = landed(env)
    found = []
    for person_id, records in truth(env.world).items():
        records &= present
        profiles = {profile_of.get(r) for r in records if r[0] in PERSON_STREAMS}
        if cases[person_id] & set(SHARED_CASES) or len(profiles) != 1 or None in profiles:
            continue
        [profile_id] = profiles
        if profile_id not in emails or not owners[profile_id] <= records:
            continue
        texts, all_emails, phones = carried(env.world, records)
        synced = held[profile_id] | set().union(*(held[e] for e in all_emails))
        found.append(Person(person_id, profile_id, emails[profile_id], records, texts | {profile_id.lower()},
                            all_emails, phones, synced))  # fmt: skip
    assert found, "no person resolved exactly in the test world"
    return sorted(found, key=lambda p: (-len(p.synced_to), p.person_id))


def covering(people: list[Person]) -> list[Person]:
    """A few people who, between them, are held by every destination (most synced first)."""
    destinations = {spec.name: spec.destination for spec in load_syncs().syncs.values()}
    chosen, reached = [], set()
    while reached != set(destinations.values()):
        best = max(people, key=lambda p: len({destinations[s] for s in p.synced_to} - reached))
        gained = {destinations[s] for s in best.synced_to} - reached
        assert gained, f"no resolved person is in {set(destinations.values()) - reached}"
        chosen.append(best)
        reached |= gained
    return chosen


def traces(env: Env, person: Person) -> dict[str, int]:
    """Rows of any warehouse table that name the person: by text, and by key for their short record ids."""
    pattern = "|".join(re.escape(text) for text in sorted(person.texts))
    tables = [t for (t,) in env.pipeline.query(
        "SELECT table_schema || '.' || table_name FROM information_schema.tables WHERE table_schema IN"
        " ('raw', 'staging', 'quarantine', 'identity', 'privacy', 'views', 'sync')")]  # fmt: skip
    found = {}
    for table in tables:
        [(rows, named)] = env.pipeline.query(
            f"SELECT count(*), list(DISTINCT regexp_extract(lower(t::VARCHAR), $pattern))[:3] FROM {table} t"
            " WHERE regexp_matches(lower(t::VARCHAR), $pattern)",
            {"pattern": pattern},
        )
        if rows:
            found[f"{table} ({', '.join(named)})"] = rows
    for stream, record_id in person.records:
        if len(record_id) < LONG_ID and stream != "mixpanel.events":
            table = "raw." + stream.replace(".", "_")
            [(rows,)] = env.pipeline.query(f"SELECT count(*) FROM {table} WHERE record_id = $id", {"id": record_id})
            if rows:
                found[f"{table} ({record_id})"] = rows
    return found


def destinations_holding(env: Env, person: Person) -> list[str]:
    found = []
    store = WorldStore(env.world)
    for stream in ("hubspot.contacts", "zendesk.users"):
        for record in store.scan(stream):
            text = json.dumps(record.payload).lower()
            if (stream, record.id) in person.records and any(e in text for e in person.emails):
                found.append(f"{stream}:{record.id}")
    if person.profile_id in env.sandbox.control("destinations/braze"):
        found.append("braze")
    hashes = {email_hash(e) for e in person.emails} | {phone_hash(p) for p in person.phones if p.startswith("+")}
    for audience, members in env.sandbox.control("destinations/meta").items():
        if hashes & {h for member in members for h in member}:
            found.append(f"meta:{audience}")
    return found


def process(env: Env, instance: DagsterInstance | None = None) -> list[RunRequest]:
    """What the inbox sensor asks for, each run as it asks (the daemon's part, in process), in `instance` (by default
    an ephemeral one)."""
    from cdp_assets.definitions import defs
    from cdp_assets.privacy.requests import privacy_inbox_sensor
    from resources import build_resources

    before = {name: os.environ.get(name) for name in ("CDP_WAREHOUSE", "CDP_SANDBOX_URL")}
    os.environ.update(CDP_WAREHOUSE=str(env.pipeline.warehouse), CDP_SANDBOX_URL=env.sandbox.url)
    try:
        resources = build_resources()
        requests = list(privacy_inbox_sensor(build_sensor_context(resources={"privacy": resources["privacy"]})))
        job = defs.resolve_job_def("privacy_requests")
        for request in requests:
            result = job.execute_in_process(run_config=request.run_config, tags=request.tags, resources=resources,
                                            instance=instance or DagsterInstance.ephemeral())  # fmt: skip
            assert result.success
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    return requests


def cli(env: Env, *args: str) -> str:
    command = [sys.executable, "-m", "cdp_assets.cli", "privacy", "--warehouse", str(env.pipeline.warehouse), *args]
    return subprocess.run(command, capture_output=True, text=True, check=True, cwd=ROOT).stdout


def requests_table(env: Env) -> dict[str, dict[str, Any]]:
    with duckdb.connect(str(env.pipeline.warehouse), read_only=True) as conn:
        cursor = conn.execute("SELECT * FROM privacy.requests")
        names = [d[0] for d in cursor.description]
        return {row[0]: dict(zip(names, row, strict=True)) for row in cursor.fetchall()}


def test_a_deletion_by_email_alone_leaves_no_trace_and_the_person_stays_gone(start: Callable[..., Env]) -> None:
    env = start(synced=True)  # pulled, every layer, synced
    with duckdb.connect(str(env.pipeline.warehouse), read_only=True) as conn:
        assert erasure.unmapped(conn) == []  # every table is a target of erasure or holds no one
    chosen = covering(resolved(env))  # people who, between them, are in every destination
    for person in chosen:
        assert traces(env, person) and destinations_holding(env, person)

    filed = [cli(env, "delete", "--email", p.email.upper()).split()[0] for p in chosen]  # any spelling will do
    requests = process(env)
    assert sorted(r.tags["privacy/request"] for r in requests) == sorted(filed)
    assert process(env) == []  # done requests leave the inbox

    for person, request_id in zip(chosen, filed, strict=True):
        assert traces(env, person) == {}
        assert destinations_holding(env, person) == []
        row = requests_table(env)[request_id]
        assert (row["kind"], row["status"], row["profiles"]) == ("deletion", "done", 1) and row["rows_deleted"] > 0
        [shown] = json.loads(cli(env, "status", "--request", request_id, "--json"))
        assert [h["status"] for h in shown["history"]] == ["received", "running", "done"]

    # The matcher's basis counted their names among everyone's: dropped, the next run counts it again without them.
    assert env.pipeline.query("SELECT count(*) FROM identity.match_basis UNION ALL "
                              "SELECT count(*) FROM identity.match_frequencies") == [(0,), (0,)]
    # An erased version may have been its record's newest: each entity the erasure reached replays raw next build.
    kept = {entity for (entity,) in env.pipeline.query("SELECT entity FROM staging._builds")}
    hourly = env.pipeline.run()
    assert env.pipeline.query("SELECT run_id FROM identity.match_basis") == [(hourly.run_id,)]
    staged = {key.removeprefix("staging/"): meta["mode"] for key, meta in hourly.metadata.items()
              if key.startswith("staging/")}  # fmt: skip
    assert {e for e, mode in staged.items() if mode != "incremental"} == set(staged) - kept != set()
    nightly = env.pipeline.run(full=True)  # every source pulled again in full, syncs after
    assert hourly.success and nightly.success
    assert env.pipeline.query("SELECT run_id FROM identity.match_basis") == [(nightly.run_id,)]  # a rebase
    with duckdb.connect(str(env.pipeline.warehouse), read_only=True) as conn:
        assert erasure.unmapped(conn) == []  # the privacy tables too
    suppressed = sum(meta["suppressed"] for key, meta in nightly.metadata.items() if key.startswith("raw/"))
    assert suppressed > 0  # the sources still hold them; the pulls drop them before they land
    for person in chosen:
        assert traces(env, person) == {}
        assert destinations_holding(env, person) == []


def test_an_access_export_lists_every_source_record_and_every_destination(start: Callable[..., Env]) -> None:
    env = start(synced=True)
    person = resolved(env)[0]
    request_id = cli(env, "access", "--email", person.email).split()[0]
    [request] = process(env)
    assert request.tags["privacy/kind"] == "access"

    row = requests_table(env)[request_id]
    assert row["status"] == "done"
    export = json.loads(Path(row["export_path"]).read_text())
    assert export["profiles"] == [person.profile_id]
    assert {(r["stream"], r["record_id"]) for r in export["source_records"]} == person.records
    received = {d["sync"]: d for d in export["destinations"]}
    assert set(received) == person.synced_to
    for sync, entry in received.items():
        assert entry["destination"] == load_syncs().syncs[sync].destination
        assert entry["deliveries"] and all(d["operation"] in ("upsert", "add") and d["at"] for d in entry["deliveries"])
    raw = export["layers"]["raw"]
    assert all(isinstance(version["payload"], dict) for rows in raw.values() for version in rows)
    assert export["layers"]["identity"]["identity.person_profiles"][0]["profile_id"] == person.profile_id
    assert traces(env, person)  # an export deletes nothing


def test_a_destination_out_of_reach_leaves_a_deletion_partially_done_until_a_retry_reaches_it(
    start: Callable[..., Env],
) -> None:
    env = start(synced=True)
    person = next(p for p in resolved(env) if "braze_users" in p.synced_to)
    env.sandbox.control("config", "PATCH", json={"credentials": {"braze": {"api_key": "rotated"}}})
    request_id = cli(env, "delete", "--email", person.email).split()[0]
    [first] = process(env)

    row = requests_table(env)[request_id]
    assert (row["status"], row["detail"]) == ("partially_done", "destinations still to erase: braze")
    assert traces(env, person) == {}  # the warehouse is erased at once; only Braze still holds them
    assert destinations_holding(env, person) == ["braze"]

    env.sandbox.control("config", "PATCH", json={"credentials": {"braze": {"api_key": "braze-sandbox"}}})
    [retry] = process(env)  # the sensor sees the request again, with what Braze must forget kept in it
    assert retry.run_key != first.run_key
    assert requests_table(env)[request_id]["status"] == "done"
    assert destinations_holding(env, person) == [] and process(env) == []
    [shown] = json.loads(cli(env, "status", "--request", request_id, "--json"))
    assert [h["status"] for h in shown["history"]] == ["received", "running", "partially_done", "running", "done"]


def test_a_request_for_an_unknown_identifier_ends_not_found_and_an_invalid_one_fails_saying_what_to_give(
    start: Callable[..., Env], monkeypatch: pytest.MonkeyPatch
) -> None:
    env = start()
    monkeypatch.setenv("CDP_WAREHOUSE", str(env.pipeline.warehouse))  # whose inbox privacy_folders names
    request_id = cli(env, "delete", "--email", "nobody.at.all@nowhere-corp.io").split()[0]  # valid, held by no one
    process(env)
    row = requests_table(env)[request_id]
    assert (row["status"], row["profiles"], row["records"], row["detail"]) == (
        "not_found", 0, 0, "nothing found for the identifiers given")  # fmt: skip
    assert not any(privacy_folders()[0].glob("req_*.json"))  # final: the sensor does not try it again

    # An address the normaliser rejects names no one identity holds: refused when filed...
    command = [sys.executable, "-m", "cdp_assets.cli", "privacy", "--warehouse", str(env.pipeline.warehouse), "delete",
               "--email", "jane..doe@acme.io"]  # fmt: skip
    refused = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    assert refused.returncode != 0 and "the email given is invalid" in refused.stderr
    assert "--record stream:id" in refused.stderr and "jane" not in refused.stderr
    assert not any(privacy_folders()[0].glob("req_*.json"))
    # ... and failed, saying what to give instead, when another intake form puts it in the inbox.
    request = inbox.Request("req_invalidaddress1", "deletion", [Identifier("email", "jane..doe@acme.io")],
                            "2026-01-01T00:00:00+00:00", "form")  # fmt: skip
    inbox.write(privacy_folders()[0], request)
    with pytest.raises(RuntimeError, match="req_invalidaddress1: ValueError: the email given is invalid"):
        process(env)
    row = requests_table(env)[request.request_id]
    assert row["status"] == "failed" and "the email given is invalid" in row["detail"]
    assert "--record stream:id" in row["detail"] and "jane" not in row["detail"]


HOSTILE = ("Ann@Acme-Corp.IO\t", "jo@xn--bcher-kva.de", "(415) 555-0199", "+44 20 7946 0958", "de-DE", "US", "ü ",
           "\u00a0x@acme.io", "12345", "")


@st.composite
def payloads(draw: st.DrawFn, stream: str, where: str | None) -> dict[str, Any]:
    """A payload of `stream` with something, or nothing, at each of its paths (and at its phones' country)."""
    scalar = st.one_of(st.none(), st.text(max_size=12), st.integers(), st.booleans(), st.sampled_from(HOSTILE))
    value = st.recursive(scalar, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.text(max_size=4), inner, max_size=3), max_leaves=6)  # fmt: skip
    payload: dict[str, Any] = {}
    dotted = [d for ds in PERSON_PATHS[stream].values() for d in ds] + ([where] if where else [])
    for path in dotted:
        *parents, last = path.split(".")
        node = payload
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = draw(value)
    return payload


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_pulls_and_privacy_requests_read_the_same_identifiers_from_the_same_payloads(data: st.DataObject) -> None:
    """What a pull reads from a page (paths.named, in Python) is what a request reads from the landed rows
    (paths.identify, in DuckDB's SQL), so a suppression drops what an erasure would find."""
    rules = load_rules()
    stream = data.draw(st.sampled_from(sorted(PERSON_PATHS)))
    where = paths.region_path(stream, rules)
    drawn = data.draw(st.lists(payloads(stream, where), min_size=1, max_size=4))
    with duckdb.connect() as conn:
        conn.execute(subject.SETUP_SQL)
        conn.execute("CREATE TEMP TABLE landed (landing_id BIGINT, payload JSON)")
        conn.execute("INSERT INTO landed SELECT unnest($ids), unnest($payloads::VARCHAR[])::JSON",
                     {"ids": list(range(len(drawn))), "payloads": [json.dumps(p) for p in drawn]})  # fmt: skip
        paths.identify(conn, "landed", stream, rules)
        in_sql = set(conn.execute("SELECT landing_id, id_type, value FROM _payload_identifiers").fetchall())
    in_python = {(i, *pair) for i, payload in enumerate(drawn) for value in paths.named(stream, payload, where)
                 for pair in paths.forms(value, rules)}  # fmt: skip
    assert in_python == in_sql


def test_an_email_consent_withdrawal_unsubscribes_the_person_in_braze(start: Callable[..., Env]) -> None:
    env = start(synced=True)
    [(profile_id, klaviyo_id)] = env.pipeline.query(
        "SELECT rp.profile_id, min(rp.record_id) FROM identity.record_profiles rp JOIN sync.state s"
        " ON s.sync = 'braze_users' AND s.key = rp.profile_id WHERE rp.stream = 'klaviyo.profiles'"
        " GROUP BY 1 HAVING count(*) = 1 ORDER BY 1 LIMIT 1"
    )
    store = WorldStore(env.world)
    profile = store.get("klaviyo.profiles", klaviyo_id)
    marketing = profile.payload["attributes"]["subscriptions"]["email"]["marketing"]
    now = int(time.time())
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(now))
    marketing.update(consent="UNSUBSCRIBED", consent_timestamp=stamp, method="PREFERENCE_PAGE")
    profile.payload["attributes"]["updated"] = stamp
    store.upsert([Record(profile.stream, profile.id, profile.created, now * 1000, profile.payload)])

    outcome = env.pipeline.run()
    assert outcome.success
    assert outcome.metadata["sync/braze_users"]["removed"] == 1
    attributes = env.sandbox.control("destinations/braze")[profile_id]
    assert attributes["email_subscribe"] == "unsubscribed" and "cdp_plan" not in attributes


# A person the test adds to the world, with an address whose domain is internationalised (and whose local part has
# a letter NFD decomposes), so its punycode and NFD spellings exist.
IDN_EMAIL = "zo\u00eb.qxlund@b\u00fccher.de"
IDN_TEXT = "qxlund@"  # what every spelling of it carries in JSON text, where landing escapes non-ASCII letters


def serve(env: Env, stream: str, record_id: str, **fields: Any) -> tuple[str, str]:
    """A new record of `stream` in the world, shaped like the stream's first record, changed now, with `fields` (dotted
    paths) set; the sources serve it to the next pull."""
    store = WorldStore(env.world)
    template = next(iter(store.scan(stream)))
    payload = json.loads(json.dumps(template.payload))
    now = int(time.time())
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
    own = {  # its own name and times, no company or place that a match could take for the template's person
        "zendesk.users": {"url": None, "name": "Zoe Qxlund", "external_id": None,
                          "created_at": stamp, "updated_at": stamp},
        "hubspot.contacts": {"properties.hs_object_id": record_id, "properties.firstname": "Zoe",
                             "properties.lastname": "Qxlund", "properties.company": None, "properties.city": None,
                             "properties.createdate": stamp, "properties.lastmodifieddate": stamp, "createdAt": stamp,
                             "updatedAt": stamp},
        "klaviyo.profiles": {"attributes.external_id": None, "attributes.first_name": "Zoe",
                             "attributes.last_name": "Qxlund", "attributes.organization": None,
                             "attributes.location": None, "attributes.created": stamp, "attributes.updated": stamp,
                             "links.self": None},
    }[stream]  # fmt: skip
    payload["id"] = int(record_id) if stream == "zendesk.users" else record_id  # Zendesk's ids are numbers
    for path, value in {**own, **fields}.items():
        *parents, last = path.split(".")
        node = payload
        for key in parents:
            node = node[key]
        node[last] = value
    store.upsert([Record(stream, record_id, now, now * 1000, payload)])
    return stream, record_id


def only_phone(env: Env, person: Person) -> str | None:
    """The person's one E.164 number, if no one else's records carry it."""
    rows = env.pipeline.query(
        "SELECT i.value, count(DISTINCT rp.profile_id) FILTER (WHERE rp.profile_id <> $p), bool_or(rp.profile_id = $p)"
        " FROM identity.identifiers i JOIN identity.record_profiles rp USING (stream, record_id)"
        " WHERE i.id_type = 'phone' GROUP BY 1 HAVING bool_or(rp.profile_id = $p)",
        {"p": person.profile_id},
    )
    return rows[0][0] if len(rows) == 1 and rows[0][1] == 0 else None


def test_no_spelling_of_a_deleted_persons_identifiers_brings_them_back(start: Callable[..., Env]) -> None:
    env = start()
    serve(env, "zendesk.users", "369999990001", email=IDN_EMAIL, phone=None, locale="de-DE")
    serve(env, "klaviyo.profiles", "01JQXLUNDIDN00000000000001", **{"attributes.email": IDN_EMAIL.upper(),
          "attributes.phone_number": None, "attributes.locale": "de-DE"})  # fmt: skip
    assert env.pipeline.run().success
    [(built_profile,)] = env.pipeline.query(
        "SELECT DISTINCT profile_id FROM identity.record_profiles WHERE record_id IN ('369999990001',"
        " '01JQXLUNDIDN00000000000001')"
    )  # the two records are one person, whatever the case of the address
    person, phone = next((p, n) for p in resolved(env) if (n := only_phone(env, p)))
    number = phonenumbers.parse(phone)
    region = phonenumbers.region_code_for_number(number)
    national = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.NATIONAL)

    # One deletion by the phone in national format, with no country (identity's configured countries read it), and
    # one by the address.
    filed = [cli(env, "delete", "--phone", national).split()[0], cli(env, "delete", "--email", IDN_EMAIL).split()[0]]
    process(env)
    assert [requests_table(env)[r]["status"] for r in filed] == ["done", "done"]
    assert traces(env, person) == {}

    rules = load_rules()
    address = normalise.email(IDN_EMAIL, rules)
    punycode = f"{IDN_EMAIL.split('@')[0]}@{address.split('@')[1].encode('idna').decode()}"
    variants = [
        serve(env, "zendesk.users", "369999990002", email=f"{person.email}\t", phone=None, locale="en-US"),
        serve(env, "zendesk.users", "369999990003", email=None, phone=national, locale=f"en-{region}"),
        serve(env, "hubspot.contacts", "9900003", **{"properties.email": None, "properties.phone": national,
              "properties.country": geocoder.country_name_for_number(number, "en")}),
        serve(env, "hubspot.contacts", "9900004", **{"properties.email": unicodedata.normalize("NFD", IDN_EMAIL),
              "properties.phone": None}),
        serve(env, "klaviyo.profiles", "01JQXLUNDIDN00000000000005", **{"attributes.email": f"\u00a0{punycode}\r\n",
              "attributes.phone_number": None}),
    ]  # fmt: skip
    assert punycode.endswith("@xn--bcher-kva.de") and normalise.email(punycode, rules) == address
    outcome = env.pipeline.run()
    assert outcome.success
    suppressed = {key: meta["suppressed"] for key, meta in outcome.metadata.items() if key.startswith("raw/")}
    for stream in {stream for stream, _ in variants}:  # each was served, and dropped
        assert suppressed["raw/" + stream.replace(".", "_")] >= sum(s == stream for s, _ in variants)

    landed_now = landed(env)
    assert [v for v in variants if v in landed_now] == []  # nothing landed in raw
    held = env.pipeline.query("SELECT stream, record_id FROM identity.record_profiles")
    assert [v for v in variants if v in held] == []
    values = {v for (v,) in env.pipeline.query("SELECT value FROM identity.identifiers")}
    assert {address, phone, person.email} & values == set()  # no profile holds them
    built = Person(-1, built_profile, address, set(), {IDN_TEXT, built_profile.lower()}, {address}, set(), set())
    assert traces(env, person) == {} and traces(env, built) == {}
    assert destinations_holding(env, person) == [] and destinations_holding(env, built) == []
    hashes = {email_hash(person.email), email_hash(address), phone_hash(phone)}
    members = {h for held in env.sandbox.control("destinations/meta").values() for member in held for h in member}
    assert hashes & members == set()
    braze = json.dumps(env.sandbox.control("destinations/braze")).lower()
    assert person.email not in braze and IDN_TEXT not in braze

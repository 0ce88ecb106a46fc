"""The consent ledger following the change log (cdp_assets/privacy/ledger.py) ends as a ledger made whole would, after
generated changes nobody here chose: records moved between profiles, values given to or taken from records (so a
statement's attribution through other records, a login's addresses and a shared verdict change), consent choices and
deletions flipped, golden names changed, values judged shared or no longer, records gone. Each change is logged as the
build making it would log it (identifiers: the record, with the values it carried; the graph: the profiles it
resolved again, every holder of the record's values among them; person profiles: the profile). On the test world's
warehouse, with the real ledger, log and DuckDB."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cdp_assets import changes
from cdp_assets.identity import identifiers, profile_changes, resolution
from cdp_assets.identity.rules import load as load_rules
from cdp_assets.privacy import consent, ledger

PICKS = 300  # records, profiles and values a change chooses from, in a fixed order
KINDS = ("move", "give", "take", "consent", "deleted", "name", "shared", "gone")
edit = st.tuples(st.sampled_from(KINDS), st.integers(0, PICKS - 1), st.integers(0, PICKS - 1))
rounds = st.lists(st.lists(edit, min_size=1, max_size=4), min_size=1, max_size=3)
PERSON_TYPES = list(ledger.PERSON_TYPES)
RECORD = "stream = $stream AND record_id = $record"
FLIPS = {  # a statement record's choice turned round (a product event's analytics one)
    "klaviyo.profiles": "email_marketing_consent = CASE WHEN email_marketing_consent = 'SUBSCRIBED' THEN"
                        " 'UNSUBSCRIBED' ELSE 'SUBSCRIBED' END",
    "hubspot.contacts": "email_opt_out = NOT coalesce(email_opt_out, false)",
    "mixpanel.events": "properties = json_merge_patch(properties, CASE WHEN json_extract_string(properties,"
                       " '$.analytics') = 'true' THEN '{\"analytics\": false}' ELSE '{\"analytics\": true}' END)",
}


def _picks(conn: duckdb.DuckDBPyConnection) -> dict[str, list[Any]]:
    """The records (statement records first), profiles and values the changes choose from."""
    records = conn.execute(
        "SELECT stream, record_id FROM identity.record_profiles WHERE list_contains($streams, stream)"
        " ORDER BY (stream, record_id) IN (SELECT source, record_id FROM privacy.consent_ledger) DESC,"
        " hash(stream, record_id) LIMIT $n", {"streams": ledger.statement_streams(), "n": PICKS}).fetchall()
    profiles = [p for (p,) in conn.execute(
        "SELECT DISTINCT profile_id FROM privacy.consent_ledger ORDER BY hash(profile_id) LIMIT $n",
        {"n": PICKS}).fetchall()]
    values = conn.execute(
        "SELECT DISTINCT id_type, value FROM identity.identifiers WHERE list_contains($types, id_type)"
        " AND (stream, record_id) IN (SELECT source, record_id FROM privacy.consent_ledger)"
        " ORDER BY hash(id_type, value) LIMIT $n", {"types": PERSON_TYPES, "n": PICKS}).fetchall()
    return {"records": records, "profiles": profiles, "values": values}


def _keys(conn: duckdb.DuckDBPyConnection, producer: str, keys: list[str]) -> None:
    conn.execute("CREATE OR REPLACE TEMP TABLE _logged AS SELECT DISTINCT unnest($keys::VARCHAR[]) AS key",
                 {"keys": keys})
    changes.log(conn, producer, "SELECT key, NULL AS before FROM _logged")


def _identifiers_read(conn: duckdb.DuckDBPyConnection, stream: str, record: str) -> None:
    """Log the record as identifiers does when it reads it again: before the change, with the values it carries."""
    conn.execute(f"CREATE OR REPLACE TEMP TABLE {identifiers.CHANGED} AS SELECT $stream AS stream, $record AS"
                 " record_id", {"stream": stream, "record": record})
    changes.log(conn, identifiers.PRODUCER, identifiers.REWRITTEN_SQL)


def _graph_resolved(conn: duckdb.DuckDBPyConnection, profiles: set[str], stream: str, record: str) -> None:
    """Log as the graph would: `profiles`, and every profile holding a value the record carries now."""
    holders = conn.execute(
        "SELECT DISTINCT rp.profile_id FROM identity.identifiers i JOIN identity.identifiers o USING (id_type, value)"
        " JOIN identity.record_profiles rp ON rp.stream = o.stream AND rp.record_id = o.record_id"
        " WHERE i.stream = $stream AND i.record_id = $record AND list_contains($types, i.id_type)",
        {"stream": stream, "record": record, "types": PERSON_TYPES}).fetchall()
    _keys(conn, resolution.PRODUCER, sorted(profiles | {p for (p,) in holders}))


def _profile(conn: duckdb.DuckDBPyConnection, stream: str, record: str) -> set[str]:
    rows = conn.execute(f"SELECT profile_id FROM identity.record_profiles WHERE {RECORD}",
                        {"stream": stream, "record": record}).fetchall()
    return {p for (p,) in rows}


def rename(conn: duckdb.DuckDBPyConnection, profile: str, like: str) -> None:
    """Give `profile` the golden names of `like`, as person profiles would, logged."""
    conn.execute("UPDATE identity.person_profiles p SET first_name = l.first_name, last_name = l.last_name"
                 " FROM identity.person_profiles l WHERE l.profile_id = $like AND p.profile_id = $p",
                 {"like": like, "p": profile})
    _keys(conn, profile_changes.FOLLOWER, [profile])


def judge_shared(conn: duckdb.DuckDBPyConnection, id_type: str, value: str) -> None:
    """Identity judges the value shared, or no longer; the graph resolves every holder again."""
    held = {"t": id_type, "v": value}
    if conn.execute("SELECT count(*) FROM identity.shared_values WHERE id_type = $t AND value = $v",
                    held).fetchall()[0][0]:
        conn.execute("DELETE FROM identity.shared_values WHERE id_type = $t AND value = $v", held)
    else:
        conn.execute("INSERT INTO identity.shared_values BY NAME SELECT $t AS id_type, $v AS value,"
                     " 'role mailbox' AS reason", held)
    holders = conn.execute("SELECT DISTINCT rp.profile_id FROM identity.identifiers i JOIN identity.record_profiles"
                           " rp USING (stream, record_id) WHERE i.id_type = $t AND i.value = $v", held).fetchall()
    _keys(conn, resolution.PRODUCER, [p for (p,) in holders])


def give(conn: duckdb.DuckDBPyConnection, stream: str, record: str, id_type: str, value: str) -> None:
    """The record carries one value more: identifiers reads it again, and the graph resolves it where it is."""
    _identifiers_read(conn, stream, record)
    conn.execute("INSERT INTO identity.identifiers BY NAME SELECT $stream AS stream, $record AS record_id,"
                 " $t AS id_type, $v AS value, $v AS raw_value, now() AS observed_at, now() AS last_seen_at",
                 {"stream": stream, "record": record, "t": id_type, "v": value})
    _graph_resolved(conn, _profile(conn, stream, record), stream, record)


def change(conn: duckdb.DuckDBPyConnection, picks: dict[str, list[Any]], kind: str, a: int, b: int) -> None:
    """Make one change to the warehouse and log it as its builds would."""
    stream, record = picks["records"][a % len(picks["records"])]
    profile = picks["profiles"][b % len(picks["profiles"])]
    id_type, value = picks["values"][b % len(picks["values"])]
    at = {"stream": stream, "record": record}
    source = next(s for s in load_rules().sources if s.stream == stream)
    if kind == "name":
        rename(conn, profile, picks["profiles"][a % len(picks["profiles"])])
    elif kind == "shared":
        judge_shared(conn, id_type, value)
    elif kind == "give":
        give(conn, stream, record, id_type, value)
    elif kind == "move":
        before = _profile(conn, stream, record)
        conn.execute(f"UPDATE identity.record_profiles SET profile_id = $p WHERE {RECORD}", {**at, "p": profile})
        _graph_resolved(conn, before | {profile}, stream, record)
    elif kind in ("consent", "deleted"):  # a staged row rewritten: identifiers reads its record again
        _identifiers_read(conn, stream, record)
        flip = "is_deleted = NOT coalesce(is_deleted, false)" if kind == "deleted" else FLIPS[stream]
        conn.execute(f"UPDATE {source.table} SET {flip} WHERE {source.key}::VARCHAR = $record", {"record": record})
    else:  # the record loses a value, or goes: identifiers reads it again, and the graph resolves it
        _identifiers_read(conn, stream, record)
        before = _profile(conn, stream, record)
        if kind == "take":
            conn.execute(f"DELETE FROM identity.identifiers WHERE {RECORD} AND (id_type, value) IN (SELECT id_type,"
                         f" value FROM identity.identifiers WHERE {RECORD} AND list_contains($types, id_type)"
                         " ORDER BY ALL LIMIT 1 OFFSET $n)", {**at, "types": PERSON_TYPES, "n": b % 3})
        else:  # gone from staging (quarantined, say), so from identity
            for table in ("identity.identifiers", "identity.record_profiles"):
                conn.execute(f"DELETE FROM {table} WHERE {RECORD}", at)
            conn.execute(f"DELETE FROM {source.table} WHERE {source.key}::VARCHAR = $record", {"record": record})
        _graph_resolved(conn, before, stream, record)


def _differing(made: Path, whole: Path) -> tuple[int, int]:
    with duckdb.connect() as conn:
        conn.execute(f"ATTACH '{made}' AS made (READ_ONLY); ATTACH '{whole}' AS whole (READ_ONLY)")
        return tuple(conn.execute(f"SELECT count(*) FROM (FROM {x}.{ledger.LEDGER} EXCEPT ALL FROM {y}.{ledger.LEDGER})"
                                  ).fetchall()[0][0] for x, y in (("made", "whole"), ("whole", "made")))


def follows_as_whole(made: Path, whole: Path, edit: Callable[[duckdb.DuckDBPyConnection], None]) -> None:
    """Make `edit` in the warehouse `made`, build its ledger following the log, and check it equals the ledger a
    copy makes whole; it made under half the statements."""
    params = consent.load().ledger_params()
    with duckdb.connect(str(made)) as conn:
        edit(conn)
        built = ledger.build(conn, params)
        assert built["followed_changes"] is True, built
        [(statements,)] = conn.execute(f"SELECT count(*) FROM {ledger.LEDGER}").fetchall()
        assert built["statements_made"] < statements / 2, (built, statements)
    shutil.copy(made, whole)
    with duckdb.connect(str(whole)) as conn:
        conn.execute(f"DELETE FROM {changes.POSITIONS}")  # no position: every statement made again
        assert ledger.build(conn, params)["followed_changes"] is False
    assert _differing(made, whole) == (0, 0)


def test_the_ledger_following_its_changes_equals_one_made_whole(unsynced: Path, tmp_path: Path) -> None:
    made, whole = tmp_path / "made.duckdb", tmp_path / "whole.duckdb"
    with duckdb.connect(str(unsynced / "warehouse.duckdb"), read_only=True) as conn:
        picks = _picks(conn)
    assert min(len(found) for found in picks.values()) >= 50, {name: len(found) for name, found in picks.items()}

    @given(rounds)
    @settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    def check(generated: list[list[tuple[str, int, int]]]) -> None:
        shutil.copy(unsynced / "warehouse.duckdb", made)
        for edits in generated:
            follows_as_whole(made, whole, lambda conn, edits=edits: [change(conn, picks, *e) for e in edits])

    check()


def test_a_login_two_profiles_hold_is_judged_on_their_names_then_by_identity(unsynced: Path, tmp_path: Path) -> None:
    """A product consent statement binds its profile through its login while the login is no shared value: given to
    a person on another profile, it is judged on the two golden names, and then by identity. The ledger following
    the log drops and restores the statement as one made whole does (the test world has no login two profiles hold,
    so the property above meets these changes only where they change nothing)."""
    made, whole = tmp_path / "made.duckdb", tmp_path / "whole.duckdb"
    shutil.copy(unsynced / "warehouse.duckdb", made)
    with duckdb.connect(str(made), read_only=True) as conn:
        [(owner, login, event)] = conn.execute("""
            SELECT l.profile_id, i.value, l.record_id FROM privacy.consent_ledger l
            JOIN identity.identifiers i ON i.stream = l.source AND i.record_id = l.record_id AND i.id_type = 'user_id'
            WHERE l.source = 'mixpanel.events' AND NOT l.quarantined AND NOT EXISTS (
                SELECT 1 FROM identity.identifiers o WHERE o.stream = l.source AND o.record_id = l.record_id
                  AND o.id_type IN ('email', 'phone'))
            ORDER BY ALL LIMIT 1""").fetchall()
        [(stream, record, other)] = conn.execute(
            "SELECT stream, record_id, profile_id FROM identity.record_profiles WHERE stream = 'zendesk.users'"
            " AND profile_id <> $owner ORDER BY ALL LIMIT 1", {"owner": owner}).fetchall()
        [(named_otherwise,)] = conn.execute(
            "SELECT min(profile_id) FROM identity.person_profiles WHERE first_name <> (SELECT first_name FROM"
            " identity.person_profiles WHERE profile_id = $owner)", {"owner": owner}).fetchall()

    def binds_owner() -> bool:
        with duckdb.connect(str(made), read_only=True) as conn:
            return conn.execute("SELECT count(*) FROM privacy.consent_ledger WHERE source = 'mixpanel.events'"
                                " AND record_id = $event AND profile_id = $owner",
                                {"event": event, "owner": owner}).fetchall()[0][0] > 0

    steps: list[tuple[str, Callable[[duckdb.DuckDBPyConnection], None], bool]] = [
        ("given to a person of the same names", lambda c: (rename(c, other, owner),
                                                           give(c, stream, record, "user_id", login)), True),
        ("their names differ", lambda c: rename(c, other, named_otherwise), False),
        ("their names agree again", lambda c: rename(c, other, owner), True),
        ("identity judges it shared", lambda c: judge_shared(c, "user_id", login), False),
        ("identity no longer does", lambda c: judge_shared(c, "user_id", login), True),
    ]
    for step, edit, bound in steps:
        follows_as_whole(made, whole, edit)
        assert binds_owner() is bound, step


def test_a_statement_bound_through_an_address_follows_the_address_leaving_a_record(unsynced: Path,
                                                                                   tmp_path: Path) -> None:
    """A product consent event whose login is a shared value binds the one profile its address leads to: none
    while a person on another profile holds the address too, its own owner's once that person's record no longer
    carries it (only the value the record carried before says which statements to make again)."""
    made, whole = tmp_path / "made.duckdb", tmp_path / "whole.duckdb"
    shutil.copy(unsynced / "warehouse.duckdb", made)
    with duckdb.connect(str(made), read_only=True) as conn:
        [(owner, login, event, address)] = conn.execute("""
            SELECT l.profile_id, i.value, l.record_id, min(a.value)
            FROM privacy.consent_ledger l
            JOIN identity.identifiers i ON i.stream = l.source AND i.record_id = l.record_id AND i.id_type = 'user_id'
            JOIN identity.record_profiles rp ON rp.profile_id = l.profile_id
            JOIN identity.identifiers a ON a.stream = rp.stream AND a.record_id = rp.record_id AND a.id_type = 'email'
            WHERE l.source = 'mixpanel.events' AND NOT l.quarantined AND NOT EXISTS (
                SELECT 1 FROM identity.identifiers o WHERE o.stream = l.source AND o.record_id = l.record_id
                  AND o.id_type IN ('email', 'phone'))
            GROUP BY ALL ORDER BY ALL LIMIT 1""").fetchall()
        [(stream, record, other), (_, sharer, _)] = conn.execute(  # people of two other profiles
            "SELECT any_value(stream), min(record_id), profile_id FROM identity.record_profiles WHERE stream ="
            " 'zendesk.users' AND profile_id <> $owner GROUP BY profile_id ORDER BY ALL LIMIT 2",
            {"owner": owner}).fetchall()

    def taken(conn: duckdb.DuckDBPyConnection) -> None:
        _identifiers_read(conn, stream, record)
        conn.execute(f"DELETE FROM identity.identifiers WHERE {RECORD} AND id_type = 'email' AND value = $address",
                     {"stream": stream, "record": record, "address": address})
        _graph_resolved(conn, {other}, stream, record)

    steps: list[tuple[str, Callable[[duckdb.DuckDBPyConnection], None], list[str]]] = [
        ("its login held on another profile, judged shared", lambda c: (give(c, stream, sharer, "user_id", login),
                                                                        judge_shared(c, "user_id", login)), []),
        ("its address held by two profiles", lambda c: (give(c, "mixpanel.events", event, "email", address),
                                                        give(c, stream, record, "email", address)), []),
        ("the other record no longer carrying it", taken, [owner]),
    ]
    for step, edit, bound in steps:
        follows_as_whole(made, whole, edit)
        with duckdb.connect(str(made), read_only=True) as conn:
            assert conn.execute("SELECT DISTINCT profile_id FROM privacy.consent_ledger WHERE source ="
                                " 'mixpanel.events' AND record_id = $event", {"event": event}).fetchall() == [
                (profile,) for profile in bound], step


def test_a_statement_record_carrying_no_value_is_followed_where_the_graph_places_it(unsynced: Path,
                                                                                  tmp_path: Path) -> None:
    """A Klaviyo profile with no address, number or login left binds the profile identity places it on (the graph
    may link it by name alone): stripped of its values, then moved to another profile, its statement moves with it,
    and its choice turned round there is read again."""
    made, whole = tmp_path / "made.duckdb", tmp_path / "whole.duckdb"
    shutil.copy(unsynced / "warehouse.duckdb", made)
    with duckdb.connect(str(made), read_only=True) as conn:
        [(record, owner)] = conn.execute("SELECT min(record_id), arg_min(profile_id, record_id) FROM"
                                         " privacy.consent_ledger WHERE source = 'klaviyo.profiles'").fetchall()
        [(other,)] = conn.execute("SELECT min(profile_id) FROM identity.record_profiles WHERE profile_id <> $owner",
                                  {"owner": owner}).fetchall()
    at = {"stream": "klaviyo.profiles", "record": record}

    def stripped(conn: duckdb.DuckDBPyConnection) -> None:
        _identifiers_read(conn, *at.values())
        conn.execute(f"DELETE FROM identity.identifiers WHERE {RECORD} AND list_contains($types, id_type)",
                     {**at, "types": PERSON_TYPES})
        _graph_resolved(conn, {owner}, *at.values())

    def moved(conn: duckdb.DuckDBPyConnection) -> None:
        conn.execute(f"UPDATE identity.record_profiles SET profile_id = $other WHERE {RECORD}", {**at, "other": other})
        _graph_resolved(conn, {owner, other}, *at.values())

    def turned(conn: duckdb.DuckDBPyConnection) -> None:
        _identifiers_read(conn, *at.values())
        conn.execute(f"UPDATE staging.klaviyo__profiles SET {FLIPS['klaviyo.profiles']} WHERE profile_id = $record",
                     {"record": record})

    with duckdb.connect(str(made), read_only=True) as conn:
        [(choice,)] = conn.execute("SELECT choice FROM privacy.consent_ledger WHERE record_id = $r AND source ="
                                   " 'klaviyo.profiles'", {"r": record}).fetchall()
    turned_to = {"granted": "denied", "denied": "granted"}[choice]
    for edit, bound in ((stripped, (owner, choice)), (moved, (other, choice)), (turned, (other, turned_to))):
        follows_as_whole(made, whole, edit)
        with duckdb.connect(str(made), read_only=True) as conn:
            assert conn.execute("SELECT profile_id, choice FROM privacy.consent_ledger WHERE record_id = $r"
                                " AND source = 'klaviyo.profiles'", {"r": record}).fetchall() == [bound]


def test_a_product_consent_event_dated_ahead_is_made_once_its_time_comes(unsynced: Path, tmp_path: Path) -> None:
    """A consent event stamped two seconds ahead is no statement until then; the build after that, with nothing
    logged, makes it (as one made whole does)."""
    made, whole = tmp_path / "made.duckdb", tmp_path / "whole.duckdb"
    shutil.copy(unsynced / "warehouse.duckdb", made)
    with duckdb.connect(str(made), read_only=True) as conn:
        [(event,)] = conn.execute("SELECT min(record_id) FROM privacy.consent_ledger WHERE source = 'mixpanel.events'"
                                  " AND NOT quarantined").fetchall()
    due = time.time() + 2

    def dated_ahead(conn: duckdb.DuckDBPyConnection) -> None:
        _identifiers_read(conn, "mixpanel.events", event)
        conn.execute("UPDATE staging.mixpanel__events SET occurred_at = to_timestamp($due) WHERE insert_id = $event",
                     {"due": due, "event": event})

    def made_statements() -> int:
        with duckdb.connect(str(made), read_only=True) as conn:
            return conn.execute("SELECT count(*) FROM privacy.consent_ledger WHERE source = 'mixpanel.events'"
                                " AND record_id = $event", {"event": event}).fetchall()[0][0]

    follows_as_whole(made, whole, dated_ahead)
    assert made_statements() == 0
    while time.time() < due + 0.5:
        time.sleep(0.1)
    follows_as_whole(made, whole, lambda conn: None)
    assert made_statements() > 0


@pytest.mark.parametrize("kind", [kind for kind in KINDS if kind not in ("name", "shared")])
def test_each_kind_of_change_reaches_the_ledger(unsynced: Path, tmp_path: Path, kind: str) -> None:
    """Each kind of change the property makes can alter the ledger made whole (else the property would not test
    it); a change of names or of identity's verdict only through a login two profiles hold (tested above)."""
    source, made = unsynced / "warehouse.duckdb", tmp_path / "made.duckdb"
    with duckdb.connect(str(source), read_only=True) as conn:
        picks = _picks(conn)
        before = conn.execute(f"FROM {ledger.LEDGER} ORDER BY ALL").fetchall()
    for a in range(0, 60, 3):
        shutil.copy(source, made)
        with duckdb.connect(str(made)) as conn:
            change(conn, picks, kind, a, a + 1)
            conn.execute(f"DELETE FROM {changes.POSITIONS}")
            ledger.build(conn, consent.load().ledger_params())
            after = conn.execute(f"FROM {ledger.LEDGER} ORDER BY ALL").fetchall()
        if after != before:
            return
    pytest.fail(f"no change of kind {kind} altered the ledger")

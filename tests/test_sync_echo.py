"""Echoes: what the HubSpot and Zendesk syncs write comes back in the next pull, and is not news about anyone.

The `start(synced=True)` world has been pulled once, then run once with the syncs (writing `cdp_*` fields onto
HubSpot contacts and Zendesk users); the run here pulls those writes back. They must land marked as echoes and leave
every profile as it was, while a change someone made at the source at the same time is still taken.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import duckdb
from hypothesis import example, given, settings
from hypothesis import strategies as st

from cdp_assets import echoes, landing
from cdp_assets.sync import plan
from resources import hubspot, zendesk
from resources.source import Page
from sandbox.store import Record, WorldStore
from tests.conftest import Env

ECHO_STREAMS = {"hubspot.contacts": ("raw.hubspot_contacts", "hubspot_contacts"),
                "zendesk.users": ("raw.zendesk_users", "zendesk_users")}  # fmt: skip


def snapshot(env: Env, table: str) -> dict[str, tuple[Any, ...]]:
    """Every row of a profile-grained table by profile id, but for when it was computed (`as_of`)."""
    columns = [row[0] for row in env.pipeline.query(
        "SELECT column_name FROM information_schema.columns WHERE table_schema || '.' || table_name = $t"
        " AND column_name <> 'as_of' ORDER BY ordinal_position", {"t": table})]  # fmt: skip
    assert columns[0] == "profile_id" and "last_seen_at" in columns
    rows = env.pipeline.query(f"SELECT {', '.join(columns)} FROM {table}")
    assert len({row[0] for row in rows}) == len(rows) > 100
    return {row[0]: row for row in rows}


def edit_at_source(env: Env, stream: str, record_id: str, **fields: Any) -> None:
    """Someone changes a record in the tool: `fields` (dotted paths) set on what it holds now, changed now."""
    store = WorldStore(env.world)
    record = store.get(stream, record_id)
    assert record is not None
    now = time.time()
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
    times = {"hubspot.contacts": hubspot.STREAMS["contacts"].change_times,
             "zendesk.users": zendesk.STREAMS["users"].change_times}
    payload = record.payload
    for path, value in {**dict.fromkeys(times[stream], stamp), **fields}.items():
        *parents, last = path.split(".")
        node = payload
        for key in parents:
            node = node[key]
        node[last] = value
    store.upsert([Record(stream, record_id, record.created, int(now * 1000), payload)])


def test_a_second_run_lands_no_echo_as_a_change(start: Callable[..., Env]) -> None:
    env = start(synced=True)  # the syncs wrote onto contacts and users the first pull landed
    query = env.pipeline.query
    written = {  # the records each sync wrote onto, by their id at the source
        stream: {row[0] for row in query("SELECT destination_id FROM sync.state WHERE sync = $s", {"s": sync})}
        for stream, (_, sync) in ECHO_STREAMS.items()
    }
    assert all(len(ids) > 20 for ids in written.values())
    rows_before = {table: query(f"SELECT count(*) FROM {table}")[0][0] for table, _ in ECHO_STREAMS.values()}
    profiles, view = snapshot(env, "identity.person_profiles"), snapshot(env, "views.customer_360")

    # While the writes wait to be pulled, a salesperson renames one synced contact and an agent one synced user.
    contact, user = min(written["hubspot.contacts"]), min(written["zendesk.users"])
    edit_at_source(env, "hubspot.contacts", contact, **{"properties.firstname": "Renamedfirst"})
    edit_at_source(env, "zendesk.users", user, name="Renamed Requester")
    # The records profiled with the edited ones: a renamed record now disagrees on who it is with a record it shares
    # an address with, which may make that address shared (identity.shared_values) and part their profile. That is
    # the real change taken, not an echo, so those profiles may change; every other profile must not.
    together = query("SELECT stream || ':' || record_id FROM identity.record_profiles WHERE profile_id IN"
                     " (SELECT profile_id FROM identity.record_profiles WHERE (stream, record_id) IN"
                     " (('hubspot.contacts', $c), ('zendesk.users', $u)))", {"c": contact, "u": user})  # fmt: skip

    second = env.pipeline.run()
    assert second.success

    # Positive control: the writes came back as new versions, Zendesk's carrying the fields the sync wrote.
    for stream, (table, _) in ECHO_STREAMS.items():
        landed = query(f"SELECT record_id, landing_id IN (SELECT landing_id FROM raw._echoes WHERE raw_table = $t)"
                       f" FROM {table} WHERE run_id = $run", {"t": table, "run": second.run_id})  # fmt: skip
        assert query(f"SELECT count(*) FROM {table}")[0][0] - rows_before[table] == len(landed) > 20, stream
        marked = {record_id for record_id, echo in landed if echo}
        edited = contact if stream == "hubspot.contacts" else user
        assert {record_id for record_id, _ in landed} - marked == {edited}, stream  # only the real change counts
        assert marked <= written[stream]
        assert second.metadata[f"raw/{table.removeprefix('raw.')}"]["echoes"] == len(marked)
    carrying = query("SELECT count(*) FROM raw.zendesk_users WHERE run_id = $run"
                     " AND json_extract_string(payload, '$.user_fields.cdp_profile_id') IS NOT NULL",
                     {"run": second.run_id})[0][0]  # fmt: skip
    assert carrying > 20

    # The real changes are taken, with their time; the echoes change no profile and no view row.
    assert query("SELECT first_name FROM staging.hubspot__contacts WHERE contact_id = $c", {"c": contact}) == [
        ("Renamedfirst",)
    ]
    assert query("SELECT name FROM staging.zendesk__users WHERE user_id = $u", {"u": user}) == [("Renamed Requester",)]
    edited_profiles = {row[0] for row in query(
        "SELECT profile_id FROM identity.record_profiles WHERE (stream, record_id) IN"
        " (('hubspot.contacts', $c), ('zendesk.users', $u))", {"c": contact, "u": user})}  # fmt: skip
    after, view_after = snapshot(env, "identity.person_profiles"), snapshot(env, "views.customer_360")
    for profile_id in edited_profiles:
        assert after[profile_id] != profiles[profile_id]  # last_seen_at moved to the edit
    edited_profiles |= {row[0] for row in query(
        "SELECT profile_id FROM identity.record_profiles WHERE stream || ':' || record_id IN (SELECT unnest($r))",
        {"r": [record for (record,) in together]})}  # fmt: skip
    changed = {p for p in profiles.keys() | after.keys() if profiles.get(p) != after.get(p)} - edited_profiles
    assert not changed, f"{len(changed)} profiles changed by the platform's own writes"
    changed_rows = {p for p in view.keys() | view_after.keys() if view.get(p) != view_after.get(p)} - edited_profiles
    assert not changed_rows, f"{len(changed_rows)} customer_360 rows changed by the platform's own writes"

    # And the syncs have nothing to send back: no loop.
    sent = query("SELECT sync, count(*) FROM sync.deliveries WHERE run_id = $run"
                 " AND sync IN (SELECT unnest($syncs)) GROUP BY 1",
                 {"run": second.run_id, "syncs": [sync for _, sync in ECHO_STREAMS.values()]})  # fmt: skip
    assert sent == []


PLANS, AMOUNTS = st.sampled_from(["pro", "free", None]), st.sampled_from([0.0, 12.5, 40.0])


@settings(max_examples=40, deadline=None)
@given(acknowledged=st.tuples(PLANS, AMOUNTS), served=st.tuples(PLANS, AMOUNTS, st.booleans()),
       renamed=st.booleans(), written_before_read=st.booleans())  # fmt: skip
@example(acknowledged=("pro", 12.5), served=("pro", 12.5, True), renamed=False, written_before_read=False)
@example(acknowledged=(None, 0.0), served=(None, 0.0, False), renamed=False, written_before_read=False)
def test_an_echo_is_only_what_the_sync_last_had_acknowledged(
    acknowledged: tuple[str | None, float], served: tuple[str | None, float, bool], renamed: bool,
    written_before_read: bool,
) -> None:
    """A Zendesk user pulled back after a sync: an echo exactly when nothing but the change time and the sync's
    fields moved, they hold what the sync last had acknowledged (an amount as Zendesk or HubSpot may spell it,
    number or text), and that write came after the version before it was read; landing it again marks nothing."""
    table, stream = "raw.zendesk_users", zendesk.STREAMS["users"]
    rule = echoes.rule("zendesk", stream)
    assert rule is not None

    def land(user: dict[str, Any]) -> landing.LandingResult:
        page = Page([zendesk._record(user, zendesk.IS_DELETED["users"])], {})
        return landing.land_stream(conn, table=table, source="zendesk", stream="users", tombstone_missing=False,
                                   pages=iter([page]), full_pull=False, run_id="test", echo_rule=rule)  # fmt: skip

    user = {"id": 7, "name": "Ada Byron", "email": "ada@example.com", "active": True, "user_fields": {},
            "updated_at": "2026-01-01T00:00:00Z"}  # fmt: skip
    with duckdb.connect() as conn:
        landing.setup(conn, table)
        plan.setup(conn)
        assert land(user).echoes == 0
        conn.execute(
            "INSERT INTO sync.state VALUES ('zendesk_users', 'ada@example.com', 'sum', $payload, '7', $at, 'sync-run')",
            {"payload": json.dumps({"user_fields.cdp_plan": acknowledged[0], "user_fields.cdp_mrr": acknowledged[1]}),
             "at": datetime(2000, 1, 1, tzinfo=UTC) if written_before_read else datetime.now(UTC)},
        )  # fmt: skip
        plan_served, amount, as_text = served
        echo = {**user, "updated_at": "2026-06-01T00:00:00Z", "name": "Ada Lovelace" if renamed else user["name"],
                "user_fields": {"cdp_plan": plan_served, "cdp_mrr": str(amount) if as_text else amount}}  # fmt: skip
        result = land(echo)
        expected = (plan_served, amount) == acknowledged and not renamed and not written_before_read
        assert (result.rows_new, result.echoes) == (1, int(expected))
        assert land(echo).rows_new == 0  # read again (an overlap, a killed run landing again): nothing twice
        assert conn.execute("SELECT count(*) FROM raw._echoes").fetchone()[0] == int(expected)

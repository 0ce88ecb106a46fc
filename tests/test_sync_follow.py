"""A sync that follows its view's change log (cdp_assets/sync/plan.py) plans what a plan of every row would, on views
nobody here built: generated rows (keys changed, shared by two rows, NULL or empty, rows in and out of `where`,
required fields missing), consent flipped, addresses placed in other profiles or judged shared, rows deleted, each
change logged as the view's build and the graph's would log it. Real DuckDB, the real plan and log; the destination
takes everything it is sent."""

from __future__ import annotations

from typing import Any

import duckdb
from hypothesis import given, settings
from hypothesis import strategies as st

from cdp_assets import changes
from cdp_assets.identity import resolution
from cdp_assets.sync import plan
from cdp_assets.sync.specs import SyncSpec
from cdp_assets.views import following

SPEC = SyncSpec(name="generated", description="a generated view", view="customer_360", destination="hubspot",
                mode="mirror", key="email", key_type="email", fields={"plan": "plan"}, purpose="sales_outreach",
                where="crm_contact_id IS NOT NULL", required=("plan",))  # fmt: skip
PROFILES = [f"prof_{n}" for n in range(8)]
KEYS = [f"person{n}@example.com" for n in range(6)]
SETUP_SQL = """
CREATE SCHEMA views; CREATE SCHEMA identity; CREATE SCHEMA privacy;
CREATE TABLE views.customer_360 (profile_id VARCHAR, email VARCHAR, plan VARCHAR, crm_contact_id VARCHAR);
CREATE TABLE privacy.consent (profile_id VARCHAR, purpose VARCHAR, allowed BOOLEAN);
CREATE TABLE identity.shared_values (id_type VARCHAR, value VARCHAR, reason VARCHAR);
CREATE TABLE identity.identifier_profiles (id_type VARCHAR, value VARCHAR, profile_id VARCHAR, shared BOOLEAN);
"""
row = st.tuples(st.sampled_from([*KEYS, None, ""]), st.sampled_from(["pro", "free", None]),
                st.sampled_from(["contact", None]))  # fmt: skip
edit = st.one_of(
    st.tuples(st.just("row"), st.integers(0, 7), row),
    st.tuples(st.just("delete"), st.integers(0, 7), st.none()),
    st.tuples(st.just("consent"), st.integers(0, 7), st.none()),
    st.tuples(st.just("placed"), st.integers(0, 7), st.sampled_from(KEYS)),
    st.tuples(st.just("shared"), st.integers(0, 7), st.sampled_from(KEYS)),
)


def holders(conn: duckdb.DuckDBPyConnection, value: str) -> set[str]:
    rows = conn.execute("SELECT profile_id FROM identity.identifier_profiles WHERE value = $v", {"v": value})
    return {profile for (profile,) in rows.fetchall()}


def change(conn: duckdb.DuckDBPyConnection, kind: str, profile: str, what: Any) -> tuple[set[str], set[str]]:
    """Make one change; returns the profiles the view's build and the graph's would log."""
    if kind == "consent":
        conn.execute("UPDATE privacy.consent SET allowed = NOT allowed WHERE profile_id = $p", {"p": profile})
        return {profile}, set()
    if kind in ("row", "delete"):
        conn.execute("DELETE FROM views.customer_360 WHERE profile_id = $p", {"p": profile})
        if kind == "delete":
            return {profile}, set()
        conn.execute("INSERT INTO views.customer_360 VALUES ($p, $e, $plan, $crm)",
                     dict(zip(("p", "e", "plan", "crm"), (profile, *what), strict=True)))
        if not what[0] or profile in holders(conn, what[0]):
            return {profile}, set()
        placed = holders(conn, what[0]) | {profile}  # the graph places the row's key in its profile and logs holders
    elif kind == "placed":
        placed = holders(conn, what) | {profile}
    else:  # a value judged shared, or no longer
        shared = conn.execute("SELECT count(*) FROM identity.shared_values WHERE value = $v", {"v": what}).fetchall()
        conn.execute("DELETE FROM identity.shared_values WHERE value = $v" if shared[0][0] else
                     "INSERT INTO identity.shared_values VALUES ('email', $v, 'role mailbox')", {"v": what})
        conn.execute("UPDATE identity.identifier_profiles SET shared = value IN (SELECT value FROM"
                     " identity.shared_values)")
        return set(), holders(conn, what)
    conn.execute("INSERT INTO identity.identifier_profiles VALUES ('email', $v, $p, false)",
                 {"v": what if kind == "placed" else what[0], "p": profile})
    return {profile}, placed


def planned(conn: duckdb.DuckDBPyConnection, position: changes.Position | None) -> tuple[Any, ...]:
    counts = plan.prepare(conn, SPEC, position)
    rows = conn.execute("SELECT key, change, payload, previous FROM _sync_plan ORDER BY ALL").fetchall()
    held_back = conn.execute("SELECT key, invalid_reason, left_out_reason FROM _sync_model WHERE invalid_reason IS"
                             " NOT NULL OR left_out_reason IS NOT NULL ORDER BY ALL NULLS FIRST").fetchall()
    return rows, held_back, (counts.rows, counts.invalid, counts.added, counts.changed, counts.removed, counts.left_out)


def taken(conn: duckdb.DuckDBPyConnection) -> None:
    """The destination takes the whole plan: state moves as acknowledgements move it."""
    conn.execute("DELETE FROM sync.state WHERE sync = $s AND key IN (SELECT key FROM _sync_plan WHERE change ="
                 " 'remove')", {"s": SPEC.name})
    conn.execute("INSERT OR REPLACE INTO sync.state SELECT $s, key, checksum, payload::JSON, NULL, now(), 'run'"
                 " FROM _sync_plan WHERE change <> 'remove'", {"s": SPEC.name})


def log(conn: duckdb.DuckDBPyConnection, producer: str, profiles: set[str]) -> None:
    conn.execute("CREATE OR REPLACE TEMP TABLE _logged AS SELECT unnest($p::VARCHAR[]) AS key", {"p": sorted(profiles)})
    changes.log(conn, producer, "SELECT key, NULL::JSON AS before FROM _logged")


@settings(max_examples=60, deadline=None)
@given(first=st.lists(row, min_size=8, max_size=8), refusals=st.lists(st.booleans(), min_size=8, max_size=8),
       rounds=st.lists(st.lists(edit, min_size=1, max_size=3), min_size=1, max_size=5))
def test_a_following_plan_is_the_plan_of_every_row(first: list[Any], refusals: list[bool], rounds: list[Any]) -> None:
    with duckdb.connect() as conn:
        conn.execute(SETUP_SQL)
        plan.setup(conn)
        for profile, values, refused in zip(PROFILES, first, refusals, strict=True):
            conn.execute("INSERT INTO views.customer_360 VALUES ($p, $e, $plan, $crm)",
                         dict(zip(("p", "e", "plan", "crm"), (profile, *values), strict=True)))
            conn.execute("INSERT INTO privacy.consent VALUES ($p, 'sales_outreach', $a)",
                         {"p": profile, "a": not refused})
            if values[0]:
                conn.execute("INSERT INTO identity.identifier_profiles VALUES ('email', $v, $p, false)",
                             {"v": values[0], "p": profile})
        follower, fingerprint, producers = plan.follower(SPEC.name), plan.fingerprint(SPEC), [
            following.logged_as(SPEC.view), resolution.PRODUCER]
        position = changes.follow(conn, follower, producers, fingerprint, ("sync.model_rows",))
        assert position.whole == "no earlier build"
        planned(conn, position)
        taken(conn)
        plan.keep(conn, SPEC, position)
        for edits in rounds:
            view, graph = set(), set()
            for kind, n, what in edits:
                made, placed = change(conn, kind, PROFILES[n], what)
                view, graph = view | made, graph | placed
            log(conn, following.logged_as(SPEC.view), view)
            log(conn, resolution.PRODUCER, graph)
            whole = planned(conn, None)
            position = changes.follow(conn, follower, producers, fingerprint, ("sync.model_rows",))
            assert position.whole is None
            assert planned(conn, position) == whole, edits
            taken(conn)
            plan.keep(conn, SPEC, position)

"""Which person profiles a build must make again: those the change log (cdp_assets/changes.py) reaches.

A profile is made again when the graph rewrote it (it retired, gained or lost records) or when a staged row it reads
changed: a person record of its own, or a row hanging from one (a subscription or invoice from its Stripe customer,
a ticket from its requester, an email event from its Klaviyo profile), as the row hangs now and as it hung before
the change; and when a time its profile judges against the clock (CLOCKED: a record's creation or change, a product
or email event) turned from future to past since the last build. A changed row of an entity no profile hangs it from
(Klaviyo's metrics, which name every event), a whole rewrite of any table it reads, a change to the code or rules that
make profiles, or a first build makes them all again. The nightly run makes them all again too: it replays staging
and resolves the graph whole.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from pathlib import Path

import duckdb

from cdp_assets import changes, glossary
from cdp_assets.identity import resolution
from cdp_assets.staging import staging_table
from resources import primary_key

FOLLOWER = "identity.person_profiles"
AFFECTED = "_affected_profiles"  # TEMP (profile_id): the profiles a following build makes again
SCOPE = "_scope_records"  # TEMP VIEW (stream, record_id, profile_id): the records of the profiles a build makes
# Each staging entity the profiles read, as the stream of identity.record_profiles its rows hang from and the column
# holding that stream's record id. Product events are keyed by `$insert_id` in the graph.
OWNERS = {
    "stripe__customers": ("stripe.customers", "customer_id"),
    "stripe__subscriptions": ("stripe.customers", "customer_id"),
    "stripe__invoices": ("stripe.customers", "customer_id"),
    "hubspot__contacts": ("hubspot.contacts", "contact_id"),
    "zendesk__users": ("zendesk.users", "user_id"),
    "zendesk__tickets": ("zendesk.users", "requester_id"),
    "klaviyo__profiles": ("klaviyo.profiles", "profile_id"),
    "klaviyo__events": ("klaviyo.profiles", "profile_id"),
    "mixpanel__events": ("mixpanel.events", "insert_id"),
}
OWNER_SQL = """
SELECT rp.profile_id FROM ({linked}) o
JOIN identity.record_profiles rp ON rp.stream = $stream_{n} AND rp.record_id = o.record_id"""
# The times the profiles compare with the moment they are built (`$as_of` in sql/person_records.sql's dates,
# person_profiles.sql and email_events.sql): a future one counts once it has passed.
CLOCKED = {
    "stripe__customers": ("created_at",),
    "hubspot__contacts": ("created_at", "updated_at"),
    "zendesk__users": ("created_at", "updated_at"),
    "klaviyo__profiles": ("created_at", "updated_at"),
    "mixpanel__events": ("occurred_at",),
    "klaviyo__events": ("occurred_at",),
}
CLOCKED_SQL = """
SELECT rp.profile_id FROM {table} s
JOIN identity.record_profiles rp ON rp.stream = $stream_{n} AND rp.record_id = s.{column}::VARCHAR
WHERE s.{time} > $since AND s.{time} <= $as_of"""
# What makes profiles, as this process loaded it.
FINGERPRINT = changes.code_fingerprint([Path(__file__).parent, glossary.MACROS, Path(glossary.__file__)],
                                       f"duckdb {duckdb.__version__}")


def affected_sql(position: changes.Position, entities: list[str], clocked: dict[str, tuple[str, ...]]
                 ) -> tuple[str, dict[str, object]]:
    """The query filling AFFECTED from the followed changes of the staging `entities` and the graph, and from the
    `clocked` times that passed since the last build (a following `position`), and its parameters."""
    branches = [f"SELECT key AS profile_id FROM {changes.FOLLOWED} WHERE producer = $graph"]
    params: dict[str, object] = {"graph": resolution.PRODUCER}
    for n, (entity, (stream, column)) in enumerate(OWNERS.items()):
        if entity not in entities:
            continue
        table, key = staging_table(*entity.split("__")), primary_key(entity)
        linked, linked_params = changes.linked(table, key, entity, column, n)  # the row's owner, now and before
        params |= {f"stream_{n}": stream, **linked_params}
        branches.append(OWNER_SQL.format(linked=linked, n=n))
        for time in clocked.get(entity, ()):
            branches.append(CLOCKED_SQL.format(table=table, column=column, time=time, n=n))
            params |= {"since": position.since, "as_of": position.as_of}
    return f"CREATE OR REPLACE TEMP TABLE {AFFECTED} AS " + "\nUNION\n".join(branches), params


def affected(conn: duckdb.DuckDBPyConnection, follower: str, entities: list[str], tables: tuple[str, ...],
             clocked: dict[str, tuple[str, ...]] = CLOCKED, fingerprint: str = FINGERPRINT,
             as_of: datetime | None = None) -> changes.Position:
    """The position of `follower`'s build, which reads the staging `entities`, compares their `clocked` times with
    its moment (`as_of`, by default the moment it starts) and writes `tables` ("schema.table"); `fingerprint`, of
    the code and rules that build it. When it follows its changes, TEMP AFFECTED holds the profiles they reach."""
    position = changes.follow(conn, follower, [*entities, resolution.PRODUCER], fingerprint, tables)
    if as_of is not None:
        position = replace(position, as_of=as_of)
    if position.whole is None:
        unowned = conn.execute(
            f"SELECT DISTINCT producer FROM {changes.FOLLOWED} WHERE NOT list_contains($owned, producer) ORDER BY 1",
            {"owned": [*OWNERS, resolution.PRODUCER]},
        ).fetchall()
        if unowned:
            position = position.rebuilt("changed, hung from no profile: " + ", ".join(p for (p,) in unowned))
    if position.whole is None:
        sql, params = affected_sql(position, entities, clocked)
        conn.execute(sql, params)
    return position


def scope(conn: duckdb.DuckDBPyConnection, entities: list[str]) -> changes.Position:
    """TEMP SCOPE: every record, or, when the profiles follow their changes, the records of the AFFECTED
    profiles; `entities`, the staging entities they read. Returns the position to keep after the build."""
    position = affected(conn, FOLLOWER, entities, (FOLLOWER,))
    if position.whole is not None:
        whole_scope(conn)
        return position
    # The few records kept in a table, which each trait's candidates read again, rather than filtered from
    # identity.record_profiles at every read.
    records_scope(conn, f"SELECT * FROM identity.record_profiles WHERE profile_id IN (FROM {AFFECTED})")
    return position


def records_scope(conn: duckdb.DuckDBPyConnection, records: str) -> None:
    """TEMP SCOPE over the rows of identity.record_profiles that the query `records` selects, kept in a table."""
    conn.execute(f"CREATE OR REPLACE TEMP TABLE _scope_rows AS {records}")
    conn.execute(f"CREATE OR REPLACE TEMP VIEW {SCOPE} AS FROM _scope_rows")


def whole_scope(conn: duckdb.DuckDBPyConnection) -> None:
    """TEMP SCOPE over every record: a whole build's, and that of the builds that do not follow changes."""
    conn.execute(f"CREATE OR REPLACE TEMP VIEW {SCOPE} AS SELECT * FROM identity.record_profiles")

"""views.customer_timeline follows the change log (cdp_assets/changes.py): an hourly build numbers again only the
timelines of the profiles its changes reach (identity/profile_changes.py: the profiles the graph rewrote, and those a
changed ticket, invoice, subscription or event hangs from, now and before), and of the profiles with an interaction
dated ahead that the clock has since passed. It is built as of the lifecycle's moment (`identity.person_lifecycle`),
as every team view is; a changed Klaviyo metric, which names every email event, a whole rewrite of what it reads, a
change to its SQL or to this module, or a first build makes every timeline again."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb

from cdp_assets import changes
from cdp_assets.identity import lifecycle, profile_changes, resolution
from cdp_assets.staging import staging_table

FOLLOWER = "views.customer_timeline"
SQL = Path(__file__).parent / "sql" / "customer_timeline.sql"
ENTITIES = ["zendesk__tickets", "stripe__invoices", "stripe__subscriptions", "klaviyo__events", "klaviyo__metrics",
            "mixpanel__events"]
# What its build reads beside its SQL: the lifecycle's moment, the graph's records, and what ENTITIES and the graph
# logged (identity/profile_changes.py).
READS = (lifecycle.FOLLOWER, "identity.record_profiles", resolution.PRODUCER,
         *(staging_table(*entity.split("__")) for entity in ENTITIES))
# The times the timeline compares with its moment: an interaction dated ahead joins it once that time has passed.
CLOCKED = {
    "zendesk__tickets": ("created_at",),
    "stripe__invoices": ("created_at",),
    "stripe__subscriptions": ("created_at", "canceled_at"),
    "klaviyo__events": ("occurred_at",),
    "mixpanel__events": ("occurred_at",),
}
FINGERPRINT = changes.code_fingerprint([SQL, Path(__file__)], f"duckdb {duckdb.__version__}")


def build(conn: duckdb.DuckDBPyConnection) -> dict[str, Any]:
    """Number again the timelines the change log reaches (or all of them), as of the lifecycle's moment; their rows
    replace the old ones, and the log's position is kept, in one transaction. Returns the build's metadata."""
    [(as_of,)] = conn.execute(f"SELECT any_value(as_of) FROM {lifecycle.FOLLOWER}").fetchall()
    position = profile_changes.affected(conn, FOLLOWER, ENTITIES, (FOLLOWER,), CLOCKED, FINGERPRINT,
                                        as_of or datetime.now(UTC))
    if position.whole is None:
        profile_changes.records_scope(
            conn, f"SELECT * FROM identity.record_profiles WHERE profile_id IN (FROM {profile_changes.AFFECTED})")
    else:
        profile_changes.whole_scope(conn)
    conn.execute(SQL.read_text(), {"as_of": as_of})
    with changes.keeping(conn, position):
        changes.replace_rows(conn, position, FOLLOWER, "_customer_timeline", "profile_id",
                             f"FROM {profile_changes.AFFECTED}", "profile_id, seq")
    if position.whole is not None:
        return {"followed_changes": False}
    [(made,)] = conn.execute(f"SELECT count(*) FROM {profile_changes.AFFECTED}").fetchall()
    return {"followed_changes": True, "profiles_made": made}

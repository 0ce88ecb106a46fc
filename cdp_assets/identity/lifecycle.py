"""Where each person is in the customer lifecycle: the shared facts every team's view is built on."""

from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
from dagster import AssetExecutionContext, AssetKey, AssetsDefinition, MaterializeResult, asset

from cdp_assets import changes, glossary
from cdp_assets.glossary import RUNNING_STATUSES
from cdp_assets.identity import profile_changes
from cdp_assets.identity.profiles import measures
from cdp_assets.raw import OWNER
from cdp_assets.staging import staging_key

LIFECYCLE_KEY = AssetKey(["identity", "person_lifecycle"])
SQL = Path(__file__).parent / "sql" / "person_lifecycle.sql"
SIGNUP_EVENT = "Signed Up"
# The moments a new user first gets value from the product: the first report or the first invited colleague.
ACTIVATION_EVENTS = ("Report Created", "Invite Sent")
NOT_ACTIVITY = ("Consent updated",)  # answering a consent banner is not using the product
PAYMENT_ISSUE_STATUSES = ("past_due", "unpaid")
READS = (
    ("mixpanel", "events"), ("stripe", "customers"), ("stripe", "subscriptions"), ("stripe", "invoices"),
    ("zendesk", "tickets"),
)  # fmt: skip
FOLLOWER = "identity.person_lifecycle"
# When a staged time changes a person's standing as the clock moves (sql/person_lifecycle.sql): a product event counts
# once it has happened and leaves the 7- and 30-day windows after them; a bad rating leaves its 90-day window.
CLOCKED = {
    "mixpanel__events": ("occurred_at", "occurred_at + INTERVAL 7 DAY", "occurred_at + INTERVAL 30 DAY"),
    "zendesk__tickets": ("updated_at + INTERVAL 90 DAY",),
}
FINGERPRINT = changes.code_fingerprint([SQL, Path(__file__), glossary.MACROS, Path(glossary.__file__)],
                                       f"duckdb {duckdb.__version__}")


def params(as_of: datetime) -> dict[str, Any]:
    return {
        "signup_event": SIGNUP_EVENT,
        "activation_events": list(ACTIVATION_EVENTS),
        "not_activity": list(NOT_ACTIVITY),
        "running_statuses": list(RUNNING_STATUSES),
        "payment_issue_statuses": list(PAYMENT_ISSUE_STATUSES),
        "as_of": as_of,
    }


def build(conn: duckdb.DuckDBPyConnection, as_of: datetime | None = None) -> changes.Position:
    """Make again the lifecycles the change log reaches (identity/profile_changes.py: the profiles the graph
    rewrote, those a changed event, customer, subscription, invoice or ticket hangs from, now and before, and those
    whose CLOCKED times the clock passed since the last build), or all of them, as of `as_of` (default: now); their
    rows replace the old ones and every row takes the new moment, with the log's position, in one transaction. The
    profiles made again are logged for the views that follow them."""
    entities = [f"{source}__{entity}" for source, entity in READS]
    position = profile_changes.affected(conn, FOLLOWER, entities, (FOLLOWER,), CLOCKED, FINGERPRINT, as_of)
    if position.whole is None:
        profile_changes.records_scope(
            conn, f"SELECT * FROM identity.record_profiles WHERE profile_id IN (FROM {profile_changes.AFFECTED})")
    else:
        profile_changes.whole_scope(conn)
    glossary.install(conn)
    conn.execute(SQL.read_text(), params(position.as_of))
    with changes.keeping(conn, position, f"SELECT profile_id AS key FROM {profile_changes.AFFECTED}"):
        changes.replace_rows(conn, position, FOLLOWER, "_person_lifecycle", "profile_id",
                             f"FROM {profile_changes.AFFECTED}", "profile_id")
        if position.whole is None:
            # Every view of the run reads one moment; the rows not made again are as they would be at it.
            conn.execute(f"UPDATE {FOLLOWER} SET as_of = $as_of", {"as_of": position.as_of})
    return position


def build_lifecycle_asset(profiles_key: AssetKey, graph_key: AssetKey) -> AssetsDefinition:
    @asset(
        key=LIFECYCLE_KEY,
        group_name="identity",
        kinds={"duckdb"},
        owners=[OWNER],
        deps=[profiles_key, graph_key, *(staging_key(source, entity) for source, entity in READS)],
        description=(
            "For the team views: one row per person profile with its lifecycle as of `as_of` (the build time): "
            f"signup ({SIGNUP_EVENT!r}), activation (first of {', '.join(ACTIVATION_EVENTS)} after signup), product "
            "activity over 7 and 30 days and the features used, first payment, subscription and churn, an "
            "abandoned checkout (a billing customer with no subscription) and support satisfaction ratings."
        ),
        required_resource_keys={"warehouse"},
    )
    def person_lifecycle(context: AssetExecutionContext) -> MaterializeResult:
        with context.resources.warehouse.get_connection() as conn:
            position = build(conn)
            made = conn.execute(f"SELECT count(*) FROM {profile_changes.AFFECTED}").fetchall()[0][0] if (
                position.whole is None) else None  # fmt: skip
            metadata = measures(
                conn,
                "SELECT count(*) AS profiles, count(signed_up_at) AS signed_up, count(activated_at) AS activated,"
                " count(first_paid_at) AS paid, count(*) FILTER (WHERE is_churned) AS churned,"
                " count(*) FILTER (WHERE active_days_30 > 0) AS active_30 FROM identity.person_lifecycle",
            )
        metadata |= {"followed_changes": position.whole is None,
                     "profiles_made": metadata["profiles"] if made is None else made}
        return MaterializeResult(metadata={"dagster/row_count": metadata["profiles"], **metadata})

    return person_lifecycle

"""Where each person is in the customer lifecycle: the shared facts every team's view is built on."""

from pathlib import Path

from dagster import AssetExecutionContext, AssetKey, AssetsDefinition, MaterializeResult, asset

from cdp_assets import glossary
from cdp_assets.glossary import RUNNING_STATUSES
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


def build_lifecycle_asset(profiles_key: AssetKey) -> AssetsDefinition:
    @asset(
        key=LIFECYCLE_KEY,
        group_name="identity",
        kinds={"duckdb"},
        owners=[OWNER],
        deps=[profiles_key, *(staging_key(source, entity) for source, entity in READS)],
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
            glossary.install(conn)
            conn.execute(
                SQL.read_text(),
                {
                    "signup_event": SIGNUP_EVENT,
                    "activation_events": list(ACTIVATION_EVENTS),
                    "not_activity": list(NOT_ACTIVITY),
                    "running_statuses": list(RUNNING_STATUSES),
                    "payment_issue_statuses": list(PAYMENT_ISSUE_STATUSES),
                },
            )
            metadata = measures(
                conn,
                "SELECT count(*) AS profiles, count(signed_up_at) AS signed_up, count(activated_at) AS activated,"
                " count(first_paid_at) AS paid, count(*) FILTER (WHERE is_churned) AS churned,"
                " count(*) FILTER (WHERE active_days_30 > 0) AS active_30 FROM identity.person_lifecycle",
            )
        return MaterializeResult(metadata={"dagster/row_count": metadata["profiles"], **metadata})

    return person_lifecycle

"""The glossary of `docs/views.md` in code: which Stripe statuses make a subscription running or paying, how a
subscription's amount becomes MRR, ARR and churn's period. Every layer that says paying, MRR, ARR or churned
reads these constants (as SQL parameters) and the macros in `glossary.sql`, so no two views can disagree."""

from pathlib import Path
from typing import Any

import duckdb

MACROS = Path(__file__).with_name("glossary.sql")

# Stripe subscription statuses: not yet ended (subscribed); billing now (its amount is MRR: trials, pauses and unpaid
# ones are not); ended.
RUNNING_STATUSES = ("active", "trialing", "past_due", "unpaid", "paused")
MRR_STATUSES = ("active", "past_due")
ENDED_STATUSES = ("canceled", "incomplete_expired")
CHURN_PERIOD_DAYS = 30  # per-period churn counts churns in the last this many days before `as_of`
UNATTRIBUTED = "unattributed"  # the row holding billing no signup cohort, channel or account can be given


def install(conn: duckdb.DuckDBPyConnection) -> None:
    """Create the glossary's macros on this connection (temporary: each connection installs its own)."""
    conn.execute(MACROS.read_text())


def params() -> dict[str, Any]:
    return {
        "running_statuses": list(RUNNING_STATUSES),
        "mrr_statuses": list(MRR_STATUSES),
        "churn_period_days": CHURN_PERIOD_DAYS,
        "unattributed": UNATTRIBUTED,
    }

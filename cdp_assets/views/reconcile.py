"""Blocking checks that a view's totals are the billing totals: every figure reconciles with Stripe's staging
tables to the cent, per currency, so a customer the view cannot place shows in its `unattributed` row instead of
vanishing from the board's MRR."""

from typing import Any

import duckdb

from cdp_assets import glossary
from cdp_assets.views import build

VIEW = "executive_cohorts"  # the view whose column totals must equal the billing totals (reconcile_billing.sql)
CHECK = "reconciles_with_billing"
DESCRIPTION = (
    f"Passes when the column totals of views.{VIEW} equal the same totals computed straight from Stripe's staging "
    "tables (stripe__subscriptions, stripe__invoices), in the glossary's terms of docs/views.md: MRR and revenue to "
    "the cent in each currency, and paying, converted-to-paid and churned customers. Fails (blocking: the view's "
    "syncs hold) otherwise; never warns. `differences` names each total that differs and by how much. Do: a "
    "shortfall means the view's SQL dropped billing it could not place in a cohort: put it in the `unattributed` row "
    "(cohort month empty) rather than leave it out; an excess means it counted a customer twice. Then materialise "
    "the view again."
)


def billing_differences(conn: duckdb.DuckDBPyConnection) -> tuple[dict[str, int], list[str]]:
    """Each total of the executive view by `measure[.currency]`, and a line per total that staging disagrees with."""
    glossary.install(conn)
    rows = build.run_sql(conn, "reconcile_billing", glossary.params()).fetchall()
    totals = {".".join(filter(None, (measure, currency))): viewed for measure, currency, _, viewed in rows}
    differences = [
        f"{measure}{' ' + currency if currency else ''}: view {viewed} vs staging {staged} ({viewed - staged:+d})"
        for measure, currency, staged, viewed in rows
        if staged != viewed
    ]
    return totals, differences


def billing_findings(conn: duckdb.DuckDBPyConnection) -> tuple[bool, dict[str, Any]]:
    """The check's finding: whether no total differs, with every total and the differences as metadata."""
    totals, differences = billing_differences(conn)
    return not differences, {"differences": "; ".join(differences) or "none", "differing": len(differences), **totals}

"""Every executive and account figure reconciles with billing: the column totals of `executive_cohorts` and
`account_360` equal Stripe's totals in staging, to the cent per currency, with billing no cohort or account holds in
an `unattributed` row; the blocking check that says so passes on a healthy run and fails, naming the difference,
when billing is left out without its row."""

from __future__ import annotations

import math
import shutil
from collections import Counter
from pathlib import Path

import duckdb
import pytest
from dagster import AssetKey, AssetSelection, DagsterInstance, materialize

from cdp_assets.glossary import MRR_STATUSES, UNATTRIBUTED
from tests.conftest import Profiled
from tests.test_views import run_check

CHECK = "reconciles_with_billing"
MONTHS = {"month": 1, "year": 1 / 12, "week": 52 / 12, "day": 365 / 12}


def staged_billing(conn: duckdb.DuckDBPyConnection) -> tuple[Counter[str], Counter[str], int]:
    """MRR and revenue per currency and the paying Stripe customers, from staging's rows, added up in Python."""
    mrr: Counter[str] = Counter()
    paying = set()
    for customer, status, amount, quantity, interval, currency in conn.execute(
        "SELECT customer_id, status, unit_amount_cents, quantity, billing_interval, currency"
        " FROM staging.stripe__subscriptions WHERE NOT is_deleted"
    ).fetchall():
        # To the cent per subscription, halves away from zero as DuckDB rounds (Python's round goes to even).
        cents = math.floor(amount * (quantity or 1) * MONTHS[interval] + 0.5) if status in MRR_STATUSES else 0
        if cents > 0:
            mrr[currency.lower()] += cents
            paying.add(customer)
    revenue: Counter[str] = Counter()
    for currency, paid in conn.execute(
        "SELECT currency, amount_paid_cents FROM staging.stripe__invoices"
        " WHERE status = 'paid' AND amount_paid_cents > 0 AND NOT is_deleted"
    ).fetchall():
        revenue[currency.lower()] += paid
    return mrr, revenue, len(paying)


def column_totals(conn: duckdb.DuckDBPyConnection, view: str, column: str) -> Counter[str]:
    rows = conn.execute(f"SELECT {column} FROM views.{view}").fetchall()
    totals: Counter[str] = Counter()
    for (by_currency,) in rows:
        totals.update(by_currency)
    return totals


@pytest.fixture
def warehouse(profiled: Profiled, tmp_path: Path) -> Path:
    copy = tmp_path / "warehouse.duckdb"
    shutil.copy(profiled.pipeline.warehouse, copy)
    return copy


def materialise_view(warehouse: Path, view: str, monkeypatch: pytest.MonkeyPatch) -> dict:
    """Materialise one view with its checks through Dagster; the reconciliation check's passed flag and metadata."""
    from cdp_assets.definitions import defs
    from resources import build_resources

    monkeypatch.setenv("CDP_WAREHOUSE", str(warehouse))
    result = materialize(
        [*(defs.assets or []), *(defs.asset_checks or [])],
        resources=build_resources(),
        instance=DagsterInstance.ephemeral(),
        selection=AssetSelection.assets(AssetKey(["views", view])),
    )
    [evaluation] = [e for e in result.get_asset_check_evaluations() if e.check_name == CHECK]
    return {"passed": evaluation.passed, **{k: v.value for k, v in evaluation.metadata.items()}}


def test_executive_and_account_totals_equal_the_billing_totals(profiled: Profiled) -> None:
    with duckdb.connect(str(profiled.pipeline.warehouse), read_only=True) as conn:
        mrr, revenue, paying_customers = staged_billing(conn)
        assert column_totals(conn, "executive_cohorts", "mrr_cents_by_currency") == mrr
        assert column_totals(conn, "executive_cohorts", "revenue_cents_by_currency") == revenue
        assert column_totals(conn, "account_360", "mrr_cents_by_currency") == mrr
        [(paying_now, paying_people, executive_mrr, account_mrr, arr, unattributed_paying)] = conn.execute(
            "SELECT"
            " (SELECT sum(paying_now) FROM views.executive_cohorts),"
            " (SELECT sum(paying_people) FROM views.account_360),"
            " (SELECT sum(mrr_cents) FROM views.executive_cohorts),"
            " (SELECT sum(mrr_cents) FROM views.account_360),"
            " (SELECT sum(arr_cents) FROM views.executive_cohorts),"
            " (SELECT paying_now FROM views.executive_cohorts WHERE cohort_month IS NULL AND channel = ?)",
            [UNATTRIBUTED],
        ).fetchall()
        # A profile holding two Stripe customers is one paying customer; there are never more than customers.
        paying_profiles = conn.execute("SELECT count(*) FROM identity.person_profiles WHERE mrr_cents > 0").fetchall()
        # Each view converts a group's per-currency sums to the reporting currency and rounds that to the cent.
        groups = conn.execute("SELECT (SELECT count(*) FROM views.executive_cohorts) + "
                              "(SELECT count(*) FROM views.account_360)").fetchall()[0][0]  # fmt: skip
    assert 0 < paying_now == paying_people <= paying_customers
    assert paying_now >= paying_profiles[0][0]
    # Per currency the totals are equal to the cent (above); converted, they differ by no more than the rounding of
    # each group, half a cent a group.
    assert abs(executive_mrr - account_mrr) <= groups / 2 and arr == 12 * executive_mrr
    assert unattributed_paying > 0  # the default world has payers with no signup; they are in the row, not lost


def test_check_passes_on_a_healthy_run_and_fails_without_the_unattributed_row(warehouse: Path) -> None:
    healthy = run_check(warehouse, "executive_cohorts", CHECK)
    assert (healthy["passed"], healthy["differences"], healthy["differing"]) == (True, "none", 0)
    with duckdb.connect(str(warehouse)) as conn:
        [(paying, by_currency)] = conn.execute(
            "DELETE FROM views.executive_cohorts WHERE channel = ? RETURNING paying_now, mrr_cents_by_currency",
            [UNATTRIBUTED],
        ).fetchall()
    failed = run_check(warehouse, "executive_cohorts", CHECK)
    assert failed["passed"] is False
    expected = f"paying_now: view {healthy['paying_now'] - paying} vs staging {healthy['paying_now']} ({-paying:+d})"
    assert expected in failed["differences"]
    for currency, cents in by_currency.items():
        assert f"mrr_cents {currency}: " in failed["differences"] and f"({-cents:+d})" in failed["differences"]


def test_billing_whose_customer_loses_its_profile_moves_to_the_unattributed_row(
    warehouse: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with duckdb.connect(str(warehouse)) as conn:
        [(customer, profile)] = conn.execute(
            "SELECT rp.record_id, rp.profile_id FROM identity.record_profiles rp"
            " JOIN identity.person_lifecycle l USING (profile_id)"
            " JOIN identity.person_profiles p USING (profile_id)"
            " WHERE rp.stream = 'stripe.customers' AND l.signed_up_at IS NOT NULL AND p.mrr_cents > 0"
            " ORDER BY rp.record_id LIMIT 1"
        ).fetchall()
        conn.execute("DELETE FROM identity.record_profiles WHERE stream = 'stripe.customers' AND record_id = ?",
                     [customer])  # fmt: skip
        before = conn.execute(
            "SELECT mrr_cents FROM views.executive_cohorts WHERE channel = ?", [UNATTRIBUTED]
        ).fetchall()[0][0]
    rebuilt = materialise_view(warehouse, "executive_cohorts", monkeypatch)
    assert rebuilt["passed"], rebuilt["differences"]
    with duckdb.connect(str(warehouse), read_only=True) as conn:
        after = conn.execute(
            "SELECT mrr_cents FROM views.executive_cohorts WHERE channel = ?", [UNATTRIBUTED]
        ).fetchall()[0][0]
    assert after > before, (profile, customer)

-- The glossary's formulas (docs/views.md), as macros every layer calls with the statuses of cdp_assets/glossary.py.
-- A subscription's MRR: its amount times quantity per month, rounded to the cent, only while it bills (a status of
-- `mrr_statuses`); sums of MRR are sums of these, so any grouping of subscriptions adds up to the same cents.
CREATE OR REPLACE TEMP MACRO subscription_mrr_cents(
    status, unit_amount_cents, quantity, billing_interval, mrr_statuses
) AS
    CASE WHEN list_contains(mrr_statuses, status) THEN round(
        unit_amount_cents * coalesce(quantity, 1) * CASE billing_interval
            WHEN 'month' THEN 1 WHEN 'year' THEN 1 / 12 WHEN 'week' THEN 52 / 12 WHEN 'day' THEN 365 / 12
        END
    )::BIGINT END;
-- Revenue: what a paid invoice collected; a refund-only or zero invoice is no payment.
CREATE OR REPLACE TEMP MACRO is_revenue(status, amount_paid_cents, is_deleted) AS
    status = 'paid' AND amount_paid_cents > 0 AND NOT is_deleted;
CREATE OR REPLACE TEMP MACRO arr_cents(mrr_cents) AS 12 * mrr_cents;

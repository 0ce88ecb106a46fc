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
-- Stripe's billing lines, each with its customer: the person profile holding the Stripe customer, or the customer
-- itself (`stripe:<id>`) when no profile holds it, so no billing is ever left out of a total. What the views add up
-- per customer (views/sql/_billing.sql) and what the reconciliation check counts customers by.
CREATE OR REPLACE TEMP MACRO billing_subscriptions(running_statuses, mrr_statuses) AS TABLE
    SELECT
        coalesce(o.profile_id, 'stripe:' || s.customer_id) AS customer, o.profile_id, lower(s.currency) AS currency,
        list_contains(running_statuses, s.status) AS is_running, s.canceled_at,
        subscription_mrr_cents(s.status, s.unit_amount_cents, s.quantity, s.billing_interval, mrr_statuses)
            AS mrr_cents
    FROM staging.stripe__subscriptions s
    LEFT JOIN identity.record_profiles o ON o.stream = 'stripe.customers' AND o.record_id = s.customer_id
    WHERE NOT s.is_deleted;
CREATE OR REPLACE TEMP MACRO billing_payments() AS TABLE
    SELECT
        coalesce(o.profile_id, 'stripe:' || i.customer_id) AS customer, o.profile_id, lower(i.currency) AS currency,
        i.amount_paid_cents AS revenue_cents, i.created_at
    FROM staging.stripe__invoices i
    LEFT JOIN identity.record_profiles o ON o.stream = 'stripe.customers' AND o.record_id = i.customer_id
    WHERE is_revenue(i.status, i.amount_paid_cents, i.is_deleted);

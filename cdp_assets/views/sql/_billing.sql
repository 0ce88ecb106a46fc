-- Billing per party, straight from Stripe's staging tables, in the glossary's terms (docs/views.md): MRR and
-- revenue per currency, paying, paid once, churned and when. A party is the person profile holding the Stripe
-- customer, or the customer itself when no profile holds it, so that no billing is ever left out of a total.
CREATE OR REPLACE TEMP TABLE _billing_parties AS
WITH owners AS (
    SELECT record_id AS customer_id, profile_id FROM identity.record_profiles WHERE stream = 'stripe.customers'
),
subscriptions AS (
    SELECT
        coalesce(o.profile_id, 'stripe:' || s.customer_id) AS party, o.profile_id, lower(s.currency) AS currency,
        list_contains($running_statuses, s.status) AS is_running, s.canceled_at,
        subscription_mrr_cents(s.status, s.unit_amount_cents, s.quantity, s.billing_interval, $mrr_statuses)
            AS mrr_cents
    FROM staging.stripe__subscriptions s
    LEFT JOIN owners o USING (customer_id)
    WHERE NOT s.is_deleted
),
invoices AS (
    SELECT
        coalesce(o.profile_id, 'stripe:' || i.customer_id) AS party, o.profile_id, lower(i.currency) AS currency,
        i.amount_paid_cents AS revenue_cents, i.created_at
    FROM staging.stripe__invoices i
    LEFT JOIN owners o USING (customer_id)
    WHERE is_revenue(i.status, i.amount_paid_cents, i.is_deleted)
),
money AS (
    SELECT party, currency, sum(mrr_cents)::BIGINT AS mrr_cents, sum(revenue_cents)::BIGINT AS revenue_cents
    FROM (
        SELECT party, currency, mrr_cents, 0 AS revenue_cents FROM subscriptions WHERE mrr_cents > 0
        UNION ALL
        SELECT party, currency, 0, revenue_cents FROM invoices
    )
    GROUP BY party, currency
),
money_maps AS (
    SELECT
        party,
        map_from_entries(list((currency, mrr_cents) ORDER BY currency) FILTER (WHERE mrr_cents > 0))
            AS mrr_cents_by_currency,
        map_from_entries(list((currency, revenue_cents) ORDER BY currency) FILTER (WHERE revenue_cents > 0))
            AS revenue_cents_by_currency
    FROM money
    GROUP BY party
),
subscription_stats AS (
    SELECT
        party, any_value(profile_id) AS profile_id, bool_or(is_running) AS is_subscribed,
        bool_or(mrr_cents > 0) AS is_paying, max(canceled_at) AS last_canceled_at
    FROM subscriptions
    GROUP BY party
),
payments AS (
    SELECT party, any_value(profile_id) AS profile_id, min(created_at) AS first_paid_at FROM invoices GROUP BY party
)
SELECT
    party,
    coalesce(s.profile_id, p.profile_id) AS profile_id,
    coalesce(m.mrr_cents_by_currency, MAP {}) AS mrr_cents_by_currency,
    coalesce(m.revenue_cents_by_currency, MAP {}) AS revenue_cents_by_currency,
    coalesce(s.is_paying, false) AS is_paying,
    p.first_paid_at,
    -- Churned: paid once, had subscriptions, and none runs any more; the moment is the last cancellation.
    coalesce(p.first_paid_at IS NOT NULL AND NOT s.is_subscribed, false) AS is_churned,
    CASE WHEN p.first_paid_at IS NOT NULL AND NOT s.is_subscribed THEN s.last_canceled_at END AS churned_at
FROM subscription_stats s
FULL JOIN payments p USING (party)
LEFT JOIN money_maps m USING (party)

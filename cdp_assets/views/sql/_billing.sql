-- Billing per party, straight from Stripe's staging tables, in the glossary's terms (docs/views.md): MRR and
-- revenue per currency, paying, paid once, churned and when. A party is the person profile holding the Stripe
-- customer, or the customer itself when no profile holds it, so that no billing is ever left out of a total.
CREATE OR REPLACE TEMP TABLE _billing_parties AS
WITH subscriptions AS (
    SELECT customer AS party, * EXCLUDE (customer) FROM billing_subscriptions($running_statuses, $mrr_statuses)
),
invoices AS (
    SELECT customer AS party, * EXCLUDE (customer) FROM billing_payments()
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

-- The executive view's totals next to the same totals computed straight from Stripe's staging tables, in the
-- glossary's terms: MRR and revenue per currency in cents (measure, currency), and counts of customers (currency
-- ''). Customers group subscriptions and invoices by the profile holding their Stripe customer, or by the customer
-- when no profile holds it; nothing here reads signups, cohorts or the view's own billing table.
WITH owners AS (
    SELECT record_id AS customer_id, profile_id FROM identity.record_profiles WHERE stream = 'stripe.customers'
),
subscriptions AS (
    SELECT
        coalesce(o.profile_id, 'stripe:' || s.customer_id) AS customer, lower(s.currency) AS currency,
        list_contains($running_statuses, s.status) AS is_running,
        subscription_mrr_cents(s.status, s.unit_amount_cents, s.quantity, s.billing_interval, $mrr_statuses)
            AS mrr_cents
    FROM staging.stripe__subscriptions s
    LEFT JOIN owners o USING (customer_id)
    WHERE NOT s.is_deleted
),
invoices AS (
    SELECT coalesce(o.profile_id, 'stripe:' || i.customer_id) AS customer, lower(i.currency) AS currency,
        i.amount_paid_cents
    FROM staging.stripe__invoices i
    LEFT JOIN owners o USING (customer_id)
    WHERE is_revenue(i.status, i.amount_paid_cents, i.is_deleted)
),
staged AS (
    SELECT 'mrr_cents' AS measure, currency, sum(mrr_cents) AS total FROM subscriptions GROUP BY currency
    UNION ALL
    SELECT 'revenue_cents', currency, sum(amount_paid_cents) FROM invoices GROUP BY currency
    UNION ALL
    SELECT 'paying_now', '', count(DISTINCT customer) FILTER (WHERE mrr_cents > 0) FROM subscriptions
    UNION ALL
    SELECT 'converted_to_paid', '', count(DISTINCT customer) FROM invoices
    UNION ALL
    SELECT 'churned', '', count(*) FROM (
        SELECT customer FROM subscriptions GROUP BY customer HAVING NOT bool_or(is_running)
        INTERSECT
        SELECT customer FROM invoices
    )
),
viewed AS (
    SELECT 'mrr_cents' AS measure, entry.key AS currency, sum(entry.value) AS total
    FROM (SELECT unnest(map_entries(mrr_cents_by_currency)) AS entry FROM views.executive_cohorts)
    GROUP BY ALL
    UNION ALL
    SELECT 'revenue_cents', entry.key, sum(entry.value)
    FROM (SELECT unnest(map_entries(revenue_cents_by_currency)) AS entry FROM views.executive_cohorts)
    GROUP BY ALL
    UNION ALL
    SELECT 'paying_now', '', sum(paying_now) FROM views.executive_cohorts
    UNION ALL
    SELECT 'converted_to_paid', '', sum(converted_to_paid) FROM views.executive_cohorts
    UNION ALL
    SELECT 'churned', '', sum(churned) FROM views.executive_cohorts
)
SELECT measure, currency, coalesce(s.total, 0)::BIGINT AS staged, coalesce(v.total, 0)::BIGINT AS viewed
FROM staged s
FULL JOIN viewed v USING (measure, currency)
WHERE coalesce(s.total, 0) <> 0 OR coalesce(v.total, 0) <> 0 OR s.currency = ''
ORDER BY measure, currency

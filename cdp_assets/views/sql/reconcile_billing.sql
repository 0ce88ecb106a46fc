-- The executive view's totals next to the same totals computed straight from Stripe's staging tables, in the
-- glossary's terms: MRR and revenue per currency in cents (measure, currency), and counts of customers (currency
-- ''). Money is summed straight from the staging tables; customers are counted over the glossary's billing lines
-- (`billing_subscriptions`, `billing_payments`); nothing here reads signups, cohorts or the view's own billing table.
WITH staged AS (
    -- Money straight from the staging tables: who the customer is does not change a currency's total.
    SELECT 'mrr_cents' AS measure, lower(currency) AS currency,
           sum(subscription_mrr_cents(status, unit_amount_cents, quantity, billing_interval, $mrr_statuses)) AS total
    FROM staging.stripe__subscriptions WHERE NOT is_deleted GROUP BY ALL
    UNION ALL
    SELECT 'revenue_cents', lower(currency), sum(amount_paid_cents)
    FROM staging.stripe__invoices WHERE is_revenue(status, amount_paid_cents, is_deleted) GROUP BY ALL
    UNION ALL
    SELECT 'paying_now', '', count(DISTINCT customer) FILTER (WHERE mrr_cents > 0)
    FROM billing_subscriptions($running_statuses, $mrr_statuses)
    UNION ALL
    SELECT 'converted_to_paid', '', count(DISTINCT customer) FROM billing_payments()
    UNION ALL
    SELECT 'churned', '', count(*) FROM (
        SELECT customer FROM billing_subscriptions($running_statuses, $mrr_statuses)
        GROUP BY customer HAVING NOT bool_or(is_running)
        INTERSECT
        SELECT customer FROM billing_payments()
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

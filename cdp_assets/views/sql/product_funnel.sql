-- views.product_funnel: one row per signup month, analytics-consenting people only: how many signed up,
-- activated (within 7 days and ever), and paid (within 90 days and ever).
CREATE OR REPLACE TABLE views.product_funnel AS
SELECT
    date_trunc('month', signed_up_at)::DATE AS signup_month,
    count(*) AS signups,
    count(activated_at) FILTER (WHERE activated_at <= signed_up_at + INTERVAL 7 DAY) AS activated_within_7d,
    count(activated_at) AS activated,
    round(count(activated_at) / count(*), 4) AS activation_rate,
    count(first_paid_at) FILTER (WHERE first_paid_at <= signed_up_at + INTERVAL 90 DAY) AS paid_within_90d,
    count(first_paid_at) AS paid,
    round(count(first_paid_at) / count(*), 4) AS paid_rate,
    any_value(as_of) AS as_of
FROM views.product_usage_people
WHERE signed_up_at IS NOT NULL
GROUP BY ALL
ORDER BY signup_month

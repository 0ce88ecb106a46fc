-- views.executive_cohorts: one row per signup month and acquisition channel; counts and money only, no person.
-- Money is in the reporting currency. ARPU: MRR per paying customer now; LTV to date: revenue per signup so far.
CREATE OR REPLACE TABLE views.executive_cohorts AS
WITH people AS (
    SELECT
        date_trunc('month', l.signed_up_at)::DATE AS cohort_month,
        p.first_touch_channel AS channel,
        l.first_paid_at, l.is_subscribed, l.is_churned, m.revenue_cents, m.mrr_cents, l.as_of
    FROM identity.person_lifecycle l
    JOIN identity.person_profiles p USING (profile_id)
    JOIN _person_money m USING (profile_id)
    WHERE l.signed_up_at IS NOT NULL
)
SELECT
    cohort_month,
    channel,
    count(*) AS signups,
    count(first_paid_at) AS converted_to_paid,
    round(count(first_paid_at) / count(*), 4) AS conversion_rate,
    count(*) FILTER (WHERE is_churned) AS churned,
    round(count(*) FILTER (WHERE is_churned) / nullif(count(first_paid_at), 0), 4) AS churn_rate,
    count(*) FILTER (WHERE is_subscribed) AS paying_now,
    sum(mrr_cents)::BIGINT AS mrr_cents,
    round(sum(mrr_cents) / nullif(count(*) FILTER (WHERE mrr_cents > 0), 0))::BIGINT AS arpu_cents,
    sum(revenue_cents)::BIGINT AS revenue_cents,
    round(sum(revenue_cents) / count(*))::BIGINT AS ltv_to_date_cents,
    $reporting_currency AS currency,
    any_value(as_of) AS as_of
FROM people
GROUP BY ALL
ORDER BY cohort_month, channel

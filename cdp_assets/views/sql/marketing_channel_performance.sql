-- views.marketing_channel_performance: one row per first-touch channel, with what its signups did afterwards.
-- A signup counts towards 90-day figures once 90 days have passed since it (`matured_signups`).
CREATE OR REPLACE TABLE views.marketing_channel_performance AS
WITH people AS (
    SELECT
        p.first_touch_channel AS channel, p.first_touch_source, p.first_touch_medium, p.first_touch_campaign,
        l.signed_up_at, l.first_paid_at, l.is_churned, l.churned_at, l.as_of, m.revenue_cents,
        l.signed_up_at <= l.as_of - INTERVAL 90 DAY AS is_matured
    FROM identity.person_profiles p
    JOIN identity.person_lifecycle l USING (profile_id)
    JOIN _person_money m USING (profile_id)
    WHERE l.signed_up_at IS NOT NULL
),
channels AS (
    SELECT
        channel,
        any_value(first_touch_source) AS source,
        any_value(first_touch_medium) AS medium,
        any_value(first_touch_campaign) AS campaign,
        count(*) AS signups,
        count(*) FILTER (WHERE is_matured) AS matured_signups,
        count(*) FILTER (WHERE is_matured AND first_paid_at <= signed_up_at + INTERVAL 90 DAY) AS paid_within_90d,
        count(first_paid_at) AS paying_customers,
        count(*) FILTER (WHERE is_churned) AS churned_customers,
        count(*) FILTER (WHERE is_churned AND churned_at <= first_paid_at + INTERVAL 90 DAY) AS churned_within_90d,
        sum(revenue_cents)::BIGINT AS revenue_cents,
        any_value(as_of) AS as_of
    FROM people
    GROUP BY channel
)
SELECT
    channel, source, medium, campaign, signups, matured_signups, paid_within_90d,
    round(paid_within_90d / nullif(matured_signups, 0), 4) AS paid_conversion_90d,
    paying_customers, churned_customers,
    round(churned_customers / nullif(paying_customers, 0), 4) AS churn_rate,
    churned_within_90d,
    round(churned_within_90d / nullif(paying_customers, 0), 4) AS churn_within_90d_rate,
    revenue_cents,
    round(revenue_cents / signups)::BIGINT AS revenue_per_signup_cents,
    $reporting_currency AS currency,
    as_of
FROM channels
ORDER BY signups DESC, channel

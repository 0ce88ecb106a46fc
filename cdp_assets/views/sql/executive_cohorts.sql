-- views.executive_cohorts: one row per signup month and acquisition channel; counts and money only, no person.
-- Terms are the glossary's (docs/views.md). Billing that no signup cohort holds (a paying profile with no product
-- signup, a Stripe customer no profile holds) is in the one `unattributed` row (no cohort month), so the column
-- totals equal the billing totals; a blocking check compares them with Stripe's staging tables. Money is per
-- currency in the `_by_currency` maps, and in the reporting currency in the others.
CREATE OR REPLACE TABLE views.executive_cohorts AS
WITH clock AS (
    SELECT any_value(as_of) AS as_of, any_value(as_of) - to_days($churn_period_days) AS period_start
    FROM identity.person_lifecycle
),
signups AS (
    SELECT l.profile_id, date_trunc('month', l.signed_up_at)::DATE AS cohort_month, p.first_touch_channel AS channel
    FROM identity.person_lifecycle l
    JOIN identity.person_profiles p USING (profile_id)
    WHERE l.signed_up_at IS NOT NULL
),
members AS (
    SELECT
        s.cohort_month,
        coalesce(s.channel, $unattributed) AS channel,
        s.profile_id IS NOT NULL AS signed_up,
        b.first_paid_at,
        coalesce(b.is_paying, false) AS is_paying,
        coalesce(b.is_churned, false) AS is_churned,
        b.churned_at,
        b.mrr_cents_by_currency,
        b.revenue_cents_by_currency
    FROM signups s
    FULL JOIN _billing_parties b ON b.profile_id = s.profile_id
),
counts AS (
    SELECT
        cohort_month,
        channel,
        count(*) FILTER (WHERE signed_up) AS signups,
        count(first_paid_at) AS converted_to_paid,
        count(*) FILTER (WHERE is_paying) AS paying_now,
        count(*) FILTER (WHERE is_churned) AS churned,
        count(*) FILTER (WHERE is_churned AND churned_at > c.period_start) AS churned_in_period,
        count(*) FILTER (WHERE first_paid_at <= c.period_start
            AND NOT (is_churned AND coalesce(churned_at <= c.period_start, false))) AS customers_at_period_start,
        any_value(c.as_of) AS as_of
    FROM members
    CROSS JOIN clock c
    GROUP BY cohort_month, channel
),
entries AS (
    SELECT cohort_month, channel, 'mrr' AS measure, unnest(map_entries(mrr_cents_by_currency)) AS entry FROM members
    UNION ALL
    SELECT cohort_month, channel, 'revenue', unnest(map_entries(revenue_cents_by_currency)) FROM members
),
by_currency AS (
    SELECT cohort_month, channel, measure, entry.key AS currency, sum(entry.value)::BIGINT AS cents
    FROM entries
    GROUP BY ALL
),
money AS (
    SELECT
        cohort_month,
        channel,
        map_from_entries(list((currency, cents) ORDER BY currency) FILTER (WHERE measure = 'mrr'))
            AS mrr_cents_by_currency,
        map_from_entries(list((currency, cents) ORDER BY currency) FILTER (WHERE measure = 'revenue'))
            AS revenue_cents_by_currency,
        round(sum(cents * fx.rate) FILTER (WHERE measure = 'mrr'))::BIGINT AS mrr_cents,
        round(sum(cents * fx.rate) FILTER (WHERE measure = 'revenue'))::BIGINT AS revenue_cents
    FROM by_currency
    JOIN _fx fx USING (currency)
    GROUP BY cohort_month, channel
)
SELECT
    c.cohort_month,
    c.channel,
    c.signups,
    c.converted_to_paid,
    round(c.converted_to_paid / nullif(c.signups, 0), 4) AS conversion_rate,
    c.paying_now,
    c.churned,
    round(c.churned / nullif(c.converted_to_paid, 0), 4) AS churn_rate,
    c.churned_in_period,
    c.customers_at_period_start,
    round(c.churned_in_period / nullif(c.customers_at_period_start, 0), 4) AS churn_rate_in_period,
    coalesce(m.mrr_cents, 0) AS mrr_cents,
    arr_cents(coalesce(m.mrr_cents, 0)) AS arr_cents,
    round(coalesce(m.mrr_cents, 0) / nullif(c.paying_now, 0))::BIGINT AS arpu_cents,
    coalesce(m.revenue_cents, 0) AS revenue_cents,
    round(coalesce(m.revenue_cents, 0) / nullif(c.signups, 0))::BIGINT AS ltv_to_date_cents,
    coalesce(m.mrr_cents_by_currency, MAP {}) AS mrr_cents_by_currency,
    coalesce(m.revenue_cents_by_currency, MAP {}) AS revenue_cents_by_currency,
    $reporting_currency AS currency,
    $churn_period_days AS churn_period_days,
    c.as_of
FROM counts c
LEFT JOIN money m ON m.cohort_month IS NOT DISTINCT FROM c.cohort_month AND m.channel = c.channel
ORDER BY c.cohort_month NULLS LAST, c.channel

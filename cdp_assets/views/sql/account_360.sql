-- views.account_360: one row per B2B account, for sales: its firmographics and territory, its people and how
-- many engaged in the last 30 days, MRR, open tickets and product use (analytics-consenting people only).
CREATE OR REPLACE TABLE views.account_360 AS
WITH members AS (
    SELECT
        ap.account_id, l.as_of, p.last_email_engagement_at, l.last_product_at,
        list_contains(coalesce(pr.purposes, []), $analytics_purpose) AS counts_in_analytics,
        l.active_days_7, l.active_days_30, l.product_events_30
    FROM identity.account_people ap
    JOIN identity.person_profiles p USING (profile_id)
    JOIN identity.person_lifecycle l USING (profile_id)
    LEFT JOIN _purposes pr USING (profile_id)
    WHERE ap.is_primary
),
engagement AS (
    SELECT
        account_id,
        count(*) FILTER (WHERE last_email_engagement_at > as_of - INTERVAL 30 DAY
            OR last_product_at > as_of - INTERVAL 30 DAY) AS contacts_engaged_30d,
        count(*) FILTER (WHERE counts_in_analytics AND active_days_7 > 0) AS active_users_7d,
        count(*) FILTER (WHERE counts_in_analytics AND active_days_30 > 0) AS active_users_30d,
        coalesce(sum(product_events_30) FILTER (WHERE counts_in_analytics), 0)::BIGINT AS product_events_30d
    FROM members
    GROUP BY account_id
),
converted AS (
    SELECT e.account_id, sum(e.entry.value * fx.rate) AS mrr_cents
    FROM (SELECT account_id, unnest(map_entries(mrr_cents_by_currency)) AS entry FROM identity.accounts) e
    JOIN _fx fx ON fx.currency = e.entry.key
    GROUP BY e.account_id
)
SELECT
    a.account_id, a.name, a.domain, a.industry, a.city, a.country,
    coalesce(t.territory, $default_territory) AS territory,
    a.employee_count, a.current_people AS people,
    coalesce(e.contacts_engaged_30d, 0) AS contacts_engaged_30d,
    a.paying_people,
    a.mrr_cents_by_currency,
    round(coalesce(c.mrr_cents, 0))::BIGINT AS mrr_cents,
    $reporting_currency AS currency,
    a.open_tickets,
    coalesce(e.active_users_7d, 0) AS active_users_7d,
    coalesce(e.active_users_30d, 0) AS active_users_30d,
    coalesce(e.product_events_30d, 0) AS product_events_30d,
    (SELECT any_value(as_of) FROM identity.person_lifecycle) AS as_of
FROM identity.accounts a
LEFT JOIN _territories t ON t.country = a.country
LEFT JOIN engagement e USING (account_id)
LEFT JOIN converted c USING (account_id)
ORDER BY a.account_id

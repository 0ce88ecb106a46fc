-- views.account_360: one row per B2B account, for sales: its firmographics and territory, its people and how
-- many engaged in the last 30 days, MRR, open tickets and product use (analytics-consenting people only).
-- Paying people and MRR are the glossary's (docs/views.md), from `_billing_parties`; billing of people with no
-- account, and of Stripe customers no profile holds, is in one `unattributed` row, so MRR adds up to the billing total.
CREATE OR REPLACE TABLE views.account_360 AS
WITH members AS (
    SELECT
        ap.account_id, l.as_of, p.last_email_engagement_at, l.last_product_at,
        list_contains(coalesce(pr.purposes, []), $analytics_purpose) AS counts_in_analytics,
        l.active_days_7, l.active_days_30, l.product_events_30
    FROM identity.account_people ap
    JOIN identity.person_profiles p USING (profile_id)
    JOIN identity.person_lifecycle l USING (profile_id)
    LEFT JOIN privacy.purposes pr USING (profile_id)
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
billing AS (
    -- Each billing party at its person's primary account, or unattributed.
    SELECT coalesce(ap.account_id, $unattributed) AS account_id, b.is_paying, b.mrr_cents_by_currency
    FROM _billing_parties b
    LEFT JOIN identity.account_people ap ON ap.profile_id = b.profile_id AND ap.is_primary
),
mrr AS (
    SELECT account_id, entry.key AS currency, sum(entry.value)::BIGINT AS mrr_cents
    FROM (SELECT account_id, unnest(map_entries(mrr_cents_by_currency)) AS entry FROM billing)
    GROUP BY ALL
),
money AS (
    SELECT
        account_id,
        map_from_entries(list((currency, mrr_cents) ORDER BY currency)) AS mrr_cents_by_currency,
        round(sum(mrr_cents * fx.rate))::BIGINT AS mrr_cents
    FROM mrr
    JOIN _fx fx USING (currency)
    GROUP BY account_id
),
paying AS (
    SELECT account_id, count(*) FILTER (WHERE is_paying) AS paying_people FROM billing GROUP BY account_id
),
accounts AS (
    SELECT account_id, name, domain, industry, city, country, employee_count, current_people, open_tickets
    FROM identity.accounts
    UNION ALL
    -- The unattributed row: no firmographics, and only if some billing has no account.
    SELECT $unattributed, NULL, NULL, NULL, NULL, NULL, NULL, 0, 0
    WHERE EXISTS (SELECT 1 FROM billing WHERE account_id = $unattributed)
)
SELECT
    a.account_id, a.name, a.domain, a.industry, a.city, a.country,
    CASE WHEN a.account_id <> $unattributed THEN coalesce(t.territory, $default_territory) END AS territory,
    a.employee_count, a.current_people AS people,
    coalesce(e.contacts_engaged_30d, 0) AS contacts_engaged_30d,
    coalesce(x.paying_people, 0) AS paying_people,
    coalesce(m.mrr_cents_by_currency, MAP {}) AS mrr_cents_by_currency,
    coalesce(m.mrr_cents, 0) AS mrr_cents,
    arr_cents(coalesce(m.mrr_cents, 0)) AS arr_cents,
    $reporting_currency AS currency,
    a.open_tickets,
    coalesce(e.active_users_7d, 0) AS active_users_7d,
    coalesce(e.active_users_30d, 0) AS active_users_30d,
    coalesce(e.product_events_30d, 0) AS product_events_30d,
    (SELECT any_value(as_of) FROM identity.person_lifecycle) AS as_of
FROM accounts a
LEFT JOIN _territories t ON t.country = a.country
LEFT JOIN engagement e USING (account_id)
LEFT JOIN money m USING (account_id)
LEFT JOIN paying x USING (account_id)
ORDER BY a.account_id = $unattributed, a.account_id

-- identity.accounts (made here as TEMP _account_rows; profiles.py writes it): one row per B2B account, with the
-- people linked to it and what they bring. Money and tickets count each person once, at their primary account;
-- currencies are never added up.
CREATE OR REPLACE TEMP TABLE _account_rows AS
WITH people AS (
    SELECT account_id, count(*) AS people, count(*) FILTER (WHERE is_primary) AS current_people
    FROM _account_people
    GROUP BY account_id
),
current_people AS (
    SELECT ap.account_id, p.*
    FROM _account_people ap
    JOIN identity.person_profiles p USING (profile_id)
    WHERE ap.is_primary
),
activity AS (
    SELECT
        account_id,
        count(*) FILTER (WHERE running_subscriptions > 0) AS paying_people,
        sum(open_tickets)::BIGINT AS open_tickets
    FROM current_people
    GROUP BY account_id
),
mrr AS (
    SELECT account_id, currency, sum(mrr_cents)::BIGINT AS mrr_cents
    FROM current_people
    WHERE mrr_cents > 0
    GROUP BY account_id, currency
),
account_mrr AS (
    SELECT
        account_id,
        arg_max(currency, (mrr_cents, currency)) AS currency,
        max(mrr_cents) AS mrr_cents,
        map_from_entries(list((currency, mrr_cents) ORDER BY currency)) AS mrr_cents_by_currency
    FROM mrr
    GROUP BY account_id
)
SELECT
    a.account_id,
    a.origin,
    a.domain,
    a.name,
    a.industry,
    a.city,
    a.country,
    a.employee_count,
    coalesce(a.hubspot_company_ids, []) AS hubspot_company_ids,
    coalesce(p.people, 0) AS people,
    coalesce(p.current_people, 0) AS current_people,
    coalesce(x.paying_people, 0) AS paying_people,
    coalesce(m.mrr_cents, 0) AS mrr_cents,
    m.currency,
    coalesce(m.mrr_cents_by_currency, MAP {}) AS mrr_cents_by_currency,
    coalesce(x.open_tickets, 0) AS open_tickets
FROM _accounts a
LEFT JOIN people p USING (account_id)
LEFT JOIN activity x USING (account_id)
LEFT JOIN account_mrr m USING (account_id)
ORDER BY a.account_id

-- views.product_usage_accounts: one row per account with product users, from views.product_usage_people
-- (analytics-consenting people only): active users and days, features adopted, plans, support context.
CREATE OR REPLACE TABLE views.product_usage_accounts AS
WITH users AS (
    SELECT u.*, a.mrr_cents_by_currency, a.open_tickets AS account_open_tickets
    FROM views.product_usage_people u
    JOIN identity.accounts a USING (account_id)
),
features AS (
    SELECT account_id, feature, count(*) AS users
    FROM (SELECT account_id, unnest(features_used_30) AS feature FROM users)
    GROUP BY ALL
)
SELECT
    u.account_id,
    count(*) AS product_users,
    count(*) FILTER (WHERE u.active_days_7 > 0) AS active_users_7d,
    count(*) FILTER (WHERE u.active_days_30 > 0) AS active_users_30d,
    sum(u.active_days_30)::BIGINT AS user_active_days_30d,
    sum(u.product_events_30)::BIGINT AS product_events_30d,
    coalesce((SELECT map_from_entries(list((f.feature, f.users) ORDER BY f.feature)) FROM features f
              WHERE f.account_id = u.account_id), MAP {}) AS feature_users_30d,
    count(*) FILTER (WHERE u.funnel_stage = 'paying') AS paying_users,
    list_sort(list_distinct(list(u.plan))) AS plans,
    any_value(u.mrr_cents_by_currency) AS mrr_cents_by_currency,
    any_value(u.account_open_tickets) AS open_tickets,
    max(u.last_product_at) AS last_product_at,
    any_value(u.as_of) AS as_of
FROM users u
GROUP BY u.account_id
ORDER BY u.account_id

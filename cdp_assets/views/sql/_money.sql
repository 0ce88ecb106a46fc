-- Each person's revenue and MRR in the reporting currency (rates in _fx, from policy.yaml), for views that add
-- money up across people; a person's own view keeps the original currency.
CREATE OR REPLACE TEMP TABLE _person_money AS
WITH revenue AS (
    SELECT profile_id, unnest(map_entries(revenue_cents_by_currency)) AS entry
    FROM identity.person_profiles
),
converted AS (
    SELECT r.profile_id, sum(r.entry.value * fx.rate) AS revenue_cents
    FROM revenue r
    JOIN _fx fx ON fx.currency = r.entry.key
    GROUP BY r.profile_id
)
SELECT
    p.profile_id,
    round(coalesce(c.revenue_cents, 0))::BIGINT AS revenue_cents,
    round(coalesce(p.mrr_cents * fx.rate, 0))::BIGINT AS mrr_cents
FROM identity.person_profiles p
LEFT JOIN converted c USING (profile_id)
LEFT JOIN _fx fx ON fx.currency = p.currency

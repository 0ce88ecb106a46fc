-- views.customer_360: one row per person, for sales and support: who they are, what they pay, how support and
-- the product go for them, and what they agreed to.
CREATE OR REPLACE TABLE views.customer_360 AS
SELECT
    p.profile_id, p.is_active,
    p.email, p.first_name, p.last_name, p.phone, p.company, p.job_title, p.city, p.country, p.time_zone,
    ap.account_id, a.name AS account_name,
    p.plan, p.subscription_status, p.mrr_cents, p.lifetime_revenue_cents, p.currency, p.lifecycle_stage,
    p.tickets, p.open_tickets, l.good_ratings, l.bad_ratings,
    round(l.good_ratings / nullif(l.good_ratings + l.bad_ratings, 0), 4) AS satisfaction_score,
    l.last_rating,
    l.last_product_at, l.active_days_30,
    p.first_seen_at, p.last_seen_at,
    pr.consent, pr.consent_conflicts, pr.purposes,
    l.as_of
FROM identity.person_profiles p
JOIN identity.person_lifecycle l USING (profile_id)
LEFT JOIN _purposes pr USING (profile_id)
LEFT JOIN identity.account_people ap ON ap.profile_id = p.profile_id AND ap.is_primary
LEFT JOIN identity.accounts a ON a.account_id = ap.account_id
ORDER BY p.profile_id

-- views.product_usage_people: one row per product user who has not refused analytics, pseudonymous (profile id,
-- no contact details): activity over 7 and 30 days, features, where they are in the signup-to-paid funnel.
-- Made here as TEMP _product_usage_people for the profiles of $view_profiles (views/following.py).
CREATE OR REPLACE TEMP TABLE _product_usage_people AS
SELECT
    l.profile_id,
    ap.account_id,
    p.plan, p.subscription_status,
    CASE
        WHEN p.mrr_cents > 0 THEN 'paying'  -- the glossary's paying (docs/views.md)
        WHEN l.activated_at IS NOT NULL THEN 'activated'
        WHEN l.signed_up_at IS NOT NULL THEN 'signed_up'
        ELSE 'visitor'
    END AS funnel_stage,
    l.signed_up_at, l.activated_at,
    date_diff('day', l.signed_up_at, l.activated_at) AS days_to_activation,
    l.first_paid_at,
    l.active_days_7, l.active_days_30, l.product_events_30,
    l.features_used, l.features_used_30,
    len(l.features_used) AS features_adopted,
    l.last_product_at,
    p.open_tickets,
    l.as_of
FROM identity.person_lifecycle l
JOIN identity.person_profiles p USING (profile_id)
JOIN privacy.purposes pr USING (profile_id)
LEFT JOIN identity.account_people ap ON ap.profile_id = l.profile_id AND ap.is_primary
WHERE l.last_product_at IS NOT NULL AND list_contains(pr.purposes, $analytics_purpose)
  AND l.profile_id IN (FROM query_table($view_profiles))
ORDER BY l.profile_id

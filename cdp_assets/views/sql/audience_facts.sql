-- One row per live person with everything an audience condition may test, for the profiles a build makes
-- ($view_profiles: all, or those a following build makes again, views/following.py).
CREATE OR REPLACE TEMP TABLE _audience_facts AS
SELECT
    p.profile_id, p.email, p.phone, p.first_name, p.last_name, p.country_code, p.lifecycle_stage, p.open_tickets,
    l.* EXCLUDE (profile_id),
    m.revenue_cents, m.mrr_cents,
    coalesce(pr.purposes, []) AS purposes
FROM identity.person_profiles p
JOIN identity.person_lifecycle l USING (profile_id)
JOIN _person_money m USING (profile_id)
LEFT JOIN privacy.purposes pr USING (profile_id)
WHERE p.is_active AND p.profile_id IN (FROM query_table($view_profiles))

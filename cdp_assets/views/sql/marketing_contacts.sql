-- views.marketing_contacts: one row per person who may be sent marketing email, with the address to send to (the
-- one their email audience rows carry, `privacy.consented_addresses`: an address that consented, their golden one
-- first, else their most engaged), what an engagement platform personalises on, and the email audiences they are in.
-- Synced to Braze.
-- Made here as TEMP _marketing_contacts for the profiles of $view_profiles (all, or those a following build makes
-- again: views/following.py).
CREATE OR REPLACE TEMP TABLE _marketing_contacts AS
WITH mailable AS (
    SELECT c.profile_id, c.email, a.best_send_hour
    FROM privacy.consented_addresses c
    JOIN views.marketing_email_addresses a USING (profile_id, email)
    WHERE c.purpose = $email_purpose AND a.is_mailable AND c.profile_id IN (FROM query_table($view_profiles))
),
memberships AS (
    SELECT profile_id, list(audience ORDER BY audience) AS audiences
    FROM views.marketing_audiences
    WHERE purpose = $email_purpose AND profile_id IN (FROM query_table($view_profiles))
    GROUP BY profile_id
)
SELECT
    m.profile_id, m.email, p.first_name, p.last_name, p.country_code, p.time_zone, m.best_send_hour,
    p.plan, p.lifecycle_stage, coalesce(ms.audiences, []) AS audiences, pr.purposes, l.as_of
FROM mailable m
JOIN identity.person_profiles p USING (profile_id)
JOIN identity.person_lifecycle l USING (profile_id)
LEFT JOIN memberships ms USING (profile_id)
LEFT JOIN privacy.purposes pr USING (profile_id)

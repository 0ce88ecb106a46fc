-- views.marketing_email_addresses: one row per email address, with its engagement, best send hour and consent.
-- A purpose holds for an address when privacy.address_consent says the purpose may use it: the person allows it, the
-- address itself has no current refusal and, for an opt-in purpose, a current grant binds the address itself.
-- Made here as TEMP _marketing_email_addresses for the addresses on the profiles of $view_profiles
-- (views/following.py).
CREATE OR REPLACE TEMP TABLE _marketing_email_addresses AS
WITH address_purposes AS (
    SELECT
        profile_id, email,
        coalesce(list(purpose ORDER BY purpose) FILTER (WHERE allowed), []) AS purposes,
        any_value(state) FILTER (WHERE purpose = $email_purpose) AS email_marketing_consent
    FROM privacy.address_consent
    WHERE profile_id IN (FROM query_table($view_profiles))
    GROUP BY ALL
)
SELECT
    a.email, a.profile_id, a.domain, a.is_work, a.is_free_mail, a.is_active,
    a.sends, a.opens, a.clicks, a.bounces,
    round(a.opens / nullif(a.sends, 0), 4) AS open_rate,
    round(a.clicks / nullif(a.sends, 0), 4) AS click_rate,
    a.last_open_at, a.last_click_at, a.hard_bounced, a.best_send_hour,
    coalesce(ap.email_marketing_consent, 'no_choice') AS email_marketing_consent,
    coalesce(ap.purposes, []) AS purposes,
    list_contains(coalesce(ap.purposes, []), $email_purpose) AND a.is_active AND NOT a.hard_bounced AS is_mailable,
    (SELECT any_value(as_of) FROM identity.person_lifecycle) AS as_of
FROM identity.email_addresses a
LEFT JOIN address_purposes ap USING (profile_id, email)
WHERE a.profile_id IN (FROM query_table($view_profiles))
ORDER BY a.email

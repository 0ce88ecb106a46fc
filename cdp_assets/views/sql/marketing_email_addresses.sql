-- views.marketing_email_addresses: one row per email address, with its engagement, best send hour and consent.
-- The email purpose holds for an address only if it holds for the person, the address itself has no current
-- refusal and, for an opt-in purpose, the address itself has a current grant.
CREATE OR REPLACE TABLE views.marketing_email_addresses AS
WITH address_choices AS (
    SELECT
        subject AS email,
        bool_or(choice = 'denied') AS denied,
        bool_or(choice = 'granted') AS granted
    FROM privacy.consent_ledger
    WHERE is_current AND purpose = $email_purpose AND subject IS NOT NULL
    GROUP BY subject
),
addresses AS (
    SELECT
        a.*,
        CASE WHEN ac.denied THEN 'denied' WHEN ac.granted THEN 'granted' ELSE 'no_choice' END AS address_consent,
        coalesce(pr.purposes, []) AS person_purposes,
        $email_purpose AS email_purpose,
        NOT coalesce(ac.denied, false) AND ($email_basis = 'opt_out' OR coalesce(ac.granted, false)) AS address_allows
    FROM identity.email_addresses a
    LEFT JOIN address_choices ac USING (email)
    LEFT JOIN _purposes pr USING (profile_id)
)
SELECT
    email, profile_id, domain, is_work, is_free_mail, is_active,
    sends, opens, clicks, bounces,
    round(opens / nullif(sends, 0), 4) AS open_rate,
    round(clicks / nullif(sends, 0), 4) AS click_rate,
    last_open_at, last_click_at, hard_bounced, best_send_hour,
    address_consent AS email_marketing_consent,
    CASE WHEN address_allows THEN person_purposes
        ELSE list_filter(person_purposes, lambda x: x <> email_purpose) END AS purposes,
    address_allows AND list_contains(person_purposes, email_purpose) AND is_active AND NOT hard_bounced AS is_mailable,
    (SELECT any_value(as_of) FROM identity.person_lifecycle) AS as_of
FROM addresses
ORDER BY email

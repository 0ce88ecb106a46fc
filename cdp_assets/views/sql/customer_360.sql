-- views.customer_360: one row per person, for sales and support: who they are, what they pay, how support and
-- the product go for them, and what they agreed to. `crm_contact_id` is the live HubSpot contact holding the
-- person's email; `help_desk_user_id` and `help_desk_email` the person's most recently updated live Zendesk user,
-- so a sync writes onto the records those tools already have.
-- Made here as TEMP _customer_360 for the profiles of $view_profiles (all, or those a following build makes
-- again: views/following.py).
CREATE OR REPLACE TEMP TABLE _customer_360 AS
WITH help_desk AS (
    SELECT
        rp.profile_id,
        arg_max(u.user_id, (u.source_updated_at, u.user_id)) AS help_desk_user_id,
        arg_max(i.value, (u.source_updated_at, u.user_id)) AS help_desk_email
    FROM identity.record_profiles rp
    JOIN staging.zendesk__users u ON u.user_id = rp.record_id
    JOIN identity.identifiers i ON i.stream = rp.stream AND i.record_id = rp.record_id AND i.id_type = 'email'
    WHERE rp.stream = 'zendesk.users' AND NOT u.is_deleted AND rp.profile_id IN (FROM query_table($view_profiles))
    GROUP BY rp.profile_id
)
SELECT
    p.profile_id, p.is_active,
    p.email, p.first_name, p.last_name, p.phone, p.company, p.job_title, p.city, p.country, p.time_zone,
    ap.account_id, a.name AS account_name,
    c.contact_id AS crm_contact_id, hd.help_desk_user_id, hd.help_desk_email,
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
LEFT JOIN privacy.purposes pr USING (profile_id)
LEFT JOIN identity.account_people ap ON ap.profile_id = p.profile_id AND ap.is_primary
LEFT JOIN identity.accounts a ON a.account_id = ap.account_id
LEFT JOIN staging.hubspot__contacts c
    ON p.email_source = 'hubspot.contacts' AND c.contact_id = p.email_record_id AND NOT c.is_deleted
LEFT JOIN help_desk hd ON hd.profile_id = p.profile_id
WHERE p.profile_id IN (FROM query_table($view_profiles))
ORDER BY p.profile_id

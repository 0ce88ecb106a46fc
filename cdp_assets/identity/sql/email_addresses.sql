-- identity.email_addresses: one row per normalised email address, with its owner and its Klaviyo engagement, as
-- TEMP _email_addresses; TEMP _email_holders: each record that holds an address (identity.email_holders, which a
-- following build reads to find the addresses a changed record held). Reads the temp tables _person_records and
-- _email_events. Free-mail and disposable domains are glob patterns passed as parameters.
CREATE OR REPLACE TEMP TABLE _email_holders AS
-- Each record that holds the address, once, with its profile, whether that record is live, and when it was seen.
SELECT i.value AS email, i.stream, i.record_id, any_value(pr.profile_id) AS profile_id,
       bool_or(NOT coalesce(pr.is_deleted, true)) AS is_live,
       min(i.observed_at) AS first_at, max(i.observed_at) AS last_at
FROM identity.identifiers i
JOIN _person_records pr USING (stream, record_id)
WHERE i.id_type = 'email'
GROUP BY i.value, i.stream, i.record_id;

CREATE OR REPLACE TEMP TABLE _email_addresses AS
WITH observed AS (
    FROM _email_holders
),
owners AS (
    -- An address the graph put in several profiles belongs to the one holding it on most records, then most recently.
    SELECT email, profile_id, count(*) AS holdings, max(last_at) AS last_at
    FROM observed
    GROUP BY email, profile_id
),
addresses AS (
    SELECT
        email,
        arg_max(profile_id, (holdings, coalesce(last_at, '-infinity'::TIMESTAMPTZ), profile_id)) AS profile_id,
        count(*) AS profiles
    FROM owners
    GROUP BY email
),
seen AS (
    SELECT email, bool_or(is_live) AS is_active, list_sort(list_distinct(list(stream))) AS sources,
           count(*) AS records, min(first_at) AS first_seen_at, max(last_at) AS last_seen_at
    FROM observed
    GROUP BY email
),
consent AS (
    -- Marketing consent of the address's Klaviyo profile: a live one first, then the most recently changed.
    SELECT
        o.email,
        arg_max(p.email_marketing_consent, (NOT p.is_deleted, p.source_updated_at, p.profile_id))
            AS email_marketing_consent,
        arg_max(p.email_marketing_consent_at, (NOT p.is_deleted, p.source_updated_at, p.profile_id))
            AS email_marketing_consent_at
    FROM observed o
    JOIN staging.klaviyo__profiles p ON p.profile_id = o.record_id
    WHERE o.stream = 'klaviyo.profiles'
    GROUP BY o.email
),
events AS (
    SELECT o.email, e.*
    FROM observed o
    JOIN _email_events e ON e.klaviyo_profile_id = o.record_id
    WHERE o.stream = 'klaviyo.profiles'
),
engagement AS (
    SELECT
        email,
        count(*) FILTER (WHERE is_send) AS sends,
        count(*) FILTER (WHERE is_open) AS opens,
        count(*) FILTER (WHERE is_click) AS clicks,
        count(*) FILTER (WHERE is_bounce) AS bounces,
        max(occurred_at) FILTER (WHERE is_open AND is_past) AS last_open_at,
        max(occurred_at) FILTER (WHERE is_click AND is_past) AS last_click_at,
        bool_or(is_hard_bounce) AS hard_bounced,
        max(occurred_at) FILTER (WHERE is_hard_bounce AND is_past) AS hard_bounced_at
    FROM events
    GROUP BY email
),
best_hour AS (
    -- The UTC hour this address most often opens or clicks; ties go to the earlier hour.
    SELECT email, arg_max(hour, (interactions, -hour)) AS best_send_hour
    FROM (
        SELECT email, hour(timezone('UTC', occurred_at)) AS hour, count(*) AS interactions
        FROM events
        WHERE (is_open OR is_click) AND is_past
        GROUP BY ALL
    )
    GROUP BY email
),
classified AS (
    SELECT
        email,
        split_part(email, '@', 2) AS domain,
        list_bool_or(list_transform($free_mail_domains, lambda p: split_part(email, '@', 2) GLOB p)) AS is_free_mail,
        list_bool_or(list_transform($disposable_domains, lambda p: split_part(email, '@', 2) GLOB p)) AS is_disposable
    FROM addresses
)
SELECT
    a.email,
    a.profile_id,
    a.profiles,
    c.domain,
    c.is_free_mail,
    c.is_disposable,
    NOT (c.is_free_mail OR c.is_disposable) AS is_work,
    s.is_active,
    s.sources,
    s.records,
    s.first_seen_at,
    s.last_seen_at,
    coalesce(g.sends, 0) AS sends,
    coalesce(g.opens, 0) AS opens,
    coalesce(g.clicks, 0) AS clicks,
    coalesce(g.bounces, 0) AS bounces,
    g.last_open_at,
    g.last_click_at,
    coalesce(g.hard_bounced, false) AS hard_bounced,
    g.hard_bounced_at,
    k.email_marketing_consent,
    k.email_marketing_consent_at,
    h.best_send_hour
FROM addresses a
JOIN classified c USING (email)
JOIN seen s USING (email)
LEFT JOIN engagement g USING (email)
LEFT JOIN consent k USING (email)
LEFT JOIN best_hour h USING (email)

-- privacy.consent_ledger (made whole here as TEMP _consent_ledger; consent.py writes the profiles whose statements
-- changed): every consent statement a source holds, on the profile of the person it binds.
-- `subject` is what the choice is about: an email address for list subscriptions and CRM opt-outs, the product
-- login (or device) for product consent events. `addresses` are the email addresses it binds: the one it names, or
-- for a product event naming none, those the records carrying its login hold on the person's profile; none for a
-- refusal whose address cannot be read, which binds the person whatever the address.
--
-- A statement binds the person it can be attributed to, or nobody (then it is left out). A record identity placed
-- binds its profile, unless it carries a login or device that is a shared value (`_subject_crossings` of
-- shared_values.sql: a device, or holders with different names): identity may have placed it through that value.
-- Any other binds the one profile that the person identifiers it carries lead to through other records (a device
-- only on an event without a login; shared values lead nowhere), and nobody when they lead to none or to several.
--
-- Quarantined records (`_held__<entity>`: their readable fields, read by staging's own reader; `_payload_identifiers`:
-- the identifiers their payloads carry, read by `paths.identify`) give their refusals, never a grant (`quarantined`).
-- A later statement by the same source on the same subject supersedes an earlier one, and one whose time cannot be
-- read counts as the latest: a refusal of unknown time denies the purpose until it can be read. A refusal stays
-- current after its record is deleted (deleting a record withdraws nothing); a grant on a deleted record does not.
-- Two statements of one record stated at one time (a staged version and a quarantined one) rank the staged first,
-- so each build keeps the same one current.
CREATE OR REPLACE TEMP TABLE _consent_ledger AS
WITH product_purposes AS (
    SELECT unnest($product_properties) AS property, unnest($product_purposes) AS purpose
),
statements AS (
    SELECT $list_purpose AS purpose,
        CASE WHEN list_contains($list_granted, k.email_marketing_consent) THEN 'granted' ELSE 'denied' END AS choice,
        coalesce(k.email_marketing_consent_at, k.updated_at) AS stated_at, 'klaviyo.profiles' AS source,
        k.profile_id AS record_id, NULL::BIGINT AS landing_id, NULL AS login, NULL AS login_type,
        'consent=' || k.email_marketing_consent AS evidence, k.is_deleted, false AS quarantined
    FROM staging.klaviyo__profiles k
    WHERE list_contains(list_concat($list_granted, $list_denied), k.email_marketing_consent)
    UNION ALL
    SELECT $list_purpose, 'denied', coalesce(k.email_marketing_consent_at, k.updated_at), 'klaviyo.profiles',
        coalesce(k.record_id, '#' || k.landing_id), k.landing_id, NULL, NULL, 'consent=' || k.email_marketing_consent,
        k.is_deleted, true
    FROM _held__klaviyo__profiles k
    WHERE list_contains($list_denied, k.email_marketing_consent)
    UNION ALL
    SELECT unnest($opt_out_purposes), 'denied', c.updated_at, 'hubspot.contacts', c.contact_id, NULL, NULL, NULL,
        'hs_email_optout=true', c.is_deleted, false
    FROM staging.hubspot__contacts c
    WHERE c.email_opt_out
    UNION ALL
    SELECT unnest($opt_out_purposes), 'denied', c.updated_at, 'hubspot.contacts',
        coalesce(c.record_id, '#' || c.landing_id), c.landing_id, NULL, NULL,
        'hs_email_optout=true', c.is_deleted, true
    FROM _held__hubspot__contacts c
    WHERE c.email_opt_out
    UNION ALL
    SELECT p.purpose,
        CASE WHEN json_extract_string(m.properties, '$.' || p.property) = 'true' THEN 'granted' ELSE 'denied' END,
        m.occurred_at, 'mixpanel.events', m.insert_id, NULL, coalesce(m.user_id, m.device_id),
        CASE WHEN m.user_id IS NOT NULL THEN 'user_id' WHEN m.device_id IS NOT NULL THEN 'device_id' END,
        p.property || '=' || json_extract_string(m.properties, '$.' || p.property), m.is_deleted, false
    FROM staging.mixpanel__events m
    CROSS JOIN product_purposes p
    WHERE m.event_name = $product_event AND m.occurred_at <= now()
      AND json_type(json_extract(m.properties, '$.' || p.property)) = 'BOOLEAN'
    UNION ALL
    SELECT p.purpose, 'denied', m.occurred_at, 'mixpanel.events',
        coalesce(m.insert_id, m.record_id, '#' || m.landing_id), m.landing_id,
        coalesce(m.user_id, m.device_id),
        CASE WHEN m.user_id IS NOT NULL THEN 'user_id' WHEN m.device_id IS NOT NULL THEN 'device_id' END,
        p.property || '=false', m.is_deleted, true
    FROM _held__mixpanel__events m
    CROSS JOIN product_purposes p
    WHERE m.event_name = $product_event AND coalesce(m.occurred_at <= now(), true)
      AND json_type(json_extract(m.properties, '$.' || p.property)) = 'BOOLEAN'
      AND json_extract_string(m.properties, '$.' || p.property) = 'false'
),
records AS (
    SELECT DISTINCT source AS stream, record_id, landing_id FROM statements
),
carried AS (  -- the person identifiers each statement's record carries, as identity stores them
    SELECT r.stream, r.record_id, r.landing_id, i.id_type, i.value
    FROM records r
    JOIN identity.identifiers i USING (stream, record_id)
    WHERE r.landing_id IS NULL AND i.id_type IN ('email', 'email_canonical', 'phone', 'user_id', 'device_id')
    UNION ALL
    SELECT r.stream, r.record_id, r.landing_id, p.id_type, p.value
    FROM records r
    JOIN _payload_identifiers p USING (landing_id)
    WHERE p.id_type IN ('email', 'email_canonical', 'phone', 'user_id', 'device_id')
),
person_values AS (  -- a device names the person only on an event without a login
    SELECT c.* FROM carried c
    WHERE c.id_type <> 'device_id' OR NOT EXISTS (
        SELECT 1 FROM carried l
        WHERE l.id_type = 'user_id' AND l.stream = c.stream AND l.record_id = c.record_id
          AND l.landing_id IS NOT DISTINCT FROM c.landing_id)
),
shared AS (
    SELECT DISTINCT id_type, value FROM _subject_crossings WHERE list_contains($subject_types, id_type)
      AND shared_by IS NOT NULL
),
through_shared AS (
    SELECT DISTINCT stream, record_id, landing_id FROM person_values JOIN shared USING (id_type, value)
),
placed AS (
    SELECT r.stream, r.record_id, r.landing_id, rp.profile_id
    FROM records r
    JOIN identity.record_profiles rp USING (stream, record_id)
    WHERE r.landing_id IS NULL
      AND NOT EXISTS (SELECT 1 FROM through_shared t WHERE t.stream = r.stream AND t.record_id = r.record_id)
),
unplaced_values AS (  -- filtered before the join: most carried values are placed statements', which led would drop
    SELECT v.* FROM person_values v
    WHERE NOT EXISTS (SELECT 1 FROM shared s WHERE s.id_type = v.id_type AND s.value = v.value)
      AND NOT EXISTS (SELECT 1 FROM placed p WHERE p.stream = v.stream AND p.record_id = v.record_id
                                               AND p.landing_id IS NOT DISTINCT FROM v.landing_id)
),
led AS (  -- the profiles other records carrying each unplaced statement's values are on
    SELECT v.stream, v.record_id, v.landing_id, rp.profile_id
    FROM unplaced_values v
    JOIN identity.identifiers i ON i.id_type = v.id_type AND i.value = v.value
    JOIN identity.record_profiles rp ON rp.stream = i.stream AND rp.record_id = i.record_id
    WHERE NOT (i.stream = v.stream AND i.record_id = v.record_id)
),
attributed AS (
    SELECT stream, record_id, landing_id, profile_id FROM placed
    UNION ALL
    SELECT stream, record_id, landing_id, any_value(profile_id) FROM led
    GROUP BY ALL
    HAVING count(DISTINCT profile_id) = 1
),
named AS (
    SELECT stream, record_id, landing_id, list(DISTINCT value ORDER BY value) AS addresses
    FROM carried
    WHERE id_type = 'email'
    GROUP BY ALL
),
login_addresses AS (  -- the addresses records carrying a statement's login hold, per profile
    SELECT rp.profile_id, l.value AS login, list(DISTINCT e.value ORDER BY e.value) AS addresses
    FROM identity.identifiers l
    JOIN identity.identifiers e ON e.stream = l.stream AND e.record_id = l.record_id AND e.id_type = 'email'
    JOIN identity.record_profiles rp ON rp.stream = l.stream AND rp.record_id = l.record_id
    WHERE l.id_type = 'user_id' AND l.value IN (SELECT login FROM statements)
    GROUP BY ALL
),
bound AS (
    SELECT
        a.profile_id, s.*,
        coalesce(n.addresses, CASE WHEN (s.login_type, s.login) NOT IN (SELECT id_type, value FROM shared)
                                   THEN la.addresses END,
                 []::VARCHAR[]) AS addresses
    FROM statements s
    JOIN attributed a ON a.stream = s.source AND a.record_id = s.record_id
                     AND a.landing_id IS NOT DISTINCT FROM s.landing_id
    LEFT JOIN named n ON n.stream = s.source AND n.record_id = s.record_id
                     AND n.landing_id IS NOT DISTINCT FROM s.landing_id
    LEFT JOIN login_addresses la ON la.profile_id = a.profile_id AND la.login = s.login AND s.login_type = 'user_id'
),
ranked AS (
    SELECT
        *,
        coalesce(login, addresses[1]) AS subject,
        NOT (choice = 'granted' AND is_deleted) AS can_be_current,
        row_number() OVER (
            PARTITION BY profile_id, purpose, source, coalesce(login, addresses[1], record_id),
                         NOT (choice = 'granted' AND is_deleted)
            ORDER BY stated_at DESC NULLS FIRST, record_id DESC, quarantined, evidence
        ) AS recency
    FROM bound
)
SELECT
    profile_id, purpose, choice, stated_at, source, record_id, subject, addresses,
    evidence || CASE WHEN quarantined THEN '; record quarantined' ELSE '' END
             || CASE WHEN stated_at IS NULL THEN '; time unreadable' ELSE '' END AS evidence,
    is_deleted AS record_deleted, quarantined,
    can_be_current AND recency = 1 AS is_current
FROM ranked

-- privacy.consent_ledger: every consent statement a source holds, on the profile of the record carrying it.
-- `subject` is what the choice is about: an email address for list subscriptions and CRM opt-outs, the product
-- login (or device) for product consent events. A later statement by the same source on the same subject
-- supersedes an earlier one. A refusal stays current after its record is deleted (deleting a record withdraws
-- nothing); a grant on a deleted record does not.
CREATE OR REPLACE TABLE privacy.consent_ledger AS
WITH emails AS (
    SELECT stream, record_id, any_value(value) AS email
    FROM identity.identifiers
    WHERE id_type = 'email'
    GROUP BY ALL
),
product_purposes AS (
    SELECT unnest($product_properties) AS property, unnest($product_purposes) AS purpose
),
statements AS (
    SELECT
        rp.profile_id,
        $list_purpose AS purpose,
        CASE WHEN list_contains($list_granted, k.email_marketing_consent) THEN 'granted' ELSE 'denied' END AS choice,
        coalesce(k.email_marketing_consent_at, k.updated_at) AS stated_at,
        rp.stream AS source,
        rp.record_id,
        e.email AS subject,
        'consent=' || k.email_marketing_consent AS evidence,
        k.is_deleted
    FROM identity.record_profiles rp
    JOIN staging.klaviyo__profiles k ON k.profile_id = rp.record_id
    LEFT JOIN emails e USING (stream, record_id)
    WHERE rp.stream = 'klaviyo.profiles'
      AND list_contains(list_concat($list_granted, $list_denied), k.email_marketing_consent)
    UNION ALL
    SELECT rp.profile_id, unnest($opt_out_purposes), 'denied', c.updated_at, rp.stream, rp.record_id, e.email,
        'hs_email_optout=true', c.is_deleted
    FROM identity.record_profiles rp
    JOIN staging.hubspot__contacts c ON c.contact_id = rp.record_id
    LEFT JOIN emails e USING (stream, record_id)
    WHERE rp.stream = 'hubspot.contacts' AND c.email_opt_out
    UNION ALL
    SELECT rp.profile_id, p.purpose,
        CASE WHEN json_extract_string(m.properties, '$.' || p.property) = 'true' THEN 'granted' ELSE 'denied' END,
        m.occurred_at, rp.stream, rp.record_id, coalesce(m.user_id, m.device_id),
        p.property || '=' || json_extract_string(m.properties, '$.' || p.property), m.is_deleted
    FROM identity.record_profiles rp
    JOIN staging.mixpanel__events m ON m.insert_id = rp.record_id
    CROSS JOIN product_purposes p
    WHERE rp.stream = 'mixpanel.events' AND m.event_name = $product_event AND m.occurred_at <= now()
      AND json_type(json_extract(m.properties, '$.' || p.property)) = 'BOOLEAN'
),
ranked AS (
    SELECT
        *,
        NOT (choice = 'granted' AND is_deleted) AS can_be_current,
        row_number() OVER (
            PARTITION BY profile_id, purpose, source, coalesce(subject, record_id), NOT (choice = 'granted' AND is_deleted)
            ORDER BY stated_at DESC NULLS LAST, record_id DESC
        ) AS recency
    FROM statements
)
SELECT
    profile_id, purpose, choice, stated_at, source, record_id, subject, evidence, is_deleted AS record_deleted,
    can_be_current AND recency = 1 AS is_current
FROM ranked
ORDER BY profile_id, purpose, stated_at

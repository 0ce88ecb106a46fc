-- Klaviyo profile with its email marketing consent.
record_id AS profile_id,
payload->'attributes'->>'email' AS email,
payload->'attributes'->>'phone_number' AS phone_number,
payload->'attributes'->>'external_id' AS external_id,
payload->'attributes'->>'first_name' AS first_name,
payload->'attributes'->>'last_name' AS last_name,
payload->'attributes'->>'organization' AS organization,
payload->'attributes'->>'title' AS title,
payload->'attributes'->>'locale' AS locale,
payload->'attributes'->'location'->>'city' AS city,
payload->'attributes'->'location'->>'country' AS country,
payload->'attributes'->'location'->>'timezone' AS time_zone,
payload->'attributes'->'subscriptions'->'email'->'marketing'->>'consent' AS email_marketing_consent,
TRY_CAST(payload->'attributes'->'subscriptions'->'email'->'marketing'->>'consent_timestamp' AS TIMESTAMPTZ)
    AS email_marketing_consent_at,
TRY_CAST(payload->'attributes'->>'created' AS TIMESTAMPTZ) AS created_at,
TRY_CAST(payload->'attributes'->>'updated' AS TIMESTAMPTZ) AS updated_at,
TRY_CAST(payload->'attributes'->>'last_event_date' AS TIMESTAMPTZ) AS last_event_at

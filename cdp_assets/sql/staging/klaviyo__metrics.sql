-- Klaviyo metric: the name of a kind of event.
record_id AS metric_id,
payload->'attributes'->>'name' AS name,
payload->'attributes'->'integration'->>'name' AS integration,
TRY_CAST(payload->'attributes'->>'created' AS TIMESTAMPTZ) AS created_at,
TRY_CAST(payload->'attributes'->>'updated' AS TIMESTAMPTZ) AS updated_at

-- Klaviyo event: one email send, open, click, bounce or unsubscribe.
record_id AS event_id,
payload->'relationships'->'profile'->'data'->>'id' AS profile_id,
payload->'relationships'->'metric'->'data'->>'id' AS metric_id,
TRY_CAST(payload->'attributes'->>'datetime' AS TIMESTAMPTZ) AS occurred_at,
payload->'attributes'->>'uuid' AS event_uuid,
payload->'attributes'->'event_properties' AS properties

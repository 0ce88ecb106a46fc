-- Klaviyo email events classified once for person profiles and email addresses alike: those of the Klaviyo
-- profiles of the build's scope (TEMP _scope_records).
-- Which metric names count as a send, open, click or bounce is data (profiles.EMAIL_METRICS).
CREATE OR REPLACE TEMP TABLE _email_events AS
SELECT
    e.profile_id AS klaviyo_profile_id,
    e.occurred_at,
    e.occurred_at <= $as_of AS is_past,  -- a future timestamp is a bad record: counted, never dated
    list_contains($send_metrics, m.name) AS is_send,
    list_contains($open_metrics, m.name) AS is_open,
    list_contains($click_metrics, m.name) AS is_click,
    list_contains($bounce_metrics, m.name) AS is_bounce,
    list_contains($bounce_metrics, m.name)
        AND coalesce(e.properties ->> '$."Bounce Type"' = 'hard', false) AS is_hard_bounce
FROM staging.klaviyo__events e
JOIN staging.klaviyo__metrics m USING (metric_id)
WHERE NOT e.is_deleted
  AND e.profile_id IN (SELECT record_id FROM _scope_records WHERE stream = 'klaviyo.profiles')

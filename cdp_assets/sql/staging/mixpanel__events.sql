-- Mixpanel event. Keys starting with $ need a quoted JSON path. event_id hashes Mixpanel's own identity (event, distinct_id, time, $insert_id).
record_id AS event_id,
payload->>'event' AS event_name,
payload->'properties'->>'distinct_id' AS distinct_id,
json_extract_string(payload, '$.properties."$device_id"') AS device_id,
json_extract_string(payload, '$.properties."$user_id"') AS user_id,
json_extract_string(payload, '$.properties."$insert_id"') AS insert_id,
TRY(to_timestamp(TRY_CAST(payload->'properties'->>'time' AS DOUBLE))) AS occurred_at,
payload->'properties'->>'utm_source' AS utm_source,
payload->'properties'->>'utm_medium' AS utm_medium,
payload->'properties'->>'utm_campaign' AS utm_campaign,
payload->'properties' AS properties

-- HubSpot company (the B2B account as sales knows it).
record_id AS company_id,
payload->'properties'->>'name' AS name,
lower(payload->'properties'->>'domain') AS domain,
payload->'properties'->>'industry' AS industry,
payload->'properties'->>'city' AS city,
payload->'properties'->>'country' AS country,
TRY_CAST(payload->'properties'->>'numberofemployees' AS INTEGER) AS employee_count,
TRY_CAST(payload->>'createdAt' AS TIMESTAMPTZ) AS created_at,
TRY_CAST(payload->>'updatedAt' AS TIMESTAMPTZ) AS updated_at

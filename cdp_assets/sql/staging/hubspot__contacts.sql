-- HubSpot contact; every property arrives as text and is typed here.
record_id AS contact_id,
payload->'properties'->>'email' AS email,
payload->'properties'->>'firstname' AS first_name,
payload->'properties'->>'lastname' AS last_name,
payload->'properties'->>'phone' AS phone,
payload->'properties'->>'company' AS company_name,
payload->'properties'->>'jobtitle' AS job_title,
payload->'properties'->>'lifecyclestage' AS lifecycle_stage,
payload->'properties'->>'city' AS city,
payload->'properties'->>'country' AS country,
TRY_CAST(payload->'properties'->>'hs_email_optout' AS BOOLEAN) AS email_opt_out,
TRY_CAST(payload->>'createdAt' AS TIMESTAMPTZ) AS created_at,
TRY_CAST(payload->>'updatedAt' AS TIMESTAMPTZ) AS updated_at

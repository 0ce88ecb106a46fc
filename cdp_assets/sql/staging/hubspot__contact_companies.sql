-- The companies a HubSpot contact is associated with; the first is the primary one.
record_id AS contact_id,
CAST(payload->>'$.to[*].toObjectId' AS VARCHAR[]) AS company_ids,
payload->'to'->0->>'toObjectId' AS primary_company_id

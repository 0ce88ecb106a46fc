-- Stripe customer: the billing account of a person or company.
record_id AS customer_id,
payload->>'email' AS email,
payload->>'name' AS name,
payload->>'phone' AS phone,
payload->'address'->>'line1' AS address_line1,
payload->'address'->>'city' AS address_city,
payload->'address'->>'postal_code' AS address_postal_code,
payload->'address'->>'country' AS address_country,
upper(payload->>'currency') AS currency,
TRY_CAST(payload->>'balance' AS BIGINT) AS balance_cents,
payload->'metadata'->>'product_user_id' AS product_user_id,
TRY(to_timestamp(TRY_CAST(payload->>'created' AS DOUBLE))) AS created_at

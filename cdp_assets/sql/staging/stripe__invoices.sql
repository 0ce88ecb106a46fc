-- Stripe invoice; amounts in the currency's smallest unit.
record_id AS invoice_id,
payload->>'customer' AS customer_id,
payload->>'subscription' AS subscription_id,
payload->>'status' AS status,
TRY_CAST(payload->>'amount_due' AS BIGINT) AS amount_due_cents,
TRY_CAST(payload->>'amount_paid' AS BIGINT) AS amount_paid_cents,
upper(payload->>'currency') AS currency,
TRY(to_timestamp(TRY_CAST(payload->>'created' AS DOUBLE))) AS created_at,
TRY(to_timestamp(TRY_CAST(payload->>'period_start' AS DOUBLE))) AS period_start,
TRY(to_timestamp(TRY_CAST(payload->>'period_end' AS DOUBLE))) AS period_end

-- views.customer_timeline: one row per interaction with a person, from every source, numbered in time order
-- (`seq`), as TEMP _customer_timeline for the profiles of the build's scope (TEMP _scope_records: every record, or
-- those of the profiles a following build makes again; views/timeline.py). Deleted records and times after `as_of`
-- (the lifecycle's moment; bad records) are left out.
CREATE OR REPLACE TEMP TABLE _customer_timeline AS
WITH customers AS (
    SELECT profile_id, record_id AS customer_id FROM _scope_records WHERE stream = 'stripe.customers'
),
interactions AS (
    SELECT rp.profile_id, t.created_at AS occurred_at, 'zendesk' AS source, 'ticket_opened' AS kind,
        t.subject || ' (' || t.status || ')' AS detail, 'zendesk.tickets' AS stream, t.ticket_id AS record_id
    FROM _scope_records rp
    JOIN staging.zendesk__tickets t ON t.requester_id = rp.record_id
    WHERE rp.stream = 'zendesk.users' AND NOT t.is_deleted
    UNION ALL
    SELECT c.profile_id, i.created_at, 'stripe', CASE WHEN i.status = 'paid' THEN 'payment' ELSE 'invoice_' || i.status END,
        format('{} {:.2f}', upper(i.currency), coalesce(i.amount_paid_cents, i.amount_due_cents) / 100),
        'stripe.invoices', i.invoice_id
    FROM customers c
    JOIN staging.stripe__invoices i USING (customer_id)
    WHERE NOT i.is_deleted
    UNION ALL
    SELECT c.profile_id, s.created_at, 'stripe', 'subscription_started', s.price_id, 'stripe.subscriptions',
        s.subscription_id
    FROM customers c
    JOIN staging.stripe__subscriptions s USING (customer_id)
    WHERE NOT s.is_deleted
    UNION ALL
    SELECT c.profile_id, s.canceled_at, 'stripe', 'subscription_canceled', s.price_id, 'stripe.subscriptions',
        s.subscription_id
    FROM customers c
    JOIN staging.stripe__subscriptions s USING (customer_id)
    WHERE NOT s.is_deleted AND s.canceled_at IS NOT NULL
    UNION ALL
    SELECT rp.profile_id, e.occurred_at, 'klaviyo', 'email_' || lower(replace(m.name, ' Email', '')),
        e.properties ->> '$."Campaign Name"', 'klaviyo.events', e.event_id
    FROM _scope_records rp
    JOIN staging.klaviyo__events e ON e.profile_id = rp.record_id
    JOIN staging.klaviyo__metrics m USING (metric_id)
    WHERE rp.stream = 'klaviyo.profiles' AND NOT e.is_deleted
    UNION ALL
    SELECT rp.profile_id, e.occurred_at, 'mixpanel', 'product_event', e.event_name, 'mixpanel.events', e.insert_id
    FROM _scope_records rp
    JOIN staging.mixpanel__events e ON e.insert_id = rp.record_id
    WHERE rp.stream = 'mixpanel.events' AND NOT e.is_deleted
)
SELECT
    i.profile_id,
    row_number() OVER (PARTITION BY i.profile_id ORDER BY i.occurred_at, i.stream, i.record_id, i.kind) AS seq,
    i.occurred_at, i.source, i.kind, i.detail, i.stream, i.record_id
FROM interactions i
WHERE i.occurred_at <= $as_of

-- identity.person_lifecycle: where each person is in the customer lifecycle, as of one moment (`$as_of`) shared by
-- every view built on it: signup, activation, product activity windows, first payment, churn, abandoned checkout.
-- As TEMP _person_lifecycle, for the profiles of the build's scope (TEMP _scope_records: every record, or those of
-- the profiles a following build makes again; identity/lifecycle.py).
CREATE OR REPLACE TEMP TABLE _person_lifecycle AS
WITH clock AS (
    SELECT $as_of::TIMESTAMPTZ AS as_of
),
product AS (
    SELECT rp.profile_id, e.event_name, e.occurred_at, e.properties ->> '$.feature' AS feature, c.as_of
    FROM _scope_records rp
    JOIN staging.mixpanel__events e ON e.insert_id = rp.record_id
    CROSS JOIN clock c
    WHERE rp.stream = 'mixpanel.events' AND NOT e.is_deleted AND e.occurred_at <= c.as_of
      AND NOT list_contains($not_activity, e.event_name)
),
product_stats AS (
    SELECT
        profile_id,
        min(occurred_at) FILTER (WHERE event_name = $signup_event) AS signed_up_at,
        min(occurred_at) FILTER (WHERE list_contains($activation_events, event_name)) AS first_activation_event_at,
        max(occurred_at) AS last_product_at,
        count(DISTINCT occurred_at::DATE) FILTER (WHERE occurred_at > as_of - INTERVAL 7 DAY) AS active_days_7,
        count(DISTINCT occurred_at::DATE) FILTER (WHERE occurred_at > as_of - INTERVAL 30 DAY) AS active_days_30,
        count(*) FILTER (WHERE occurred_at > as_of - INTERVAL 30 DAY) AS product_events_30,
        list_sort(list_distinct(list(feature))) AS features_used,
        list_sort(list_distinct(list(feature) FILTER (WHERE occurred_at > as_of - INTERVAL 30 DAY))) AS features_used_30
    FROM product
    GROUP BY profile_id
),
customers AS (
    SELECT rp.profile_id, c.customer_id, c.created_at, c.is_deleted
    FROM _scope_records rp
    JOIN staging.stripe__customers c ON c.customer_id = rp.record_id
    WHERE rp.stream = 'stripe.customers'
),
payments AS (
    SELECT c.profile_id, min(i.created_at) AS first_paid_at
    FROM customers c
    JOIN staging.stripe__invoices i USING (customer_id)
    WHERE is_revenue(i.status, i.amount_paid_cents, i.is_deleted)  -- the glossary's revenue
    GROUP BY c.profile_id
),
subscriptions AS (
    SELECT
        c.profile_id,
        count(*) AS subscriptions,
        bool_or(list_contains($running_statuses, s.status)) AS is_subscribed,
        bool_or(list_contains($running_statuses, s.status) AND s.cancel_at_period_end) AS is_cancelling,
        bool_or(list_contains($payment_issue_statuses, s.status)) AS has_payment_issue,
        max(s.canceled_at) AS last_canceled_at
    FROM customers c
    JOIN staging.stripe__subscriptions s USING (customer_id)
    WHERE NOT s.is_deleted
    GROUP BY c.profile_id
),
checkouts AS (
    -- A live billing customer with no subscription started a checkout and left before paying.
    SELECT c.profile_id, max(c.created_at) AS checkout_started_at
    FROM customers c
    WHERE NOT c.is_deleted
      AND NOT EXISTS (SELECT 1 FROM staging.stripe__subscriptions s WHERE s.customer_id = c.customer_id)
    GROUP BY c.profile_id
),
ratings AS (
    SELECT
        rp.profile_id,
        count(*) FILTER (WHERE t.satisfaction_score = 'good') AS good_ratings,
        count(*) FILTER (WHERE t.satisfaction_score = 'bad') AS bad_ratings,
        count(*) FILTER (WHERE t.satisfaction_score = 'bad' AND t.updated_at > c.as_of - INTERVAL 90 DAY)
            AS bad_ratings_90,
        arg_max(t.satisfaction_score, t.updated_at) FILTER (WHERE t.satisfaction_score IN ('good', 'bad'))
            AS last_rating
    FROM _scope_records rp
    JOIN staging.zendesk__tickets t ON t.requester_id = rp.record_id
    CROSS JOIN clock c
    WHERE rp.stream = 'zendesk.users' AND NOT t.is_deleted
    GROUP BY rp.profile_id
)
SELECT
    p.profile_id,
    c.as_of,
    ps.signed_up_at,
    CASE WHEN ps.first_activation_event_at >= ps.signed_up_at THEN ps.first_activation_event_at END AS activated_at,
    ps.last_product_at,
    coalesce(ps.active_days_7, 0) AS active_days_7,
    coalesce(ps.active_days_30, 0) AS active_days_30,
    coalesce(ps.product_events_30, 0) AS product_events_30,
    coalesce(ps.features_used, []) AS features_used,
    coalesce(ps.features_used_30, []) AS features_used_30,
    pay.first_paid_at,
    coalesce(s.subscriptions, 0) AS subscriptions,
    coalesce(s.is_subscribed, false) AS is_subscribed,
    coalesce(s.is_cancelling, false) AS is_cancelling,
    coalesce(s.has_payment_issue, false) AS has_payment_issue,
    -- Churned: paid once, and nothing runs any more; the moment is the last cancellation.
    CASE WHEN pay.first_paid_at IS NOT NULL AND s.subscriptions > 0 AND NOT s.is_subscribed
        THEN s.last_canceled_at END AS churned_at,
    pay.first_paid_at IS NOT NULL AND s.subscriptions > 0 AND NOT s.is_subscribed AS is_churned,
    ch.checkout_started_at,
    coalesce(r.good_ratings, 0) AS good_ratings,
    coalesce(r.bad_ratings, 0) AS bad_ratings,
    coalesce(r.bad_ratings_90, 0) AS bad_ratings_90,
    r.last_rating
FROM identity.person_profiles p
CROSS JOIN clock c
LEFT JOIN product_stats ps USING (profile_id)
LEFT JOIN payments pay USING (profile_id)
LEFT JOIN subscriptions s USING (profile_id)
LEFT JOIN checkouts ch USING (profile_id)
LEFT JOIN ratings r USING (profile_id)
WHERE p.profile_id IN (SELECT profile_id FROM _scope_records)

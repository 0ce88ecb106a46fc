-- identity.person_profiles' rows: one golden record per profile_id of the build's scope (TEMP _scope_records).
-- Reads the temp tables _person_records, _profile_traits (survivorship winners) and _email_events (Klaviyo); a time
-- after $as_of, the moment the build judges the clock by, is a bad record's.
CREATE OR REPLACE TEMP TABLE _person_profiles AS
WITH record_stats AS (
    SELECT
        profile_id,
        coalesce(bool_or(NOT is_deleted), false) AS is_active,
        count(*) FILTER (WHERE stream <> 'mixpanel.events') AS records,
        count(*) FILTER (WHERE stream = 'mixpanel.events') AS product_events,
        list_sort(list_distinct(list(stream))) AS sources,
        min(created_at) FILTER (WHERE created_at <= $as_of) AS first_seen_at,  -- future times are bad records
        max(updated_at) FILTER (WHERE updated_at <= $as_of) AS last_seen_at
    FROM _person_records
    GROUP BY profile_id
),
emails AS (
    SELECT rp.profile_id, count(DISTINCT i.value) AS emails
    FROM _scope_records rp
    JOIN identity.identifiers i USING (stream, record_id)
    WHERE i.id_type = 'email'
    GROUP BY rp.profile_id
),
customers AS (
    SELECT profile_id, record_id AS customer_id FROM _scope_records WHERE stream = 'stripe.customers'
),
subscriptions AS (
    -- A deleted customer keeps its invoices, but Stripe cancels its subscriptions: the status says so.
    SELECT
        c.profile_id, s.subscription_id, s.status, s.price_id, s.product_id, s.billing_interval, s.created_at,
        lower(s.currency) AS currency,
        list_contains($running_statuses, s.status) AS is_running,
        -- the glossary's MRR (cdp_assets/glossary.sql)
        subscription_mrr_cents(s.status, s.unit_amount_cents, s.quantity, s.billing_interval, $mrr_statuses)
            AS mrr_cents
    FROM customers c
    JOIN staging.stripe__subscriptions s USING (customer_id)
    WHERE NOT s.is_deleted
),
main_subscription AS (
    -- The subscription the profile is "on": a running one first, then the largest, then the newest.
    SELECT profile_id, subscription_id, status, price_id, product_id, billing_interval
    FROM subscriptions
    QUALIFY row_number() OVER (
        PARTITION BY profile_id ORDER BY is_running DESC, mrr_cents DESC NULLS LAST, created_at DESC, subscription_id
    ) = 1
),
subscription_stats AS (
    SELECT
        profile_id,
        count(*) AS subscriptions,
        count(*) FILTER (WHERE is_running) AS running_subscriptions,
        bool_and(list_contains($ended_statuses, status)) AS all_ended
    FROM subscriptions
    GROUP BY profile_id
),
money AS (
    -- Revenue and MRR per currency: amounts in different currencies are never added up.
    SELECT profile_id, currency, sum(revenue_cents)::BIGINT AS revenue_cents, round(sum(mrr_cents))::BIGINT AS mrr_cents
    FROM (
        SELECT c.profile_id, lower(i.currency) AS currency, i.amount_paid_cents AS revenue_cents, 0 AS mrr_cents
        FROM customers c
        JOIN staging.stripe__invoices i USING (customer_id)
        WHERE is_revenue(i.status, i.amount_paid_cents, i.is_deleted)
        UNION ALL
        SELECT profile_id, currency, 0, mrr_cents FROM subscriptions WHERE mrr_cents > 0
    )
    GROUP BY profile_id, currency
),
billing AS (
    -- The profile's main currency is the one with the most MRR, then the most revenue.
    SELECT
        profile_id,
        arg_max(currency, (mrr_cents, revenue_cents, currency)) AS currency,
        arg_max(revenue_cents, (mrr_cents, revenue_cents, currency)) AS lifetime_revenue_cents,
        arg_max(mrr_cents, (mrr_cents, revenue_cents, currency)) AS mrr_cents,
        map_from_entries(list((currency, revenue_cents) ORDER BY currency)) AS revenue_cents_by_currency
    FROM money
    GROUP BY profile_id
),
first_touch AS (
    -- The earliest product event that carries any UTM parameter.
    SELECT
        rp.profile_id,
        arg_min(
            {'source': e.utm_source, 'medium': e.utm_medium, 'campaign': e.utm_campaign, 'at': e.occurred_at},
            (e.occurred_at, e.insert_id)
        ) AS utm
    FROM _scope_records rp
    JOIN staging.mixpanel__events e ON e.insert_id = rp.record_id
    WHERE rp.stream = 'mixpanel.events' AND NOT e.is_deleted AND e.occurred_at <= $as_of
      AND coalesce(e.utm_source, e.utm_medium, e.utm_campaign) IS NOT NULL
    GROUP BY rp.profile_id
),
tickets AS (
    SELECT
        rp.profile_id,
        count(*) AS tickets,
        count(*) FILTER (WHERE NOT list_contains($closed_ticket_statuses, t.status)) AS open_tickets
    FROM _scope_records rp
    JOIN staging.zendesk__tickets t ON t.requester_id = rp.record_id
    WHERE rp.stream = 'zendesk.users' AND NOT t.is_deleted
    GROUP BY rp.profile_id
),
engagement AS (
    SELECT
        rp.profile_id,
        count(*) FILTER (WHERE e.is_send) AS email_sends,
        count(*) FILTER (WHERE e.is_open) AS email_opens,
        count(*) FILTER (WHERE e.is_click) AS email_clicks,
        count(*) FILTER (WHERE e.is_bounce) AS email_bounces,
        max(e.occurred_at) FILTER (WHERE (e.is_open OR e.is_click) AND e.is_past) AS last_email_engagement_at
    FROM _scope_records rp
    JOIN _email_events e ON e.klaviyo_profile_id = rp.record_id
    WHERE rp.stream = 'klaviyo.profiles'
    GROUP BY rp.profile_id
),
crm_stage AS (
    -- The furthest funnel stage any live contact of the profile reached; unknown stages only when none is known.
    SELECT
        rp.profile_id,
        coalesce(
            arg_max(c.lifecycle_stage, list_position($lifecycle_funnel, c.lifecycle_stage)),
            any_value(c.lifecycle_stage)
        ) AS stage
    FROM _scope_records rp
    JOIN staging.hubspot__contacts c ON c.contact_id = rp.record_id
    WHERE rp.stream = 'hubspot.contacts' AND NOT c.is_deleted AND c.lifecycle_stage IS NOT NULL
    GROUP BY rp.profile_id
)
SELECT
    r.profile_id,
    r.is_active,
    t.* EXCLUDE (profile_id),
    coalesce(b.lifetime_revenue_cents, 0) AS lifetime_revenue_cents,
    coalesce(b.mrr_cents, 0) AS mrr_cents,
    b.currency,
    coalesce(b.revenue_cents_by_currency, MAP {}) AS revenue_cents_by_currency,
    m.price_id AS plan,
    m.product_id AS plan_product_id,
    m.billing_interval AS plan_interval,
    m.subscription_id,
    m.status AS subscription_status,
    coalesce(ss.subscriptions, 0) AS subscriptions,
    coalesce(ss.running_subscriptions, 0) AS running_subscriptions,
    CASE
        WHEN ss.running_subscriptions > 0
            AND coalesce(list_position($lifecycle_funnel, cs.stage), 0) < list_position($lifecycle_funnel, 'customer')
            THEN 'customer'
        WHEN ss.running_subscriptions > 0 THEN cs.stage
        WHEN ss.all_ended THEN 'churned'
        ELSE cs.stage
    END AS lifecycle_stage,
    cs.stage AS crm_lifecycle_stage,
    r.first_seen_at,
    r.last_seen_at,
    CASE WHEN ft.utm IS NULL THEN 'direct'
        ELSE concat_ws(' / ', ft.utm.source, ft.utm.medium, ft.utm.campaign) END AS first_touch_channel,
    ft.utm.source AS first_touch_source,
    ft.utm.medium AS first_touch_medium,
    ft.utm.campaign AS first_touch_campaign,
    ft.utm.at AS first_touch_at,
    coalesce(tk.tickets, 0) AS tickets,
    coalesce(tk.open_tickets, 0) AS open_tickets,
    coalesce(en.email_sends, 0) AS email_sends,
    coalesce(en.email_opens, 0) AS email_opens,
    coalesce(en.email_clicks, 0) AS email_clicks,
    coalesce(en.email_bounces, 0) AS email_bounces,
    en.last_email_engagement_at,
    r.records,
    r.product_events,
    r.sources,
    coalesce(em.emails, 0) AS emails
FROM record_stats r
LEFT JOIN _profile_traits t USING (profile_id)
LEFT JOIN billing b USING (profile_id)
LEFT JOIN main_subscription m USING (profile_id)
LEFT JOIN subscription_stats ss USING (profile_id)
LEFT JOIN crm_stage cs USING (profile_id)
LEFT JOIN first_touch ft USING (profile_id)
LEFT JOIN tickets tk USING (profile_id)
LEFT JOIN engagement en USING (profile_id)
LEFT JOIN emails em USING (profile_id)

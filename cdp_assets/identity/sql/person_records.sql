-- Every person-level record the graph placed in a profile of the build's scope (TEMP _scope_records): whether it is
-- live, and when it was created and last changed, by the payload's own times rather than source_updated_at, which for
-- objects without a change time (Stripe customers) is a bound from Stripe's events, not a time the person was seen.
-- A record the graph knows but staging does not hold (quarantined) has no liveness and no dates. Product events are
-- keyed by `$insert_id`, as the graph keys them.
CREATE OR REPLACE TEMP TABLE _person_records AS
SELECT rp.profile_id, rp.stream, rp.record_id, r.is_deleted, r.created_at, r.updated_at
FROM _scope_records rp
LEFT JOIN (
    SELECT 'stripe.customers' AS stream, customer_id AS record_id, is_deleted, created_at, created_at AS updated_at
    FROM staging.stripe__customers
    UNION ALL
    SELECT 'hubspot.contacts', contact_id, is_deleted, created_at, updated_at FROM staging.hubspot__contacts
    UNION ALL
    SELECT 'zendesk.users', user_id, is_deleted, created_at, updated_at FROM staging.zendesk__users
    UNION ALL
    SELECT 'klaviyo.profiles', profile_id, is_deleted, created_at, updated_at FROM staging.klaviyo__profiles
    UNION ALL
    SELECT 'mixpanel.events', insert_id, is_deleted, occurred_at, occurred_at FROM staging.mixpanel__events
) r USING (stream, record_id)

-- identity.account_people (made here as TEMP _scope_account_people, for the profiles of the build's scope, TEMP
-- _scope_records; profiles.py writes it): who works at which account, one row per account and profile.
-- Evidence: a live HubSpot contact of the profile associated with one of the account's companies, or a work
-- address at the account's domain that a live record of the profile holds and that never hard-bounced. Read from
-- each record holding it (identity.email_holders, which the email addresses' build writes), not from the address's
-- one owner in identity.email_addresses: an address can be on several profiles (a team mailbox colleagues share, a
-- shared value, links no one; one person's second product login the login limit kept apart), and each profile
-- holding it works there.
-- A profile's primary account is where its freshest CRM association points, else its freshest work address.
-- Both sides are unnested to one row per company, so the association is an equi-join (a join on
-- list_contains compares every contact with every company: quadratic in the data).
CREATE OR REPLACE TEMP TABLE _scope_account_people AS
WITH company_accounts AS (
    SELECT account_id, unnest(hubspot_company_ids) AS company_id FROM _accounts
),
contact_companies AS (
    SELECT contact_id, unnest(company_ids) AS company_id
    FROM staging.hubspot__contact_companies
    WHERE NOT is_deleted
),
links AS (
    SELECT ca.account_id, rp.profile_id, 'hubspot_association' AS via, c.source_updated_at AS linked_at
    FROM _scope_records rp
    JOIN staging.hubspot__contacts c ON c.contact_id = rp.record_id AND NOT c.is_deleted
    JOIN contact_companies cc ON cc.contact_id = c.contact_id
    JOIN company_accounts ca ON ca.company_id = cc.company_id
    WHERE rp.stream = 'hubspot.contacts'
    UNION ALL
    SELECT a.account_id, rp.profile_id, 'email_domain', max(h.last_at)
    FROM identity.email_holders h
    JOIN _scope_records rp USING (stream, record_id)
    JOIN identity.email_addresses e USING (email)
    JOIN _accounts a ON a.domain = e.domain
    WHERE h.is_live AND e.is_work AND NOT e.hard_bounced
    GROUP BY a.account_id, rp.profile_id
),
pairs AS (
    SELECT
        account_id,
        profile_id,
        list_sort(list_distinct(list(via))) AS via,
        bool_or(via = 'hubspot_association') AS in_crm,
        max(linked_at) AS linked_at
    FROM links
    GROUP BY account_id, profile_id
)
SELECT
    account_id,
    profile_id,
    via,
    linked_at,
    row_number() OVER (
        PARTITION BY profile_id ORDER BY in_crm DESC, linked_at DESC NULLS LAST, account_id
    ) = 1 AS is_primary
FROM pairs
ORDER BY account_id, profile_id

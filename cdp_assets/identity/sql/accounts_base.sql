-- The account universe, before people are linked: live HubSpot companies, one account per normalised domain
-- (a company without a domain is its own account), plus each work-email domain that matches no CRM company.
-- An address that hard-bounced, or that only deleted records hold, says nothing of where someone works now.
-- `_company_domains(domain, clean_domain)` holds each distinct company domain in the form its addresses take
-- (normalised in Python by `normalise.domain`, the one normaliser, so `xn--bcher-kva.de` meets `@bücher.de`).
CREATE OR REPLACE TEMP TABLE _accounts AS
WITH companies AS (
    SELECT c.*, d.clean_domain
    FROM staging.hubspot__companies c
    LEFT JOIN _company_domains d ON d.domain = c.domain
    WHERE NOT c.is_deleted
),
crm AS (
    SELECT
        coalesce(clean_domain, 'hubspot:' || company_id) AS account_key,
        any_value(clean_domain) AS domain,
        arg_max(name, (source_updated_at, company_id)) AS name,
        arg_max(industry, (source_updated_at, company_id)) AS industry,
        arg_max(city, (source_updated_at, company_id)) AS city,
        arg_max(country, (source_updated_at, company_id)) AS country,
        arg_max(employee_count, (source_updated_at, company_id)) AS employee_count,
        list_sort(list(company_id)) AS hubspot_company_ids,
        'hubspot' AS origin
    FROM companies
    GROUP BY ALL
),
email_domains AS (
    SELECT DISTINCT domain AS account_key, domain
    FROM identity.email_addresses
    WHERE is_work AND is_active AND NOT hard_bounced
      AND domain NOT IN (SELECT domain FROM crm WHERE domain IS NOT NULL)
)
SELECT 'acct_' || left(md5(account_key), 16) AS account_id, *
FROM (
    SELECT * FROM crm
    UNION ALL BY NAME
    SELECT *, 'email_domain' AS origin FROM email_domains
)

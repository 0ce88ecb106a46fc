-- One row per person-level record, with the features Splink compares, in one normal form across sources.
-- Names are lowercased, accent-stripped and split on the last space where a source keeps one `name`;
-- a Stripe customer named as its company has no person name, and that name becomes its company.
-- company_slug and domain_slug (the email domain's first label) keep letters and digits only, so an
-- employer can be recognised from a work address: `tapiacharles` starts `tapiacharlesgroup`.
-- Countries become ISO codes through $country_hints -> $country_codes (from normalise.region_hint).
-- Only records in _record_clusters (the graph's deterministic components) are matched.
CREATE OR REPLACE TEMP TABLE _match_records AS
WITH companies AS (
    SELECT DISTINCT lower(trim(name)) AS company FROM staging.hubspot__companies WHERE name IS NOT NULL
),
stripe AS (
    SELECT customer_id AS record_id, name, address_city AS city, address_country AS country_hint,
           regexp_matches(name, '[&,]') OR name NOT LIKE '% %'
               OR lower(trim(name)) IN (SELECT company FROM companies) AS is_company
    FROM staging.stripe__customers
),
raw_records AS (
    SELECT $stripe AS stream, record_id, CASE WHEN NOT is_company THEN name END AS name,
           NULL AS first_name, NULL AS last_name, city, country_hint, CASE WHEN is_company THEN name END AS company
    FROM stripe
    UNION ALL
    SELECT $hubspot, contact_id, NULL, first_name, last_name, city, country, company_name FROM staging.hubspot__contacts
    UNION ALL
    SELECT $zendesk, user_id, name, NULL, NULL, NULL, locale, NULL FROM staging.zendesk__users
    UNION ALL
    SELECT $klaviyo, profile_id, NULL, first_name, last_name, city, coalesce(country, locale), organization
    FROM staging.klaviyo__profiles
),
cleaned AS (
    SELECT stream, record_id,
           nullif(regexp_replace(lower(strip_accents(trim(name))), '\s+', ' ', 'g'), '') AS name,
           nullif(regexp_replace(lower(strip_accents(trim(first_name))), '\s+', ' ', 'g'), '') AS first_name,
           nullif(regexp_replace(lower(strip_accents(trim(last_name))), '\s+', ' ', 'g'), '') AS last_name,
           nullif(lower(strip_accents(trim(city))), '') AS city,
           map($country_hints, $country_codes)[trim(country_hint)] AS country,
           nullif(regexp_replace(lower(strip_accents(trim(company))), '\s+', ' ', 'g'), '') AS company
    FROM raw_records
),
identifiers AS (
    SELECT stream, record_id,
           min(value) FILTER (WHERE id_type = 'email') AS email,
           min(value) FILTER (WHERE id_type = 'phone') AS phone
    FROM identity.identifiers
    WHERE id_type IN ('email', 'phone')
    GROUP BY stream, record_id
)
SELECT c.stream || ':' || c.record_id AS unique_id,
       rc.cluster_id,
       coalesce(c.first_name, nullif(regexp_extract(c.name, '^(.+) [^ ]+$', 1), '')) AS first_name,
       coalesce(c.last_name, nullif(regexp_extract(c.name, '^.+ ([^ ]+)$', 1), '')) AS last_name,
       coalesce(c.name, nullif(concat_ws(' ', c.first_name, c.last_name), '')) AS full_name,
       i.email,
       split_part(i.email, '@', 1) AS email_local,
       split_part(i.email, '@', 2) AS email_domain,
       i.phone,
       c.city,
       c.country,
       c.company,
       nullif(regexp_replace(c.company, '[^a-z0-9]', '', 'g'), '') AS company_slug,
       nullif(regexp_replace(split_part(split_part(i.email, '@', 2), '.', 1), '[^a-z0-9]', '', 'g'), '')
           AS domain_slug
FROM cleaned c
JOIN _record_clusters rc ON rc.stream = c.stream AND rc.record_id = c.record_id
LEFT JOIN identifiers i ON i.stream = c.stream AND i.record_id = c.record_id;

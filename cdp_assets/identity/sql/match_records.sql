-- One row per person-level record of TEMP _person_source (the sources' `person:` mappings, matching.py) that is in
-- _record_clusters (the graph's deterministic components), with the fields Splink compares in one normal form.
-- person_text: NFC first (a decomposed é is e + a combining accent), accents stripped, lowercased, apostrophes
-- dropped (O'Brien = OBrien), other punctuation a space (Jean-Luc = Jean Luc), spaces collapsed; empty is NULL.
-- A source keeping one full name has it split on its last space. given_name is the first given name read through
-- the nickname table ($nicknames: Bill -> william; a nickname of several names takes the first of them).
-- Postcodes keep letters and digits, upper case. Countries become ISO codes through $country_hints ->
-- $country_codes (normalise.region_hint). email and phone are the record's normalised identifiers (other types a
-- comparison names, such as a national id, are added by matching.build_records);
-- email_from_name says whether the local part spells the record's own first or last name. company_slug and
-- domain_slug (the email domain's first label) keep letters and digits, so a work address names an employer:
-- `tapiacharles` starts `tapiacharlesgroup`.
CREATE OR REPLACE TEMP MACRO person_text(x) AS nullif(trim(regexp_replace(regexp_replace(regexp_replace(
    lower(strip_accents(nfc_normalize(x))), '[''’`´]', '', 'g'), '[[:punct:]]', ' ', 'g'), '\s+', ' ', 'g')), '');

CREATE OR REPLACE TEMP TABLE _match_records AS
WITH cleaned AS (
    SELECT s.stream, s.record_id, rc.cluster_id,
           person_text(s.first_name) AS first_name,
           person_text(s.last_name) AS last_name,
           person_text(s.full_name) AS full_name,
           try_cast(s.date_of_birth AS DATE) AS date_of_birth,
           person_text(s.street_address) AS street_address,
           nullif(upper(regexp_replace(s.postal_code, '[^A-Za-z0-9]', '', 'g')), '') AS postal_code,
           person_text(s.city) AS city,
           map($country_hints, $country_codes)[trim(s.country)] AS country,
           person_text(s.company) AS company
    FROM _person_source s
    JOIN _record_clusters rc ON rc.stream = s.stream AND rc.record_id = s.record_id
),
named AS (
    SELECT * REPLACE (
               coalesce(first_name, nullif(regexp_extract(full_name, '^(.+) [^ ]+$', 1), '')) AS first_name,
               coalesce(last_name, nullif(regexp_extract(full_name, '^.+ ([^ ]+)$', 1), '')) AS last_name,
               coalesce(full_name, nullif(concat_ws(' ', first_name, last_name), '')) AS full_name)
    FROM cleaned
),
nicknames AS (
    SELECT nickname, min(name) AS name FROM read_csv($nicknames, header = true, all_varchar = true) GROUP BY nickname
),
identifiers AS (
    SELECT stream, record_id,
           min(value) FILTER (WHERE id_type = 'email') AS email,
           min(value) FILTER (WHERE id_type = 'phone') AS phone
    FROM identity.identifiers
    WHERE id_type IN ('email', 'phone')
    GROUP BY stream, record_id
),
emails AS (
    SELECT n.*, i.email, i.phone,
           split_part(i.email, '@', 1) AS email_local,
           split_part(i.email, '@', 2) AS email_domain,
           regexp_replace(split_part(i.email, '@', 1), '[^a-z]', '', 'g') AS local_letters,
           regexp_replace(n.first_name, '[^a-z]', '', 'g') AS first_letters,
           regexp_replace(n.last_name, '[^a-z]', '', 'g') AS last_letters
    FROM named n
    LEFT JOIN identifiers i ON i.stream = n.stream AND i.record_id = n.record_id
)
SELECT e.stream || ':' || e.record_id AS unique_id,
       e.cluster_id,
       e.first_name,
       e.last_name,
       e.full_name,
       coalesce(k.name, split_part(e.first_name, ' ', 1)) AS given_name,
       e.date_of_birth,
       e.street_address,
       e.postal_code,
       e.city,
       e.country,
       e.company,
       nullif(regexp_replace(e.company, '[^a-z0-9]', '', 'g'), '') AS company_slug,
       e.email,
       e.email_local,
       e.email_domain,
       CASE WHEN e.email IS NOT NULL THEN
           coalesce((length(e.last_letters) >= 3 AND contains(e.local_letters, e.last_letters))
                    OR (length(e.first_letters) >= 3 AND contains(e.local_letters, e.first_letters)), false)
       END AS email_from_name,
       nullif(regexp_replace(split_part(e.email_domain, '.', 1), '[^a-z0-9]', '', 'g'), '') AS domain_slug,
       e.phone
FROM emails e
LEFT JOIN nicknames k ON k.nickname = split_part(e.first_name, ' ', 1);

-- privacy.purposes (as TEMP _purposes, for the profiles of _consent): per person, the purposes their data may be
-- used for, their state per purpose and the conflicting ones, as every view that says which purposes a row may serve
-- reads them.
CREATE OR REPLACE TEMP TABLE _purposes AS
SELECT
    profile_id,
    coalesce(list(purpose ORDER BY purpose) FILTER (WHERE allowed), []) AS purposes,
    map_from_entries(list((purpose, state) ORDER BY purpose)) AS consent,
    coalesce(list(purpose ORDER BY purpose) FILTER (WHERE is_conflict), []) AS consent_conflicts
FROM _consent
GROUP BY profile_id;

-- privacy.consented_addresses (as TEMP _consented_addresses, for the profiles of _address_consent): the one address
-- per person and purpose that a destination receives for that purpose: a working address the purpose may use
-- (privacy.address_consent: for an opt-in purpose, one that consented), the golden one first, then the most engaged.
-- A person with no such address has no row: no address of theirs is sent for the purpose.
CREATE OR REPLACE TEMP TABLE _consented_addresses AS
SELECT
    c.profile_id, c.purpose,
    arg_max(a.email, (coalesce(a.email = p.email, false), a.opens, a.sends, a.email)) AS email
FROM _address_consent c
JOIN identity.email_addresses a USING (profile_id, email)
JOIN identity.person_profiles p USING (profile_id)
WHERE c.allowed AND a.is_active AND NOT a.hard_bounced
GROUP BY c.profile_id, c.purpose

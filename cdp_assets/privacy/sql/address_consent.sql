-- privacy.address_consent (as TEMP _address_consent, for the profiles of _consent): one row per email address of a
-- person and purpose, saying whether the purpose may use that address. It may when the person allows the purpose
-- (privacy.consent), no current refusal binds the address (on any profile's record: consent.py follows the addresses
-- of changed refusals to the profiles holding them) and, for an opt-in purpose, a current grant of the person binds
-- it: the address a destination receives is one that consented, never merely the person's golden address.
CREATE OR REPLACE TEMP TABLE _address_consent AS
WITH bindings AS (
    SELECT profile_id, purpose, choice, unnest(addresses) AS email
    FROM privacy.consent_ledger
    WHERE is_current
),
refused AS (
    SELECT DISTINCT purpose, email FROM bindings WHERE choice = 'denied'
),
granted AS (
    SELECT DISTINCT profile_id, purpose, email FROM bindings WHERE choice = 'granted'
)
SELECT
    a.profile_id, a.email, c.purpose,
    CASE WHEN r.email IS NOT NULL THEN 'denied' WHEN g.email IS NOT NULL THEN 'granted' ELSE 'no_choice' END AS state,
    c.allowed AND r.email IS NULL AND (c.basis = 'opt_out' OR g.email IS NOT NULL) AS allowed
FROM identity.email_addresses a
JOIN _consent c USING (profile_id)
LEFT JOIN refused r ON r.purpose = c.purpose AND r.email = a.email
LEFT JOIN granted g ON g.profile_id = a.profile_id AND g.purpose = c.purpose AND g.email = a.email

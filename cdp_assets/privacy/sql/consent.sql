-- privacy.consent (as TEMP _consent, for the profiles of `_consent_scope`: consent.py): one row per profile and
-- purpose. The most restrictive current statement wins; current statements that disagree make a conflict; with no
-- statement, the purpose's basis decides (opt_out: allowed).
CREATE OR REPLACE TEMP TABLE _consent AS
WITH purposes AS (
    SELECT unnest($purposes) AS purpose, unnest($bases) AS basis
),
decided AS (
    SELECT
        profile_id,
        purpose,
        count(*) FILTER (WHERE choice = 'granted') AS grants,
        count(*) FILTER (WHERE choice = 'denied') AS denials,
        arg_max({'source': source, 'record_id': record_id, 'at': stated_at},
                (choice = 'denied', stated_at, record_id)) AS decider
    FROM privacy.consent_ledger
    WHERE is_current AND profile_id IN (FROM _consent_scope)
    GROUP BY ALL
)
SELECT
    p.profile_id,
    u.purpose,
    u.basis,
    CASE WHEN d.denials > 0 THEN 'denied' WHEN d.grants > 0 THEN 'granted' ELSE 'no_choice' END AS state,
    coalesce(d.denials, 0) = 0 AND (coalesce(d.grants, 0) > 0 OR u.basis = 'opt_out') AS allowed,
    coalesce(d.grants > 0 AND d.denials > 0, false) AS is_conflict,
    d.decider.source AS decided_by_source,
    d.decider.record_id AS decided_by_record_id,
    d.decider.at AS decided_at,
    coalesce(d.grants, 0) + coalesce(d.denials, 0) AS current_statements
FROM identity.person_profiles p
CROSS JOIN purposes u
LEFT JOIN decided d USING (profile_id, purpose)
WHERE p.profile_id IN (FROM _consent_scope)

-- The purposes each person's data may be used for, their state per purpose and the conflicting ones.
CREATE OR REPLACE TEMP TABLE _purposes AS
SELECT
    profile_id,
    coalesce(list(purpose ORDER BY purpose) FILTER (WHERE allowed), []) AS purposes,
    map_from_entries(list((purpose, state) ORDER BY purpose)) AS consent,
    coalesce(list(purpose ORDER BY purpose) FILTER (WHERE is_conflict), []) AS consent_conflicts
FROM privacy.consent
GROUP BY profile_id

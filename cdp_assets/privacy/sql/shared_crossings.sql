-- `_subject_crossings` (shared_values.sql says what it is): identity's verdict on each value, else its rule's verdict
-- on the profiles holding it (`_shared_verdicts`).
CREATE OR REPLACE TEMP TABLE _subject_crossings AS
SELECT h.id_type, h.value, h.profile_id, h.name, coalesce(i.reason, v.reason) AS shared_by
FROM _subject_held h
LEFT JOIN _identity_shared i USING (id_type, value)
LEFT JOIN _shared_verdicts v USING (id_type, value);

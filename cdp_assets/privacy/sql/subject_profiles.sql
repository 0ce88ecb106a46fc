-- The subject's profiles (holding a given identifier or record, or given themselves), the retired ids merged
-- into them, and their records as the identity layer keys them.
INSERT INTO _subject_profiles
WITH RECURSIVE found AS (
    SELECT rp.profile_id
    FROM identity.identifiers i
    JOIN identity.record_profiles rp USING (stream, record_id)
    JOIN _subject_given g ON g.id_type = i.id_type AND g.value = i.value
    UNION
    SELECT rp.profile_id
    FROM identity.record_profiles rp
    JOIN _subject_given g ON g.id_type = 'record:' || rp.stream AND g.value = rp.record_id
    UNION
    SELECT value FROM _subject_given WHERE id_type = 'profile'
),
absorbed(profile_id) AS (
    SELECT profile_id FROM found
    UNION
    SELECT r.profile_id FROM identity.profile_registry r JOIN absorbed a ON r.merged_into = a.profile_id
)
SELECT DISTINCT profile_id FROM absorbed;

INSERT INTO _subject_records
SELECT DISTINCT stream, record_id
FROM identity.record_profiles
WHERE profile_id IN (SELECT profile_id FROM _subject_profiles);

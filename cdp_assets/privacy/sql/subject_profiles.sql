-- The subject's profiles: those the request names (holding a given identifier or record, or given themselves),
-- widened to the profiles that share a person identifier with them, to a fixed point, and the retired ids merged
-- into any of them; then their records as the identity layer keys them, and the candidates left for review.
-- Reads `_subject_crossings` (shared_values.sql): a value records of several profiles carry, and whether it is shared.

-- The profiles named, then every profile a value that is not shared, or a merge, leads to. A profile without a name
-- is reached but leads nowhere: it disagrees with no one, so it could otherwise bridge two people.
INSERT INTO _subject_profiles
WITH RECURSIVE named AS (
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
leads(from_profile, to_profile) AS (
    SELECT a.profile_id, b.profile_id
    FROM _subject_crossings a
    JOIN _subject_crossings b USING (id_type, value)
    WHERE a.shared_by IS NULL AND a.name IS NOT NULL AND a.profile_id <> b.profile_id
    UNION
    SELECT merged_into, profile_id FROM identity.profile_registry WHERE merged_into IS NOT NULL
),
reached(profile_id) AS (
    SELECT profile_id FROM named
    UNION
    SELECT l.to_profile FROM reached r JOIN leads l ON l.from_profile = r.profile_id
)
SELECT DISTINCT profile_id FROM reached;

INSERT INTO _subject_records
SELECT DISTINCT stream, record_id
FROM identity.record_profiles
WHERE profile_id IN (SELECT profile_id FROM _subject_profiles);

-- Profiles that may be the same person but are not included, for an operator to review: reached only through a
-- shared value, paired with the subject's by the probabilistic model below its merge threshold, or kept apart by
-- merge protection. Reasons name the kind of link, never a value.
INSERT INTO _subject_candidates
WITH subject AS (SELECT profile_id FROM _subject_profiles),
found AS (
    SELECT b.profile_id, replace(a.id_type, '_', ' ') || ' shared (' || a.shared_by || ')' AS reason
    FROM _subject_crossings a
    JOIN _subject_crossings b USING (id_type, value)
    WHERE a.shared_by IS NOT NULL AND a.profile_id IN (SELECT profile_id FROM subject)
    UNION ALL
    SELECT other, 'match review (probability ' || round(max(probability), 2) || ')'
    FROM (
        SELECT CASE WHEN profile_l IN (SELECT profile_id FROM subject) THEN profile_r ELSE profile_l END AS other,
               probability
        FROM identity.match_review
        WHERE profile_l IN (SELECT profile_id FROM subject) OR profile_r IN (SELECT profile_id FROM subject)
    )
    GROUP BY other
    UNION ALL
    SELECT CASE WHEN profile_a IN (SELECT profile_id FROM subject) THEN profile_b ELSE profile_a END,
           'link refused (' || refused_by || ')'
    FROM identity.refused_links
    WHERE profile_a IN (SELECT profile_id FROM subject) OR profile_b IN (SELECT profile_id FROM subject)
)
SELECT profile_id, string_agg(DISTINCT reason, '; ' ORDER BY reason) AS reason
FROM found
WHERE profile_id IS NOT NULL AND profile_id NOT IN (SELECT profile_id FROM subject)
GROUP BY profile_id;

-- The four ways customer data fails its users, measured on this run's profiles.
-- duplicated:   profiles holding several records of one source (CRM duplicates, second billing accounts)
-- disconnected: person-level records alone in their profile, with no other record or product login
-- decayed:      emails and phones no record has carried for $decay_days days
-- distrusted:   profiles known only from low-trust streams (forms, product events), none from $trusted
INSERT INTO quarantine.quality_identity_history
WITH per_stream AS (
    SELECT profile_id, stream, count(*) AS n FROM identity.record_profiles
    WHERE list_contains($person_streams, stream) GROUP BY profile_id, stream
),
profiles AS (
    SELECT profile_id, bool_or(id_type = 'user_id') AS has_login FROM identity.identifier_profiles GROUP BY profile_id
),
per_profile AS (
    SELECT p.profile_id, p.has_login, coalesce(sum(s.n), 0) AS person_records,
           coalesce(max(s.n), 0) AS most_of_one_stream,
           coalesce(bool_or(list_contains($trusted, s.stream)), false) AS trusted
    FROM profiles p LEFT JOIN per_stream s USING (profile_id)
    GROUP BY p.profile_id, p.has_login
),
contact_points AS (
    SELECT max(last_seen_at) AS last_seen FROM identity.identifiers
    WHERE id_type IN ('email', 'phone') GROUP BY id_type, value
)
SELECT $run_id AS run_id, now() AS measured_at,
       (SELECT count(*) FROM per_profile) AS profiles,
       (SELECT avg((most_of_one_stream > 1)::INT) FROM per_profile WHERE person_records > 0) AS duplicated,
       (SELECT avg((person_records = 1 AND NOT has_login)::INT) FROM per_profile WHERE person_records > 0)
           AS disconnected,
       (SELECT avg((last_seen < now() - to_days($decay_days))::INT) FROM contact_points) AS decayed,
       (SELECT avg((NOT trusted)::INT) FROM per_profile) AS distrusted,
       (SELECT count(*) FROM identity.match_review) AS review_pairs

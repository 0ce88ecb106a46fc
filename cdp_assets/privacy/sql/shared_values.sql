-- Shared values, the one rule every lookup of a request follows (subject.shared_values makes what it reads:
-- `_subject_role_mailboxes(local_part)` and `_subject_names(profile_id, first_name, last_name)`).
-- Who holds each person identifier that records of more than one profile carry (identity kept them apart: a link
-- refused by a limit or a never-link rule), and what makes it shared: a value records disagreeing on who they are
-- carry (a device, a team's role mailbox, holders' profiles with different names) leads nowhere.
CREATE OR REPLACE TEMP TABLE _subject_crossings AS
WITH held AS (
    SELECT DISTINCT i.id_type, i.value, rp.profile_id
    FROM identity.identifiers i
    JOIN identity.record_profiles rp USING (stream, record_id)
    WHERE i.id_type IN ('email', 'email_canonical', 'phone', 'user_id', 'device_id')
),
crossing AS (
    SELECT id_type, value FROM held GROUP BY ALL HAVING count(*) > 1
),
named AS (
    SELECT h.id_type, h.value, h.profile_id,
           nullif(regexp_replace(lower(strip_accents(trim(concat_ws(' ', p.first_name, p.last_name)))), '\s+', ' ',
                                 'g'), '') AS name
    FROM held h
    JOIN crossing USING (id_type, value)
    LEFT JOIN _subject_names p USING (profile_id)
),
verdict AS (
    SELECT id_type, value,
           CASE WHEN id_type = 'device_id' THEN 'device'
                WHEN id_type IN ('email', 'email_canonical')
                     AND split_part(value, '@', 1) IN (SELECT local_part FROM _subject_role_mailboxes)
                    THEN 'role mailbox'
                WHEN count(DISTINCT name) > 1 THEN 'names differ'
           END AS shared_by
    FROM named
    GROUP BY id_type, value
)
SELECT n.id_type, n.value, n.profile_id, n.name, v.shared_by
FROM named n
JOIN verdict v USING (id_type, value);

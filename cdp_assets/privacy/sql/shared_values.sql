-- Shared values, the one rule every lookup of a request follows: identity's (cdp_assets/identity/shared.py, its rule
-- in rules.yaml `shared_values`). `_subject_crossings`: who holds each person identifier that records of more than one
-- profile carry, with the holder's name, and whether it is shared (`shared_by`, the reason), in which case it leads a
-- request to no one else.
-- Identity's verdict comes first (identity.shared_values, read through `_identity_shared`: judged on the records
-- carrying each value). Beyond it, privacy needs a verdict on the values identity did not call shared but that
-- records of several profiles carry: identity kept those profiles apart (a limit, the chain check, a never-link
-- rule), so following the value would join what identity split. identity's same rule judges them on the holding
-- profiles' golden records (`_shared_holders`, then shared.judge; subject.shared_values runs the three steps):
-- the request follows such a value only when the holders agree on who they are.
CREATE OR REPLACE TEMP TABLE _subject_held AS
WITH held AS (
    SELECT DISTINCT i.id_type, i.value, rp.profile_id
    FROM identity.identifiers i
    JOIN identity.record_profiles rp USING (stream, record_id)
    WHERE list_contains($types, i.id_type)
),
crossing AS (
    SELECT id_type, value FROM held GROUP BY ALL HAVING count(*) > 1
)
SELECT h.id_type, h.value, h.profile_id, person_text(p.first_name) AS first_name,
       person_text(p.last_name) AS last_name,
       nullif(concat_ws(' ', person_text(p.first_name), person_text(p.last_name)), '') AS name
FROM held h
JOIN crossing USING (id_type, value)
LEFT JOIN _subject_names p USING (profile_id);

CREATE OR REPLACE TEMP TABLE _shared_holders AS
SELECT id_type, value, profile_id AS holder, first_name, last_name, split_part(first_name, ' ', 1) AS given_name,
       NULL::DATE AS date_of_birth
FROM _subject_held;

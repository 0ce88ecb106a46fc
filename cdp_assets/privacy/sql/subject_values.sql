-- Every identifier of the subject's records, as matched: identity's normalised values (each spelling of an
-- address or number has one normal form, made once in Python), record ids per stream, profile ids.
INSERT INTO _subject_values
WITH held AS (
    SELECT i.id_type, i.value
    FROM identity.identifiers i
    JOIN _subject_records USING (stream, record_id)
)
SELECT id_type, value FROM _subject_given
UNION SELECT id_type, value FROM held
UNION SELECT 'record:' || stream, record_id FROM _subject_records
UNION SELECT 'profile', profile_id FROM _subject_profiles;

-- An identifier that records of profiles left out carry too (a shared value: a login, device, role mailbox or
-- household phone) reaches no further records and suppresses nothing: the subject's own records are reached by
-- their ids. Identifiers the request itself names stay: the person asking is known by them.
DELETE FROM _subject_values
WHERE id_type IN ('email', 'email_canonical', 'phone', 'user_id', 'device_id')
  AND (id_type, value) NOT IN (SELECT id_type, value FROM _subject_given)
  AND (id_type, value) IN (
      SELECT i.id_type, i.value
      FROM identity.identifiers i
      JOIN identity.record_profiles rp USING (stream, record_id)
      WHERE rp.profile_id NOT IN (SELECT profile_id FROM _subject_profiles)
  );

DELETE FROM _subject_values WHERE value IS NULL OR value = '';

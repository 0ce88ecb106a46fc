-- The one rule of shared values (rules.yaml `shared_values`), over TEMP _shared_holders(id_type, value, holder,
-- first_name, last_name, given_name, date_of_birth): who holds each value and what each holder says of who they are
-- (identity: the person records carrying it, and for a device the logins seen with it; privacy: the profiles
-- holding it, with their golden records). Names are in the matcher's normal form (person_text), given_name read
-- through the nickname table where the caller has it. Writes TEMP _shared_verdicts(id_type, value, reason), one
-- row per shared value, the first reason that applies:
-- 'role mailbox' (an email whose local part names a team's mailbox), 'device' (a device type held by more than one
-- holder: for identity, seen with several logins), 'names differ' (two holders' given names are not one name: not
-- alike by Jaro-Winkler, nickname or initial, nor first and last name swapped), 'dates of birth differ' (neither
-- equal, nor day and month transposed, nor within $date_max_edits typed digits).
CREATE OR REPLACE TEMP TABLE _shared_verdicts AS
WITH holders AS (
    SELECT * FROM _shared_holders WHERE list_contains($types, id_type)
),
role AS (
    SELECT DISTINCT id_type, value FROM holders
    WHERE id_type IN ('email', 'email_canonical') AND list_contains($role_mailboxes, split_part(value, '@', 1))
),
described AS (  -- each distinct description of a holder, numbered within its value, so each pair is looked at once
    SELECT *, row_number() OVER (PARTITION BY id_type, value ORDER BY first_name, last_name, date_of_birth) AS n
    FROM (
        SELECT DISTINCT id_type, value, first_name, last_name, given_name, date_of_birth FROM holders
        WHERE (first_name IS NOT NULL OR date_of_birth IS NOT NULL)
          AND (id_type, value) NOT IN (SELECT id_type, value FROM role)
    )
),
pairs AS (
    SELECT a.id_type, a.value,
        bool_or($names_alike_at IS NOT NULL AND a.first_name IS NOT NULL AND b.first_name IS NOT NULL AND NOT (
            coalesce(a.given_name = b.given_name, false)
            OR jaro_winkler_similarity(split_part(a.first_name, ' ', 1), split_part(b.first_name, ' ', 1))
               >= $names_alike_at
            OR ((length(a.first_name) = 1 OR length(b.first_name) = 1) AND left(a.first_name, 1) = left(b.first_name, 1))
            OR coalesce(jaro_winkler_similarity(a.first_name, b.last_name) >= $names_alike_at
                        AND jaro_winkler_similarity(a.last_name, b.first_name) >= $names_alike_at, false)
        )) AS names_differ,
        bool_or($date_max_edits IS NOT NULL AND a.date_of_birth <> b.date_of_birth AND NOT (
            (year(a.date_of_birth) = year(b.date_of_birth) AND month(a.date_of_birth) = day(b.date_of_birth)
             AND day(a.date_of_birth) = month(b.date_of_birth))
            OR damerau_levenshtein(strftime(a.date_of_birth, '%Y%m%d'), strftime(b.date_of_birth, '%Y%m%d'))
               <= $date_max_edits
        )) AS dates_differ
    FROM described a
    JOIN described b ON a.id_type = b.id_type AND a.value = b.value AND a.n < b.n
    GROUP BY a.id_type, a.value
),
devices AS (
    SELECT id_type, value FROM holders WHERE list_contains($device_types, id_type)
    GROUP BY id_type, value HAVING count(DISTINCT holder) > 1
)
SELECT id_type, value, 'role mailbox' AS reason FROM role
UNION ALL
SELECT id_type, value, 'device' FROM devices
WHERE (id_type, value) NOT IN (SELECT id_type, value FROM role)
UNION ALL
SELECT id_type, value, CASE WHEN names_differ THEN 'names differ' ELSE 'dates of birth differ' END
FROM pairs WHERE (names_differ OR dates_differ) AND (id_type, value) NOT IN (SELECT id_type, value FROM devices);

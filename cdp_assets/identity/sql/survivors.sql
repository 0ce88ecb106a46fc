-- Survivorship: per profile and trait, the winning candidate of _trait_candidates and the rule that chose it.
-- `trust`: a live record beats a deleted one whatever its trust; then a value of the profile's own beats one it shares
-- (a team's mailbox, a household's phone) or another profile holds (`shared`, profiles.NOT_OWN); then the trait's
-- trust order; then the latest change.
-- `agreement` (rules.yaml survivorship.agreement, for the traits in $agreement_traits): when the trusted value is a
-- near-spelling of a value that at least $min_records live records share, more than share any other value, the shared
-- value wins, from its most trusted record. Values are compared folded (case, accents, spaces); a value further away
-- (another name, a nickname) keeps trust order, and so does one near an agreed value shorter than $min_length letters.
-- A witness candidate counts towards agreement only: it never wins by trust, and wins by agreement only when no
-- other record holds the agreed value.
CREATE OR REPLACE TEMP TABLE _trait_winners AS
WITH ranked AS (
    SELECT *,
           regexp_replace(lower(strip_accents(value)), '\s+', ' ', 'g') AS folded,
           row_number() OVER (
               PARTITION BY profile_id, trait ORDER BY witness, is_deleted, shared, trust, changed_at DESC NULLS LAST, stream, record_id
           ) AS place
    FROM _trait_candidates
    WHERE value IS NOT NULL
),
votes AS (
    SELECT profile_id, trait, folded, count(DISTINCT (stream, record_id)) AS records
    FROM ranked
    WHERE NOT is_deleted AND list_contains($agreement_traits, trait)
    GROUP BY profile_id, trait, folded
),
agreed AS (
    SELECT profile_id, trait, folded
    FROM votes
    WHERE records >= $min_records
    QUALIFY records = max(records) OVER (PARTITION BY profile_id, trait)
        AND count(*) OVER (PARTITION BY profile_id, trait, records) = 1
),
trusted AS (
    SELECT * FROM ranked WHERE place = 1 AND NOT witness
),
corrected AS (
    SELECT r.* EXCLUDE (folded, place), 'agreement' AS rule
    FROM trusted t
    JOIN agreed a ON a.profile_id = t.profile_id AND a.trait = t.trait
    JOIN ranked r ON r.profile_id = t.profile_id AND r.trait = t.trait AND r.folded = a.folded AND NOT r.is_deleted
    WHERE NOT t.is_deleted AND t.folded <> a.folded
      AND length(a.folded) >= $min_length
      AND damerau_levenshtein(t.folded, a.folded) <= $max_edits
    QUALIFY row_number() OVER (PARTITION BY r.profile_id, r.trait ORDER BY r.place) = 1
)
SELECT * FROM corrected
UNION ALL BY NAME
SELECT t.* EXCLUDE (folded, place), 'trust' AS rule
FROM trusted t
ANTI JOIN corrected c ON c.profile_id = t.profile_id AND c.trait = t.trait

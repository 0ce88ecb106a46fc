-- Survivorship: per profile and trait, the winning candidate value with where it came from.
-- Filled in by profiles.traits_sql: one SELECT per rule candidate (profiles.TRAITS) and the pivot of the winners
-- into a value column and provenance columns per trait.
-- A live record beats a deleted one whatever its trust; then the rule's trust order; then the latest change.
CREATE OR REPLACE TEMP TABLE _profile_traits AS
WITH candidates AS (
{candidates}
),
winners AS (
    SELECT *
    FROM candidates
    WHERE value IS NOT NULL
    QUALIFY row_number() OVER (
        PARTITION BY profile_id, trait
        ORDER BY is_deleted, trust, changed_at DESC NULLS LAST, stream, record_id
    ) = 1
)
SELECT profile_id, {columns}
FROM winners
GROUP BY profile_id

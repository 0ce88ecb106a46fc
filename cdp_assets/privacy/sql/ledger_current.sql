-- privacy.consent_ledger's rows for the profiles a build writes (TEMP _ledger_profiles): the statements it made
-- (`_ledger_statements`, consent_ledger.sql) with, when it follows the change log, the ledger's other statements on
-- those profiles (`_ledger_kept`), which it did not make again; and which of them are current.
-- A later statement by the same source on the same subject supersedes an earlier one, and one whose time cannot be
-- read counts as the latest: a refusal of unknown time denies the purpose until it can be read. A refusal stays
-- current after its record is deleted (deleting a record withdraws nothing); a grant on a deleted record does not.
CREATE OR REPLACE TEMP TABLE _consent_ledger AS
WITH statements AS (
    SELECT * FROM _ledger_statements WHERE profile_id IN (FROM _ledger_profiles)
    UNION ALL BY NAME
    SELECT * FROM _ledger_kept
),
ranked AS (
    SELECT
        *,
        NOT (choice = 'granted' AND record_deleted) AS can_be_current,
        row_number() OVER (
            PARTITION BY profile_id, purpose, source, coalesce(subject, record_id),
                         NOT (choice = 'granted' AND record_deleted)
            ORDER BY stated_at DESC NULLS FIRST, record_id DESC
        ) AS recency
    FROM statements
)
SELECT
    profile_id, purpose, choice, stated_at, source, record_id, subject, addresses, evidence, record_deleted,
    quarantined, can_be_current AND recency = 1 AS is_current
FROM ranked

-- Privacy requests and what became of them. No table here holds an identifier in clear: requests keep keyed
-- digests of what they named, as privacy.suppressions does.
CREATE SCHEMA IF NOT EXISTS privacy;
CREATE TABLE IF NOT EXISTS privacy.requests (
    request_id VARCHAR PRIMARY KEY,
    kind VARCHAR NOT NULL,                  -- deletion or access
    received_at TIMESTAMPTZ NOT NULL,
    status VARCHAR NOT NULL,                -- received, running, partially_done, done, failed, not_found (no record
                                            -- and no profile held what it names; final, like done)
    identifier_types VARCHAR[] NOT NULL,
    identifier_digests VARCHAR[] NOT NULL,
    subject_digests VARCHAR[],              -- HMAC digests of all the subject's identifiers, as suppressed
    profiles BIGINT,
    records BIGINT,
    rows_deleted BIGINT,
    export_path VARCHAR,
    updated_at TIMESTAMPTZ NOT NULL,
    detail VARCHAR
);
-- Profiles a request left out that may be the same person, for an operator to review (subject.candidates).
ALTER TABLE privacy.requests ADD COLUMN IF NOT EXISTS candidates BIGINT;
CREATE TABLE IF NOT EXISTS privacy.request_events (
    request_id VARCHAR NOT NULL,
    status VARCHAR NOT NULL,
    changed_at TIMESTAMPTZ NOT NULL,
    detail VARCHAR
);
-- What a request did where: a table emptied of the person, a destination asked to forget them, an export.
CREATE TABLE IF NOT EXISTS privacy.request_actions (
    request_id VARCHAR NOT NULL,
    target VARCHAR NOT NULL,
    action VARCHAR NOT NULL,
    items BIGINT NOT NULL,
    status VARCHAR NOT NULL,                -- done or failed
    detail VARCHAR,
    done_at TIMESTAMPTZ NOT NULL
);

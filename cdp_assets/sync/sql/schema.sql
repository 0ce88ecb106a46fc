-- The sync layer's own tables: what each destination acknowledged, what it refused, and every run.
CREATE SCHEMA IF NOT EXISTS sync;
-- The last state each destination acknowledged, per sync and key: a checksum of the mapped fields and the
-- fields themselves (what a later removal or change must take back). It moves only on acknowledgement.
CREATE TABLE IF NOT EXISTS sync.state (
    sync VARCHAR NOT NULL,
    key VARCHAR NOT NULL,
    checksum VARCHAR NOT NULL,
    payload JSON NOT NULL,
    destination_id VARCHAR,          -- the destination's own id for the record, when it gives one
    synced_at TIMESTAMPTZ NOT NULL,
    run_id VARCHAR NOT NULL,
    PRIMARY KEY (sync, key)
);
-- The model of each sync's last settled run, row by row: its key and profile, and why it was not sent (invalid, left
-- out). A following plan (cdp_assets/sync/plan.py) reads the keys its profiles held, and the rest of the model's rows.
CREATE TABLE IF NOT EXISTS sync.model_rows (
    sync VARCHAR NOT NULL,
    key VARCHAR,
    profile_id VARCHAR,
    invalid_reason VARCHAR,
    left_out_reason VARCHAR
);
-- Every record a destination took: what it was sent (or asked to remove) and when; what an access export
-- lists per destination. A batch a killed run sent is listed under that run once its next run settled it.
CREATE TABLE IF NOT EXISTS sync.deliveries (
    sync VARCHAR NOT NULL,
    key VARCHAR NOT NULL,
    operation VARCHAR NOT NULL,      -- upsert, add or remove
    payload JSON,                    -- the fields sent, or those removed
    delivered_at TIMESTAMPTZ NOT NULL,
    run_id VARCHAR NOT NULL
);
-- Batches sent and not yet settled: a batch's plan rows, written and committed before it is sent, given the
-- destination's ticket (a Zendesk job id) as soon as the destination takes the submit, and deleted in the
-- transaction that records its answer. What a killed run leaves here, its next run settles before planning
-- (cdp_assets/sync/recovery.py): collected by ticket or read back from the destination, never blindly resent.
CREATE TABLE IF NOT EXISTS sync.intents (
    sync VARCHAR NOT NULL,
    run_id VARCHAR NOT NULL,
    batch INTEGER NOT NULL,          -- the batch's number in its run
    operation VARCHAR NOT NULL,      -- upsert, add or remove
    stores BOOLEAN NOT NULL,         -- sends the new fields and stores them (else the previous ones, dropped)
    seq BIGINT NOT NULL,             -- the plan's row: its number, key, change, new and previous fields
    key VARCHAR NOT NULL,
    change VARCHAR NOT NULL,
    payload VARCHAR,
    checksum VARCHAR,
    previous VARCHAR,
    ticket VARCHAR,                  -- what collects the answer later, when the destination answers by ticket
    intended_at TIMESTAMPTZ NOT NULL
);
-- Rows a destination refused, with its reason; a refused row is sent again on every later run until the
-- destination takes it, which resolves the rejection.
CREATE TABLE IF NOT EXISTS sync.rejections (
    sync VARCHAR NOT NULL,
    key VARCHAR NOT NULL,
    run_id VARCHAR NOT NULL,
    rejected_at TIMESTAMPTZ NOT NULL,
    operation VARCHAR NOT NULL,
    reason VARCHAR NOT NULL,
    resolved_at TIMESTAMPTZ,
    resolved_run_id VARCHAR
);
-- Rows caught before sending (no key, a key held by several rows, a required field missing), per run.
CREATE TABLE IF NOT EXISTS sync.invalid_rows (
    sync VARCHAR NOT NULL,
    run_id VARCHAR NOT NULL,
    key VARCHAR,
    reason VARCHAR NOT NULL,
    found_at TIMESTAMPTZ NOT NULL
);
-- Rows left out, per run, because their key is a value several people share (identity.shared_values: no one of them
-- owns the destination record it names), or one identity placed in another profile whose own row carries it (that
-- row names the record). Not invalid: the data is right, the key is not the row's alone.
CREATE TABLE IF NOT EXISTS sync.left_out_rows (
    sync VARCHAR NOT NULL,
    run_id VARCHAR NOT NULL,
    key VARCHAR,
    reason VARCHAR NOT NULL,
    found_at TIMESTAMPTZ NOT NULL
);
-- One row per sync run: what it planned, sent, and what came of it.
CREATE TABLE IF NOT EXISTS sync.runs (
    run_id VARCHAR NOT NULL,
    sync VARCHAR NOT NULL,
    destination VARCHAR NOT NULL,
    mode VARCHAR NOT NULL,
    started_at TIMESTAMPTZ NOT NULL,
    finished_at TIMESTAMPTZ,
    -- in_progress, succeeded, partially_failed, failed, aborted, blocked, planned, or interrupted (killed, and
    -- closed by the sync's next run)
    status VARCHAR NOT NULL,
    dry_run BOOLEAN NOT NULL,
    model_rows BIGINT,
    invalid BIGINT,
    left_out BIGINT,                 -- rows keyed by a shared or another profile's value (sync.left_out_rows)
    added BIGINT,
    changed BIGINT,
    removed BIGINT,
    unchanged BIGINT,
    acknowledged BIGINT,
    rejected BIGINT,
    requests BIGINT,
    retries BIGINT,
    batches BIGINT,
    splits BIGINT,
    waited_seconds DOUBLE,
    seconds DOUBLE,
    profiles BIGINT,
    largest_profile_records BIGINT,
    message VARCHAR
);
ALTER TABLE sync.runs ADD COLUMN IF NOT EXISTS left_out BIGINT;  -- a warehouse from before the column
-- planned from the profiles its view logged since its last settled run (cdp_assets/sync/plan.py), not every row
ALTER TABLE sync.runs ADD COLUMN IF NOT EXISTS followed BOOLEAN;
ALTER TABLE sync.runs ADD COLUMN IF NOT EXISTS rows_read BIGINT;  -- rows of the view the plan read

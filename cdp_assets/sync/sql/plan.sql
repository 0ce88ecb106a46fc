-- _sync_plan: what a run must change, from the model (_sync_rows, valid rows only) against what the destination
-- acknowledged last (sync.state): added, changed (another checksum) and removed keys, numbered for batching.
-- A key caught as invalid this run, or left out (_sync_left_out: shared, or another profile's row sends it), is neither sent nor
-- removed: its destination record stays as it was.
CREATE OR REPLACE TEMP TABLE _sync_plan AS
WITH model AS (
    SELECT key, payload, checksum FROM _sync_rows WHERE invalid_reason IS NULL
),
held AS (  -- a following plan's keys alone (plan.py): outside them, the model is as the destination holds it
    SELECT key, payload::VARCHAR AS payload, checksum FROM sync.state
    WHERE sync = $sync AND ($whole OR key IN (FROM _sync_keys))
),
invalid_keys AS (
    SELECT DISTINCT key FROM _sync_rows WHERE invalid_reason IS NOT NULL AND key IS NOT NULL
),
changes AS (
    SELECT m.key, CASE WHEN h.key IS NULL THEN 'add' ELSE 'change' END AS change, m.payload, m.checksum,
           h.payload AS previous
    FROM model m
    LEFT JOIN held h USING (key)
    WHERE h.checksum IS DISTINCT FROM m.checksum
    UNION ALL
    SELECT h.key, 'remove', NULL, NULL, h.payload
    FROM held h
    ANTI JOIN model m USING (key)
    ANTI JOIN invalid_keys i USING (key)
    ANTI JOIN _sync_left_out l USING (key)
)
SELECT row_number() OVER (ORDER BY key) AS seq, * FROM changes

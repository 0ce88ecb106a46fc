-- The statement records a following build of the ledger makes again (TEMP _ledger_records(stream, record_id), from
-- the changes it follows, TEMP _followed): every one whose statement, attribution or addresses may differ from the
-- last build's. The seeds are the profiles the graph (records placed, moved, or judged again with every holder of
-- their values) or person profiles (the names a shared login's holders are judged by) logged.
CREATE OR REPLACE TEMP TABLE _ledger_seeds AS
SELECT DISTINCT key AS profile_id FROM _followed WHERE list_contains($profile_producers, producer);

-- The values whose holders may have changed: those the seeds' records carry now, and those the records identifiers
-- read again carried before (a value a record no longer carries may now lead to one profile, or to several).
CREATE OR REPLACE TEMP TABLE _ledger_values_touched AS
SELECT i.id_type, i.value
FROM identity.record_profiles rp JOIN identity.identifiers i USING (stream, record_id)
WHERE rp.profile_id IN (FROM _ledger_seeds) AND list_contains($person_types, i.id_type)
UNION
SELECT v.id_type, v.value
FROM (SELECT unnest(from_json(before, '[{"id_type": "VARCHAR", "value": "VARCHAR"}]'), recursive := true)
      FROM _followed WHERE producer = $identifiers) v
WHERE list_contains($person_types, v.id_type);

-- A record identifiers read again (its statement or values changed); one on a seed (placed there, or moved from
-- another: both are seeds); one carrying a touched value (attribution through other records, a shared verdict, a
-- login's addresses); and a product consent event whose time has come since the last build. A statement the last
-- build attributed to a seed is among them: its record, or a record carrying its values, was on that seed.
CREATE OR REPLACE TEMP TABLE _ledger_records AS
SELECT * FROM (
    SELECT split_part(key, ':', 1) AS stream, substr(key, strpos(key, ':') + 1) AS record_id
    FROM _followed WHERE producer = $identifiers
    UNION
    SELECT stream, record_id FROM identity.record_profiles WHERE profile_id IN (FROM _ledger_seeds)
    UNION
    SELECT stream, record_id FROM identity.identifiers SEMI JOIN _ledger_values_touched USING (id_type, value)
    UNION
    SELECT 'mixpanel.events', insert_id FROM staging.mixpanel__events
    WHERE event_name = $product_event AND occurred_at > $since AND occurred_at <= now()
) WHERE list_contains($streams, stream)

-- Each record's current version, its typed columns, the fields of the wrong JSON kind and the times it cannot
-- read as plausible moments (see cdp_assets/mappings.py; $plausible_* come from the contract).
-- The current version is the latest by source change time, then by landing order; its
-- columns come from the latest version the source still had, so a record deleted at the
-- source keeps its last known attributes beside `is_deleted`. A record sent without an
-- id is kept under its payload's hash, for its contract to quarantine. A version marked as an echo (a sync's write
-- pulled back, see cdp_assets/echoes.py) is read past: it is not a change of the record.
CREATE OR REPLACE TEMP TABLE {candidates} AS
WITH latest AS (
    SELECT any_value(record_id) AS record_id,
           coalesce(arg_max(payload, (version_at, landing_id)) FILTER (WHERE NOT deleted),
                    arg_max(payload, (version_at, landing_id))) AS payload,
           arg_max(deleted, (version_at, landing_id)) AS is_deleted,
           max(version_at) AS source_updated_at,
           max(extracted_at) AS extracted_at,
           arg_max(landing_id, (version_at, landing_id)) AS landing_id  -- the current version's row in raw
    FROM {source_table}
    WHERE landing_id NOT IN (SELECT landing_id FROM raw._echoes WHERE raw_table = $raw_table)
    GROUP BY coalesce(record_id, '#' || payload_hash)
),
extracted AS (
    SELECT *, json_extract(payload, {paths}) AS j FROM latest
),
kinded AS (
    SELECT *, {kinds} AS k FROM extracted
),
checked AS (
    SELECT *, {time_checks} AS t FROM kinded
),
typed AS (
    SELECT record_id, payload, is_deleted, source_updated_at, extracted_at, landing_id,
{columns},
           {wrong_types} AS wrong_type_fields,
           {time_faults} AS time_faults
    FROM checked
)
SELECT row_number() OVER (ORDER BY landing_id) AS _row, *, len(wrong_type_fields) AS wrong_type_count,
       len(time_faults) AS time_fault_count
FROM typed

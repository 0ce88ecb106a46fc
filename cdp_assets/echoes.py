"""Echoes: a sync's write to a source's own records, pulled back as a new version of the same record.

HubSpot and Zendesk are sources and destinations: what `hubspot_contacts` and `zendesk_users` write onto existing
records comes back in the next pull with a new change time. Such a version is not news about the person, so it is
marked at landing, once, in `raw._echoes` (sync.state moves on later, and a re-read version is not landed again),
and staging reads past it: the record's current version and `source_updated_at` stay those of its last real change.

A landed version is an echo when, against the record's version before it:
- it differs only in the stream's change times (`StreamSpec.change_times`) and in fields a sync writes to the stream
  (the sync's destination names the stream it writes, `DestinationResource.echo_stream`, and where a field shows);
- every sync-written field that changed holds what that sync last had acknowledged for the record (`sync.state`,
  by `destination_id` = record id), compared as text or, both being numbers, as numbers (HubSpot keeps text);
- a sync acknowledged a write to the record after that earlier version was read: a pull that shows no field of
  the write (HubSpot's reads only the properties the mappings use) still cannot take another's change for ours.
Anything else that changed with it (a salesperson's edit of the name at the same time) makes it a real change.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import duckdb

from cdp_assets.sync import specs
from cdp_assets.warehouse_access import has_tables
from resources import DESTINATIONS
from resources.source import StreamSpec

SETUP_SQL = """
CREATE TABLE IF NOT EXISTS raw._echoes (
    raw_table VARCHAR NOT NULL,
    landing_id BIGINT NOT NULL,        -- the echo's row in raw_table
    run_id VARCHAR NOT NULL
);
"""

# Over `landed` (the rows one page just landed), each live version against the one before it by version time.
MARK_SQL = """
INSERT INTO raw._echoes
WITH landed AS (
    SELECT n.landing_id, n.record_id, any_value(n.payload) AS payload,
           arg_max(p.payload, (p.version_at, p.landing_id)) AS before,
           arg_max(p.deleted, (p.version_at, p.landing_id)) AS before_deleted,
           arg_max(p.extracted_at, (p.version_at, p.landing_id)) AS before_read_at
    FROM {landed} n
    JOIN {table} p ON p.record_id = n.record_id
        AND (p.version_at < n.version_at OR (p.version_at = n.version_at AND p.landing_id < n.landing_id))
    WHERE n.record_id IS NOT NULL AND NOT n.deleted
    GROUP BY n.landing_id, n.record_id
),
written AS (
    SELECT sync, destination_id AS record_id, payload AS sent, synced_at
    FROM sync.state WHERE sync IN (SELECT unnest($syncs::VARCHAR[]))
)
SELECT $raw_table, l.landing_id, $run_id
FROM landed l
WHERE NOT l.before_deleted AND json_type(l.payload) = 'OBJECT' AND json_type(l.before) = 'OBJECT'
  AND json_merge_patch(l.payload, $ignored::JSON) = json_merge_patch(l.before, $ignored::JSON)
  AND EXISTS (SELECT 1 FROM written w WHERE w.record_id = l.record_id AND w.synced_at > l.before_read_at)
  {fields}
"""
# A sync-written field: unchanged, or what its sync holds as acknowledged for the record.
FIELD_SQL = """
  AND (json_extract(l.payload, $path_{n}) IS NOT DISTINCT FROM json_extract(l.before, $path_{n})
       OR EXISTS (SELECT 1 FROM written w WHERE w.sync = $sync_{n} AND w.record_id = l.record_id
                  AND (json_extract_string(w.sent, $sent_{n})
                           IS NOT DISTINCT FROM json_extract_string(l.payload, $path_{n})
                       OR TRY_CAST(json_extract_string(w.sent, $sent_{n}) AS DOUBLE)
                          = TRY_CAST(json_extract_string(l.payload, $path_{n}) AS DOUBLE))))
"""


@dataclass(frozen=True)
class SyncField:
    sync: str
    field: str  # the destination field, as sync.state's payload names it
    path: str  # where it shows in the stream's payload, dotted


@dataclass(frozen=True)
class EchoRule:
    """What a sync's write looks like when a stream brings it back."""

    change_times: tuple[str, ...]
    fields: tuple[SyncField, ...]

    def mark(self, conn: duckdb.DuckDBPyConnection, raw_table: str, run_id: str, landed: str) -> int:
        """Mark the echoes among the rows of the table `landed` (just landed into `raw_table`, in the caller's
        transaction)."""
        params: dict[str, Any] = {
            "raw_table": raw_table,
            "run_id": run_id,
            "syncs": sorted({f.sync for f in self.fields}),
            "ignored": json.dumps(_nulls([*self.change_times, *(f.path for f in self.fields)])),
        }
        for n, f in enumerate(self.fields):
            params |= {f"path_{n}": _json_path(f.path), f"sent_{n}": _json_path(f.field, nested=False),
                       f"sync_{n}": f.sync}  # fmt: skip
        fields = "".join(FIELD_SQL.format(n=n) for n in range(len(self.fields)))
        sql = MARK_SQL.format(table=raw_table, landed=landed, fields=fields)
        return conn.execute(sql, params).fetchone()[0]


def sync_state_exists(conn: duckdb.DuckDBPyConnection) -> bool:
    """Whether the sync layer has its state table yet: before that, nothing pulled can be an echo."""
    return has_tables(conn, "sync", "state")


def rule(source: str, stream: StreamSpec) -> EchoRule | None:
    """The echo rule of a stream some sync writes to, from syncs.yaml and the destinations; None for the others."""
    fields = tuple(
        SyncField(spec.name, name, DESTINATIONS[spec.destination].echo_path.format(field=name))
        for spec in specs.load().syncs.values()
        if DESTINATIONS[spec.destination].echo_stream == f"{source}.{stream.name}"
        for name in spec.fields
    )
    return EchoRule(stream.change_times, fields) if fields else None


def _nulls(paths: list[str]) -> dict[str, Any]:
    """A JSON merge patch (RFC 7396) removing each dotted path: what is left is what a sync does not touch."""
    patch: dict[str, Any] = {}
    for path in paths:
        *parents, last = path.split(".")
        node = patch
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = None
    return patch


def _json_path(path: str, nested: bool = True) -> str:
    """A JSON path for a dotted payload path, or for one key that has dots in it (`user_fields.cdp_plan` in state)."""
    keys = path.split(".") if nested else [path]
    return "$" + "".join(f".{json.dumps(key)}" for key in keys)

"""A sync's plan: the model its view yields now, checked and diffed against what the destination acknowledged.

The model is built in DuckDB from the sync's spec: the key, a JSON object of the mapped
fields (destination field names are parameters; values are view columns or trusted
expressions over them), the rows the spec's condition and consent purpose admit, and a
checksum of the mapped fields only, so a column the sync does not send never causes a send.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

from cdp_assets.sync.specs import SyncSpec

SQL = Path(__file__).parent / "sql"
PARAMETER = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)")

SOURCE_SQL = """
CREATE OR REPLACE TEMP TABLE _sync_source AS
SELECT CAST({key} AS VARCHAR) AS key, json_object({fields})::VARCHAR AS payload, {missing} AS missing,
       {tracked} AS tracked, {shared} AS shared, {held_by} AS held_by, {profile} AS profile_id
FROM {view} AS _view_row
WHERE ({where}){consent}
"""
# For a sync with a key_type: why identity judged the key shared (a team's mailbox, a household's phone), and the
# profile identity placed the key in when another than the row's (a record whose link to it was refused).
SHARED_SQL = (
    "(SELECT min(reason) FROM identity.shared_values WHERE id_type = $_key_type AND value = CAST({key} AS VARCHAR))"
)
HELD_BY_SQL = (
    "(SELECT min(o.profile_id) FROM identity.identifier_profiles o WHERE o.id_type = $_key_type"
    " AND o.value = CAST({key} AS VARCHAR) AND NOT o.shared AND o.profile_id <> _view_row.profile_id)"
)
CONSENT_SQL = " AND profile_id IN (SELECT profile_id FROM privacy.consent WHERE purpose = $_purpose AND allowed)"
# Rows left out, with the reason: a row keyed by a shared value (the key names several people, so no one of them
# owns the destination record it names), and a row keyed by a value identity placed in another profile whose own
# row carries it (that row names the record; a profile holding the value with no row here leaves this one sent).
# Not invalid rows (nothing is wrong with the data), but counted and kept with their reason.
LEFT_OUT_SQL = """
CREATE OR REPLACE TEMP TABLE _sync_left_out AS
SELECT key, profile_id,
       coalesce('key shared by several people (' || shared || ')', 'key held by another profile (' || held_by || ')')
           AS reason
FROM _sync_source AS s
WHERE shared IS NOT NULL
   OR held_by IS NOT NULL AND EXISTS (FROM _sync_source AS h WHERE h.key = s.key AND h.profile_id = s.held_by)
"""
ROWS_SQL = """
CREATE OR REPLACE TEMP TABLE _sync_rows AS
SELECT key, payload, md5(payload || tracked) AS checksum,
       CASE WHEN key IS NULL OR trim(key) = '' THEN 'no key'
            WHEN count(*) OVER (PARTITION BY key) > 1
                THEN 'duplicate key, held by ' || count(*) OVER (PARTITION BY key) || ' rows'
            WHEN len(missing) > 0 THEN 'missing required ' || array_to_string(missing, ', ')
       END AS invalid_reason
FROM _sync_source AS s
WHERE NOT EXISTS (FROM _sync_left_out AS l WHERE l.key = s.key AND l.profile_id IS NOT DISTINCT FROM s.profile_id)
"""
COUNTS_SQL = """
SELECT
    (SELECT count(*) FROM _sync_rows),
    (SELECT count(*) FROM _sync_rows WHERE invalid_reason IS NOT NULL),
    (SELECT count(*) FROM _sync_plan WHERE change = 'add'),
    (SELECT count(*) FROM _sync_plan WHERE change = 'change'),
    (SELECT count(*) FROM _sync_plan WHERE change = 'remove'),
    (SELECT count(*) FROM sync.state WHERE sync = $sync),
    (SELECT count(*) FROM _sync_left_out)
"""


@dataclass(frozen=True)
class Plan:
    rows: int  # rows the view yields for this sync, beside those left out
    invalid: int  # caught before sending
    added: int
    changed: int
    removed: int  # keys the destination holds from this sync that left the model
    held: int  # keys the destination holds from this sync
    left_out: int = 0  # rows keyed by a value shared by several people or held by another profile: not sent

    @property
    def unchanged(self) -> int:
        return self.rows - self.invalid - self.added - self.changed

    def removal_share(self, removes: bool) -> float:
        """The share of what the destination holds from this sync that the run would take out of it."""
        return self.removed / self.held if removes and self.held else 0.0


def quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def source_sql(spec: SyncSpec, columns: set[str]) -> tuple[str, dict[str, Any]]:
    """The query filling _sync_source, and its parameters."""
    value = {name: quoted(expr) if expr in columns else f"({expr})" for name, expr in spec.fields.items()}
    params: dict[str, Any] = {f"_field_{n}": name for n, name in enumerate(spec.fields)}
    fields = ", ".join(f"$_field_{n}, {value[name]}" for n, name in enumerate(spec.fields))
    missing = "[]::VARCHAR[]"
    if spec.required:
        params.update({f"_required_{n}": name for n, name in enumerate(spec.required)})
        checks = ", ".join(f"CASE WHEN {value[name]} IS NULL THEN $_required_{n} END" for n, name in
                           enumerate(spec.required))  # fmt: skip
        missing = f"list_filter([{checks}], lambda m: m IS NOT NULL)"
    # Which destination record a row lands on (the contact holding its address, say) is in its checksum but not
    # sent: when that record is archived and another takes its place, the row is sent again, onto the new one.
    tracked = f"concat_ws('|', {', '.join(f'{quoted(c)}::VARCHAR' for c in spec.tracks)})" if spec.tracks else "''"
    view_key = f"_view_row.{quoted(spec.key)}"  # qualified: the lookups' own tables have columns of its name
    sql = SOURCE_SQL.format(
        tracked=tracked,
        shared=SHARED_SQL.format(key=view_key) if spec.key_type else "NULL::VARCHAR",
        held_by=HELD_BY_SQL.format(key=view_key) if spec.key_type else "NULL::VARCHAR",
        profile="_view_row.profile_id" if spec.key_type else "NULL::VARCHAR",
        key=quoted(spec.key),
        fields=fields,
        missing=missing,
        view=spec.view_table,
        where=spec.where,
        consent=CONSENT_SQL if spec.purpose else "",
    )
    if spec.purpose:
        params["_purpose"] = spec.purpose
    if spec.key_type:
        params["_key_type"] = spec.key_type
    params.update(spec.params)
    used = set(PARAMETER.findall(sql))
    return sql, {name: v for name, v in params.items() if name in used}


def view_columns(conn: duckdb.DuckDBPyConnection, spec: SyncSpec) -> set[str]:
    rows = conn.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = 'views' AND table_name = $name",
        {"name": spec.view},
    ).fetchall()
    if not rows:
        raise ValueError(f"sync {spec.name}: {spec.view_table} does not exist; materialise views/{spec.view} first")
    return {name for (name,) in rows}


def setup(conn: duckdb.DuckDBPyConnection) -> None:
    conn.execute((SQL / "schema.sql").read_text())


def prepare(conn: duckdb.DuckDBPyConnection, spec: SyncSpec) -> Plan:
    """Build the model and the plan (temp tables _sync_rows and _sync_plan) and count them."""
    sql, params = source_sql(spec, view_columns(conn, spec))
    conn.execute(sql, params)
    conn.execute(LEFT_OUT_SQL)
    conn.execute(ROWS_SQL)
    conn.execute((SQL / "plan.sql").read_text(), {"sync": spec.name})
    rows, invalid, added, changed, removed, held, left_out = conn.execute(COUNTS_SQL, {"sync": spec.name}).fetchone()
    return Plan(rows, invalid, added, changed, removed, held, left_out)


def sample(conn: duckdb.DuckDBPyConnection, limit: int = 10) -> dict[str, list[str]]:
    """A few keys per kind of change, for a dry run's report."""
    rows = conn.execute(
        "SELECT change, list(key ORDER BY seq)[:$limit] FROM _sync_plan GROUP BY change ORDER BY change",
        {"limit": limit},
    ).fetchall()
    return dict(rows)

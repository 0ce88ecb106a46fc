"""A sync's plan: the model its view yields now, checked and diffed against what the destination acknowledged.

The model is built in DuckDB from the sync's spec: the key, a JSON object of the mapped
fields (destination field names are parameters; values are view columns or trusted
expressions over them), the rows the spec's condition and consent purpose admit, and a
checksum of the mapped fields only, so a column the sync does not send never causes a send.

A sync of a view that logs the profiles it made (views/following.py) follows that log (cdp_assets/changes.py): its
plan reads only the rows of the profiles the view, the identity graph (whose shared and placed values decide which
rows are left out) or consent logged since its last settled run, and every other row holding a key those rows hold
or held (a key two rows hold is invalid in both), against the state of those keys alone. What the rest of the model
was, each row's key, profile and why it was not sent, `sync.model_rows` keeps from the runs before, so the plan's
counts and its invalid and left-out rows are the whole model's; the keys a destination still refuses are read again
every run. A plan is whole on a sync's first run, when its spec or this code changed, when the view was rewritten
whole, when the sync's last run ended before settling all it planned (it failed, was held, aborted or interrupted:
the state of keys outside the log may differ from the model), with `full_refresh` (the nightly run) and for
`cdp sync plan`, which reads the warehouse read-only. A sync's expressions read only its view's row (specs.py).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

from cdp_assets import changes, lineage
from cdp_assets.identity import resolution
from cdp_assets.privacy import consent
from cdp_assets.sync import breaker
from cdp_assets.sync.specs import SyncSpec
from cdp_assets.views import following, policy
from cdp_assets.warehouse_access import named

SQL = Path(__file__).parent / "sql"

SOURCE_SQL = """
CREATE OR REPLACE TEMP TABLE _sync_source AS
SELECT CAST({key} AS VARCHAR) AS key, json_object({fields})::VARCHAR AS payload, {missing} AS missing,
       {tracked} AS tracked, {shared} AS shared, {held_by} AS held_by, {profile} AS profile_id
FROM {view} AS _view_row
WHERE ({where}){consent}{scope}
"""
PROFILES = "_sync_profiles"  # TEMP (profile_id): the profiles a following plan reads the rows of
KEYS = "_sync_keys"  # TEMP (key): the keys a following plan reads the rows and state of
MODEL = "_sync_model"  # TEMP: every row the plan read, with why it is invalid or left out (ledger.record_invalid)
PLAN = "_sync_plan"  # TEMP: each change to send, in order, as delivery sends it and the ledger records it
# A following plan's keys: those its profiles' rows hold now, those they held in the model of the last run, and those
# a destination still refuses (their state never moved: sent again every run until taken).
KEYS_SQL = """
CREATE OR REPLACE TEMP TABLE {keys} AS
SELECT CAST({key} AS VARCHAR) AS key FROM {view} WHERE profile_id IN (FROM {profiles})
UNION
SELECT key FROM sync.model_rows WHERE sync = $sync AND profile_id IN (FROM {profiles})
UNION
SELECT key FROM sync.rejections WHERE sync = $sync AND resolved_at IS NULL"""
SCOPE_SQL = " AND (_view_row.profile_id IN (FROM {profiles}) OR CAST(_view_row.{key} AS VARCHAR) IN (FROM {keys}))"
IN_SCOPE = f"(profile_id IN (FROM {PROFILES}) OR key IN (FROM {KEYS}))"
# The whole model after this plan: the last run's rows outside the plan's scope, and the rows it read.
MODEL_SQL = """
CREATE OR REPLACE TEMP TABLE _sync_model AS
SELECT key, profile_id, invalid_reason, NULL AS left_out_reason FROM _sync_rows
UNION ALL
SELECT key, profile_id, NULL, reason FROM _sync_left_out{kept}"""
KEPT_MODEL_SQL = f"""
UNION ALL
SELECT key, profile_id, invalid_reason, left_out_reason FROM sync.model_rows
WHERE sync = $sync AND NOT coalesce({IN_SCOPE}, false)"""
# The model kept for the next plan, in the transaction that keeps its position.
KEEP_MODEL_SQL = (
    f"DELETE FROM sync.model_rows WHERE sync = $sync AND ($whole OR {IN_SCOPE})",
    f"INSERT INTO sync.model_rows SELECT $sync, key, profile_id, invalid_reason, left_out_reason FROM _sync_model"
    f" WHERE $whole OR {IN_SCOPE}",
)
# The sync's last run that could send, before this one: whether it settled all it planned, each row taken or refused
# (a refused row's key stays in sync.rejections until taken).
SETTLED_SQL = """
SELECT status IN ('succeeded', 'partially_failed') FROM sync.runs
WHERE sync = $sync AND NOT dry_run AND run_id <> $run_id ORDER BY started_at DESC LIMIT 1"""
# The positions and models of syncs that follow no more (removed, renamed, or of a view made whole): gone, so that
# the change log is trimmed past them.
RETIRED_POSITIONS_SQL = (
    f"DELETE FROM {changes.POSITIONS} WHERE starts_with(follower, 'sync.') AND NOT list_contains($followers, follower)"
)
RETIRED_MODELS_SQL = "DELETE FROM sync.model_rows WHERE NOT list_contains($syncs, sync)"
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
SELECT key, profile_id, payload, md5(payload || tracked) AS checksum,
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
    (SELECT count(*) FROM _sync_model WHERE left_out_reason IS NULL),
    (SELECT count(*) FROM _sync_model WHERE invalid_reason IS NOT NULL),
    (SELECT count(*) FROM _sync_plan WHERE change = 'add'),
    (SELECT count(*) FROM _sync_plan WHERE change = 'change'),
    (SELECT count(*) FROM _sync_plan WHERE change = 'remove'),
    (SELECT count(*) FROM sync.state WHERE sync = $sync),
    (SELECT count(*) FROM _sync_model WHERE left_out_reason IS NOT NULL),
    (SELECT count(*) FROM _sync_source)
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
    read: int = 0  # rows of the view the plan read: all, or a following plan's

    @property
    def unchanged(self) -> int:
        return self.rows - self.invalid - self.added - self.changed

    def removal_share(self, removes: bool) -> float:
        """The share of what the destination holds from this sync that the run would take out of it."""
        return self.removed / self.held if removes and self.held else 0.0


def quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def source_sql(spec: SyncSpec, columns: set[str], follows: bool = False) -> tuple[str, dict[str, Any]]:
    """The query filling _sync_source (with `follows`, the rows of a following plan's profiles and keys alone), and
    its parameters."""
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
        profile="_view_row.profile_id" if "profile_id" in columns else "NULL::VARCHAR",
        key=quoted(spec.key),
        fields=fields,
        missing=missing,
        view=spec.view_table,
        where=spec.where,
        consent=CONSENT_SQL if spec.purpose else "",
        scope=SCOPE_SQL.format(profiles=PROFILES, keys=KEYS, key=quoted(spec.key)) if follows else "",
    )
    if spec.purpose:
        params["_purpose"] = spec.purpose
    if spec.key_type:
        params["_key_type"] = spec.key_type
    params.update(spec.params)
    return sql, named(sql, params)


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


def retire(conn: duckdb.DuckDBPyConnection, specs: Iterable[SyncSpec]) -> None:
    """The positions and models of syncs (of all `specs`) that no longer follow a view's log go."""
    conn.execute(changes.SETUP_SQL)
    syncs = [spec.name for spec in specs if spec.view in following.FOLLOWING]
    conn.execute(RETIRED_POSITIONS_SQL, {"followers": [follower(name) for name in syncs]})
    conn.execute(RETIRED_MODELS_SQL, {"syncs": syncs})


def follower(name: str) -> str:
    """The name the sync `name` keeps its position in the change log under."""
    return f"sync.{name}"


def fingerprint(spec: SyncSpec) -> str:
    """What makes a sync's model: this module, its SQL and the spec."""
    return changes.code_fingerprint([Path(__file__), SQL], repr(spec), f"duckdb {duckdb.__version__}")


def producers(spec: SyncSpec) -> list[str]:
    """The change log's producers a following plan reads. The graph's region holds every profile holding a value
    whose shared or placed verdict it changed, and a row's key is a value of the row's own profile (its golden or
    help-desk address), so the rows left out for their key are among those the graph logs; consent's decisions filter
    the rows a purpose needs."""
    return [following.logged_as(spec.view), resolution.PRODUCER, consent.FOLLOWER]


def reads(spec: SyncSpec) -> set[str]:
    """The tables and producers a sync reads, derived from what it runs: its plan's query (over the columns its view's
    policy lists), the circuit breaker's measure, and the log a following plan reads."""
    follows = spec.view in following.FOLLOWING
    sql, _ = source_sql(spec, set(policy.load().views[spec.view].columns), follows=follows)
    return lineage.tables_read(sql, breaker.IDENTITY_SQL) | set(producers(spec) if follows else ())


def follow(conn: duckdb.DuckDBPyConnection, spec: SyncSpec, run_id: str,
           full_refresh: bool) -> changes.Position | None:
    """Where the sync's plan stands for the run `run_id`: whole, or following the log with TEMP FOLLOWED; None for a
    view made whole every run, which logs nothing to follow."""
    if spec.view not in following.FOLLOWING:
        return None
    position = changes.follow(conn, follower(spec.name), producers(spec), fingerprint(spec), ("sync.model_rows",))
    settled = conn.execute(SETTLED_SQL, {"sync": spec.name, "run_id": run_id}).fetchall()
    if full_refresh:
        return position.rebuilt("full refresh")
    if position.whole is None and settled != [(True,)]:
        return position.rebuilt("its last run did not settle all it planned")
    return position


def prepare(conn: duckdb.DuckDBPyConnection, spec: SyncSpec, position: changes.Position | None = None) -> Plan:
    """Build the model and the plan (temp tables _sync_rows, _sync_model and _sync_plan) and count them: whole, or
    for the profiles a following `position` reads (TEMP FOLLOWED) and the keys their rows hold or held."""
    whole = position is None or position.whole is not None
    columns = view_columns(conn, spec)
    conn.execute(f"CREATE OR REPLACE TEMP TABLE {PROFILES} AS SELECT DISTINCT key AS profile_id"
                 f" FROM {changes.FOLLOWED if not whole else '(SELECT NULL::VARCHAR AS key LIMIT 0)'}")
    if whole:
        conn.execute(f"CREATE OR REPLACE TEMP TABLE {KEYS} (key VARCHAR)")
    else:
        conn.execute(KEYS_SQL.format(keys=KEYS, key=quoted(spec.key), view=spec.view_table, profiles=PROFILES),
                     {"sync": spec.name})
    sql, params = source_sql(spec, columns, follows=not whole)
    conn.execute(sql, params)
    conn.execute(LEFT_OUT_SQL)
    conn.execute(ROWS_SQL)
    if whole:
        conn.execute(MODEL_SQL.format(kept=""))
    else:
        conn.execute(MODEL_SQL.format(kept=KEPT_MODEL_SQL), {"sync": spec.name})
    conn.execute((SQL / "plan.sql").read_text(), {"sync": spec.name, "whole": whole})
    return Plan(*conn.execute(COUNTS_SQL, {"sync": spec.name}).fetchone())


def keep(conn: duckdb.DuckDBPyConnection, spec: SyncSpec, position: changes.Position) -> None:
    """After a run that settled all it planned: the model its plan made and its position in the log, in one
    transaction, for the next run to follow from."""
    with changes.keeping(conn, position):
        for sql in KEEP_MODEL_SQL:
            conn.execute(sql, {"sync": spec.name, "whole": position.whole is not None})


def sample(conn: duckdb.DuckDBPyConnection, limit: int = 10) -> dict[str, list[str]]:
    """A few keys per kind of change, for a dry run's report."""
    rows = conn.execute(
        "SELECT change, list(key ORDER BY seq)[:$limit] FROM _sync_plan GROUP BY change ORDER BY change",
        {"limit": limit},
    ).fetchall()
    return dict(rows)

"""Lineage that cannot lie: the tables each asset's SQL reads, as it ran, are exactly its declared dependencies.

A full run, an hourly run after the world changed and a nightly run over what they left (syncs included) go through
Dagster against the sandbox with DuckDB's query log on (`RecordingWarehouse`): every statement each asset's step sent
is parsed with sqlglot, and each warehouse table it reads is traced to the asset owning it (the asset of that name,
or the one writing it: `identity.record_profiles` is the graph's). The change log is traced by what each follower
asks of it (`changes.follow`: the producers it reads) and who logs under each producer (`changes.log`). That set of
assets must equal the asset's declared dependencies (what the UI draws and automation follows): an undeclared read
is a lineage that lies, a declared one never read a dependency that holds runs back for nothing. The views' and
syncs' dependencies are derived from their SQL (cdp_assets/lineage.py); this test parses what ran, on its own.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import duckdb
import pytest
import sqlglot
from dagster import DagsterInvariantViolationError, OpExecutionContext
from sqlglot import exp

import resources
from cdp_assets import changes, lineage
from resources import DESTINATIONS, WarehouseResource
from sandbox.runner import SandboxServer
from tests.conftest import Pipeline

SCHEMAS = {"raw", "staging", "quarantine", "identity", "views", "sync", "privacy"}
WRITES = (exp.Create, exp.Insert, exp.Update, exp.Delete, exp.Merge, exp.Drop, exp.Alter, exp.TruncateTable)
# Reads no declaration can hold. The pulls of the streams a destination writes back to read the syncs' state to
# recognise what a sync wrote coming back (cdp_assets/echoes.py): the syncs run after them, so this reads the last
# run's, a cycle a graph can't draw.
UNDECLARABLE = {(f"raw/{kind.echo_stream.replace('.', '_')}", "sync.state")
                for kind in DESTINATIONS.values() if kind.echo_stream}  # fmt: skip
# Tables written outside the asset graph, by jobs of single ops: every pull leaves out the people the
# privacy_requests job suppressed, and the graph keeps the never-link rules `cdp profile never-link` records.
OUTSIDE = {"privacy.suppressions", "identity.never_link"}
# The change log's own tables, whose reads are traced by what each follower follows instead.
CHANGE_LOG = {changes.LOG, changes.POSITIONS}
# Sequences numbering landings and changes, which sqlglot reads as tables: what they hand out is no asset's data.
SEQUENCES = {"raw.landing_seq", "staging._change_numbers"}
# A layer's bookkeeping, one row or more per stream, entity or sync, each asset of the layer keeping its own: whose
# rows a statement reads is in its parameters, which the query log leaves out. Read within the layer that writes it,
# it is not traced; read from another (the consent ledger reading raw's echoes for the streams it reads, the
# scorecard the staging builds' quality history), the reader must declare assets of that layer, and those count.
BOOKKEEPING = {
    "raw._echoes", "raw._stream_state", "raw._full_pull_seen", "staging._builds",
    "quarantine._known_fields", "quarantine.quality_history", "sync.state", "sync.runs", "sync.deliveries",
    "sync.intents", "sync.invalid_rows", "sync.left_out_rows", "sync.model_rows", "sync.rejections",
}
CHECK = "a step of checks"


class RecordingWarehouse(WarehouseResource):
    """The warehouse, with DuckDB's own query log on for each connection a step opens, kept by the step's asset."""

    statements: ClassVar[list[tuple[str, str]]] = []

    @contextmanager
    def get_connection(self) -> Iterator[duckdb.DuckDBPyConnection]:
        with super().get_connection() as conn:
            conn.execute("CALL enable_logging('QueryLog')")
            try:
                yield conn
            finally:
                self.statements.extend((_step(), sql) for (sql,) in conn.execute(
                    "SELECT message FROM duckdb_logs WHERE type = 'QueryLog'").fetchall())
                conn.execute("CALL disable_logging()")
                conn.execute("CALL truncate_duckdb_logs()")


def _step() -> str:
    """The asset whose step opened the connection; CHECK for a step of checks alone (what they read is their asset's
    own); "?" for anything else (a step of several assets, or none)."""
    try:
        context = OpExecutionContext.get()
    except DagsterInvariantViolationError:
        return "?"
    keys = context.selected_asset_keys
    if len(keys) == 1:
        return next(iter(keys)).to_user_string()
    return CHECK if not keys else "?"  # these runs' only steps without an asset are asset checks


def tables(sql: str) -> tuple[set[str], set[str]]:
    """(read, written) warehouse tables of one logged statement (`schema.name`)."""
    read: set[str] = set()
    written: set[str] = set()
    # Parameters (`$name`, `?`) as NULL: sqlglot stumbles on some where a value may stand (a json_object key, a cast).
    for tree in sqlglot.parse(re.sub(r"\$[A-Za-z_]\w*|\?", "NULL", sql), read="duckdb"):
        if tree is None:
            continue
        for node in tree.find_all(*WRITES):
            if isinstance(node, exp.Create) and node.args.get("exists"):
                continue  # CREATE ... IF NOT EXISTS: the setup every reader of a table runs, not a write
            target = node.this.this if isinstance(node.this, exp.Schema) else node.this
            if isinstance(target, exp.Table) and target.name:
                written.add(f"{target.db}.{target.name}")
        read |= {f"{table.db}.{table.name}" for table in tree.find_all(exp.Table) if table.name} - written
    return ({name for name in read if name.split(".")[0] in SCHEMAS},
            {name for name in written if name.split(".")[0] in SCHEMAS})


@dataclass
class Recorded:
    tables: dict[str, tuple[set[str], set[str]]]  # asset -> (tables read, tables written)
    followed: dict[str, set[str]]  # asset -> the change log's producers it follows
    logged_by: dict[str, set[str]]  # producer -> the assets logging under it


@pytest.fixture
def recorded(sandbox: SandboxServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Recorded:
    """What each asset read and wrote, and followed in the change log, over a full run, an hourly run after a
    change and a nightly run, syncs included."""
    followed: dict[str, set[str]] = defaultdict(set)
    logged_by: dict[str, set[str]] = defaultdict(set)
    follow, log = changes.follow, changes.log

    def following(conn: duckdb.DuckDBPyConnection, follower: str, producers: list[str], *args: Any) -> Any:
        followed[_step()].update(producers)
        return follow(conn, follower, producers, *args)

    def logging(conn: duckdb.DuckDBPyConnection, producer: str, keys: str | None) -> None:
        logged_by[producer].add(_step())
        log(conn, producer, keys)

    monkeypatch.setattr(resources, "WarehouseResource", RecordingWarehouse)
    monkeypatch.setattr(changes, "follow", following)
    monkeypatch.setattr(changes, "log", logging)
    RecordingWarehouse.statements.clear()
    pipeline = Pipeline(sandbox.url, tmp_path / "warehouse.duckdb", syncs=True)
    pipeline.run(full=True)
    sandbox.control("tick", "POST", changes=30, count=3)
    pipeline.run()
    pipeline.run(full=True)
    seen: dict[str, tuple[set[str], set[str]]] = defaultdict(lambda: (set(), set()))
    for asset, sql in RecordingWarehouse.statements:
        read, written = tables(sql)
        seen[asset][0].update(read)
        seen[asset][1].update(written)
    return Recorded(dict(seen), dict(followed), dict(logged_by))


def test_every_asset_declares_exactly_what_its_sql_reads(recorded: Recorded) -> None:
    from cdp_assets.definitions import defs

    graph = defs.resolve_asset_graph()
    assets = {key.to_user_string(): key for key in graph.get_all_asset_keys()}
    writers: dict[str, set[str]] = defaultdict(set)
    for asset, (_, written) in recorded.tables.items():
        for table in written:
            writers[table].add(asset)
    assert "?" not in recorded.tables, f"a connection opened outside one asset's step: {recorded.tables.get('?')}"
    # What dependencies are derived from (cdp_assets/lineage.py): the writer each module declares of its tables.
    for table, owner in lineage.WRITTEN_BY.items():
        assert (writers.get(table) or recorded.logged_by.get(table)) == {owner}, table
    assert set(recorded.tables) - {CHECK} == set(assets)  # every asset ran, and every one read something

    wrong: list[str] = []
    for asset, (read, written) in sorted(recorded.tables.items()):
        if asset == CHECK:
            continue
        declared = {parent.to_user_string() for parent in graph.get(assets[asset]).parent_keys}
        needed: dict[str, set[str]] = {}  # what it reads -> the assets owning that
        for table in sorted(read - written - OUTSIDE - CHANGE_LOG - SEQUENCES):
            if (asset, table) in UNDECLARABLE:
                continue
            if table in BOOKKEEPING:
                layers = {writer.split("/")[0] for writer in writers[table]}
                if asset.split("/")[0] not in layers:
                    needed[table] = {parent for parent in declared if parent.split("/")[0] in layers}
                    if not needed[table]:
                        wrong.append(f"{asset} reads {table}, {' and '.join(sorted(layers))}'s, declaring none of it")
                continue
            named = table.replace(".", "/")
            owners = {named} if named in assets else writers[table]
            if len(owners) != 1:  # none: a table this test does not know the writer of; several: whose rows?
                wrong.append(f"{asset} reads {table}, written by {sorted(owners) or 'no asset'}")
            needed[table] = owners
        for producer in sorted(recorded.followed.get(asset, ())):
            needed[f"the change log's {producer}"] = recorded.logged_by.get(producer, set()) - {asset}
        for what, owners in needed.items():
            wrong.extend(f"{asset} reads {what} but does not declare {owner}" for owner in sorted(owners - declared))
        owning = set().union(*needed.values())
        wrong.extend(f"{asset} declares {unread} but reads nothing of it" for unread in sorted(declared - owning))
    assert not wrong, "\n".join(wrong)

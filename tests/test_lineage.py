"""Lineage that cannot lie: the tables each asset's SQL reads, as it ran, are exactly its declared dependencies.

A full run and an hourly run after the world changed (syncs included) go through Dagster against the sandbox with
DuckDB's query log on (`RecordingWarehouse`): every statement each asset's step sent is parsed with sqlglot, and
each warehouse table it reads but does not write is traced to the asset owning it (the asset of that name, or the
one writing it: `identity.record_profiles` is the graph's). That set of assets must equal the asset's declared
dependencies (what the UI draws and automation follows): an undeclared read is a lineage that lies, a declared one
never read a dependency that holds runs back for nothing.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import ClassVar

import duckdb
import pytest
import sqlglot
from dagster import DagsterInvariantViolationError, OpExecutionContext
from sqlglot import exp

import resources
from resources import WarehouseResource
from sandbox.runner import SandboxServer
from tests.conftest import Pipeline

SCHEMAS = {"raw", "staging", "quarantine", "identity", "views", "sync", "privacy"}
WRITES = (exp.Create, exp.Insert, exp.Update, exp.Delete, exp.Merge, exp.Drop, exp.Alter, exp.TruncateTable)
# Reads no declaration can hold, each with why. Pulls read the syncs' state to recognise what a sync wrote coming
# back (cdp_assets/echoes.py): the syncs run after the pulls, so this reads the last run's, a cycle a graph can't draw.
UNDECLARABLE = {("raw", "sync.state")}
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
            target = node.this.this if isinstance(node.this, exp.Schema) else node.this
            if isinstance(target, exp.Table) and target.name:
                written.add(f"{target.db}.{target.name}")
        read |= {f"{table.db}.{table.name}" for table in tree.find_all(exp.Table) if table.name} - written
    return ({name for name in read if name.split(".")[0] in SCHEMAS},
            {name for name in written if name.split(".")[0] in SCHEMAS})


@pytest.fixture
def recorded(
    sandbox: SandboxServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> dict[str, tuple[set[str], set[str]]]:
    """asset -> (tables read, tables written) over a full run and an hourly run after a change, syncs included."""
    monkeypatch.setattr(resources, "WarehouseResource", RecordingWarehouse)
    RecordingWarehouse.statements.clear()
    pipeline = Pipeline(sandbox.url, tmp_path / "warehouse.duckdb", syncs=True)
    pipeline.run(full=True)
    sandbox.control("tick", "POST", changes=30, count=3)
    pipeline.run()
    seen: dict[str, tuple[set[str], set[str]]] = defaultdict(lambda: (set(), set()))
    for asset, sql in RecordingWarehouse.statements:
        read, written = tables(sql)
        seen[asset][0].update(read)
        seen[asset][1].update(written)
    return dict(seen)


def test_every_asset_declares_exactly_what_its_sql_reads(recorded: dict[str, tuple[set[str], set[str]]]) -> None:
    from cdp_assets.definitions import defs

    graph = defs.resolve_asset_graph()
    assets = {key.to_user_string(): key for key in graph.get_all_asset_keys()}
    writers: dict[str, set[str]] = defaultdict(set)
    for asset, (_, written) in recorded.items():
        for table in written:
            writers[table].add(asset)
    assert "?" not in recorded, f"a connection opened outside one asset's step: {recorded.get('?')}"
    assert len(recorded) >= 40  # every layer ran: pulls, staging, identity, views, syncs

    wrong: list[str] = []
    for asset, (read, written) in sorted(recorded.items()):
        if asset == CHECK:
            continue
        declared = {parent.to_user_string() for parent in graph.get(assets[asset]).parent_keys}
        owning: set[str] = set()  # the declared assets owning something it reads
        for table in sorted(read - written):
            if (asset.split("/")[0], table) in UNDECLARABLE:
                continue
            named = table.replace(".", "/")
            owners = {named} if named in assets else writers[table] - {asset}
            assert owners, f"{asset} reads {table}, which no asset writes"
            # A table several assets write, each its own rows (a layer's bookkeeping: raw._echoes, the change log),
            # is read for the rows of those the reader declares: one of them must be.
            if not owners & declared:
                wrong.append(f"{asset} reads {table} (of {', '.join(sorted(owners))}) but declares none of them")
            owning |= owners & declared
        wrong.extend(f"{asset} declares {unread} but reads nothing of it" for unread in sorted(declared - owning))
    assert not wrong, "\n".join(wrong)

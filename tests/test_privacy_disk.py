"""Erasure reaches the disk: after a deletion, no file the platform writes beside the warehouse holds the person's
values in its bytes (the warehouse, its log, the alert store, the privacy inbox and exports, Dagster's SQLite
storage), and the rewritten warehouse is the same database: every table, key and sequence, and the next run works
on it."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import duckdb
import pytest
from dagster import AssetKey, AssetMaterialization, DagsterInstance

from cdp_assets.privacy import compaction
from schedules.alerts import Alert, deliver
from tests.conftest import Env
from tests.test_privacy import Person, cli, process, requests_table, resolved, traces

MIN_LENGTH = 8  # shorter values (a HubSpot contact id) also occur by chance in other bytes


def person_values(env: Env, person: Person) -> set[str]:
    """The person's distinctive values: their addresses and phones as written (and lowercased) and as identity
    normalised them (E.164), their profile id and long record ids; only values no one else's record holds."""
    rows = env.pipeline.query(
        "SELECT value FROM identity.identifiers GROUP BY value"
        " HAVING bool_and(list_contains($records, stream || ':' || record_id))",
        {"records": [f"{stream}:{record_id}" for stream, record_id in person.records]},
    )
    own = {value for (value,) in rows}
    named = {*person.texts, *person.emails, *person.phones, *own, person.profile_id}
    return {v for v in named if len(v) >= MIN_LENGTH}


def files_beside(folder: Path) -> list[Path]:
    """Every file the platform wrote beside the warehouse; the sources' world (which keeps the person) aside."""
    return [p for p in folder.rglob("*") if p.is_file() and "world" not in p.relative_to(folder).parts]


def holding(files: list[Path], values: set[str]) -> dict[str, list[str]]:
    """Per value, the files whose bytes hold it."""
    contents = {p.name: p.read_bytes() for p in files}
    found = {v: [name for name, data in contents.items() if v.encode() in data] for v in values}
    return {v: names for v, names in found.items() if names}


def test_after_a_deletion_no_file_holds_the_persons_values_and_the_next_run_works(
    start: Callable[..., Env], monkeypatch: pytest.MonkeyPatch
) -> None:
    env = start()
    folder = env.pipeline.warehouse.parent
    alerts = folder / "alerts.duckdb"
    monkeypatch.setenv("CDP_ALERTS_DB", str(alerts))
    (folder / "dagster_home").mkdir()
    instance = DagsterInstance.local_temp(str(folder / "dagster_home"))  # SQLite, as under DAGSTER_HOME
    env.pipeline.instance = instance
    assert env.pipeline.run().success  # pulls, every layer, syncs
    person = resolved(env)[0]
    record = max((r for _, r in person.records), key=len)
    # What redaction leaves (ids) in a failed sync's alert, and in Dagster's metadata (a check's list of profiles);
    # another alert names no one.
    deliver(Alert("run_failed", "run-1", "hourly", f"sync__braze_users failed: {person.profile_id} rejected",
                  [f"sync__braze_users: Failure: record {record} rejected"]))  # fmt: skip
    deliver(Alert("run_failed", "run-2", "hourly", "raw__stripe_customers failed: 503"))
    instance.report_runless_asset_event(
        AssetMaterialization(
            "identity/person_profiles", metadata={"sample_profiles": f"{person.profile_id}, prof_someone_else"}
        )
    )

    values = person_values(env, person)
    before = holding(files_beside(folder), values)
    # The positive control: DuckDB compresses strings, so only what the bytes show before can be looked for after.
    in_warehouse = {value for value, names in before.items() if "warehouse.duckdb" in names}
    assert len(in_warehouse) >= 5 and person.profile_id in in_warehouse, before
    assert person.emails & in_warehouse and "alerts.duckdb" in before[person.profile_id]
    assert any(name.endswith(".db") for name in before[person.profile_id])  # Dagster's
    tables = env.pipeline.query("SELECT schema_name, table_name FROM duckdb_tables() ORDER BY ALL")

    request_id = cli(env, "delete", "--email", person.email).split()[0]
    [_] = process(env, instance)
    assert requests_table(env)[request_id]["status"] == "done" and traces(env, person) == {}
    assert holding(files_beside(folder), set(before)) == {}
    with duckdb.connect(str(alerts), read_only=True) as conn:
        assert conn.execute("SELECT count(*) FROM alerts").fetchone() == (2,)  # scrubbed, not removed
    actions = env.pipeline.query(
        "SELECT target, items, detail FROM privacy.request_actions WHERE request_id = $id AND action = 'compacted'",
        {"id": request_id},
    )
    assert sorted(target for target, _, _ in actions) == ["alerts.duckdb", "warehouse.duckdb"]
    [(scrubbed,)] = env.pipeline.query("SELECT items FROM privacy.request_actions WHERE request_id = $id AND"
                                       " target = 'dagster storage'", {"id": request_id})  # fmt: skip
    assert scrubbed > 0
    marked = instance.get_latest_materialization_event(AssetKey(["identity", "person_profiles"]))
    assert marked.asset_materialization.metadata["sample_profiles"].value.endswith(", prof_someone_else")
    assert all(items > 0 and "bytes before" in detail for _, items, detail in actions)

    after = env.pipeline.query("SELECT schema_name, table_name FROM duckdb_tables() ORDER BY ALL")
    assert set(tables) <= set(after)  # with the privacy tables the request made
    [(landed,)] = env.pipeline.query("SELECT max(landing_id) FROM raw.stripe_customers")
    env.sandbox.control("tick", "POST", changes=10, count=1)
    assert env.pipeline.run().success  # the compacted warehouse takes the next run: new landings, syncs
    [(latest,)] = env.pipeline.query("SELECT max(landing_id) FROM raw.stripe_customers")
    assert latest > landed


def test_a_compaction_is_the_same_database_in_a_fresh_file(unsynced: Path, tmp_path: Path) -> None:
    path = tmp_path / "warehouse.duckdb"
    shutil.copy(unsynced / "warehouse.duckdb", path)
    deleted = "ann.qxvorlund-7f3e9c@example-erased.io"
    with duckdb.connect(str(path)) as conn:
        conn.execute("UPDATE raw.stripe_customers SET payload = json_object('email', $email) WHERE landing_id ="
                     " (SELECT min(landing_id) FROM raw.stripe_customers)", {"email": deleted})  # fmt: skip
        conn.execute("CHECKPOINT")
        conn.execute("DELETE FROM raw.stripe_customers WHERE payload->>'email' = $email", {"email": deleted})
        database = conn.execute("SELECT current_database()").fetchone()[0]
        before = compaction.catalog(conn, database)
        [(next_landing,)] = conn.execute("SELECT max(landing_id) + 1 FROM raw.stripe_customers").fetchall()
    assert deleted.encode() in path.read_bytes()  # freed, not overwritten

    done = compaction.compact(path)
    assert deleted.encode() not in path.read_bytes() and done.bytes_after == path.stat().st_size
    assert sorted(p.name for p in tmp_path.iterdir()) == ["warehouse.duckdb"]  # no log, nothing half made
    with duckdb.connect(str(path)) as conn:
        assert compaction.catalog(conn, database) == before  # tables, rows, keys, sequences, views
        assert before["tables"] and before["sequences"] and before["constraints"]
        [(landing,)] = conn.execute("SELECT nextval('raw.landing_seq')").fetchall()
    assert landing >= next_landing

"""Incremental staging: a build reads the records changed since the last one and ends where a replay of raw ends,
killed or not."""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
from dagster import AssetSelection

from cdp_assets.contracts import CLOCK_CHECKS
from cdp_assets.definitions import staging_assets
from cdp_assets.staging import STAMPS
from sandbox.runner import SandboxServer
from tests.conftest import Env, Pipeline
from tests.test_sync_kill import launch

STAGING = AssetSelection.groups("staging")
ENTITIES = [a.key.path[-1] for a in staging_assets]
RAW = {a.key.path[-1]: ".".join(next(iter(a.dependency_keys)).path) for a in staging_assets}  # entity -> raw table


def layer_state(pipeline: Pipeline) -> dict[str, list[tuple[Any, ...]]]:
    """Every staging and quarantine row, its run's stamps left out, in a stable order."""
    tables = [f"{layer}.{entity}" for entity in ENTITIES for layer in ("staging", "quarantine")]
    unstamped = f"COLUMNS(lambda c: c NOT IN {STAMPS})::VARCHAR"
    return {table: pipeline.query(f"SELECT {unstamped} FROM {table} ORDER BY ALL") for table in tables}


def landed_since(pipeline: Pipeline, since: dict[str, int]) -> dict[str, set[str]]:
    """Per entity, the records with a version landed after `since` (by raw's landing order), read from raw."""
    return {
        entity: {key for (key,) in pipeline.query(
            f"SELECT DISTINCT coalesce(record_id, '#' || payload_hash) FROM {raw} WHERE landing_id > $since",
            {"since": since[entity]})}
        for entity, raw in RAW.items()
    }  # fmt: skip


def held_by_the_clock(pipeline: Pipeline) -> dict[str, set[str]]:
    """Per entity, the records quarantine holds for a check whose verdict changes with time (a time in the future)."""
    return {
        entity: {key for (key,) in pipeline.query(
            f"SELECT coalesce(r.record_id, '#' || r.payload_hash) FROM quarantine.{entity} q"
            f" JOIN {raw} r ON r.landing_id = q.raw_landing_id"
            " WHERE list_has_any(json_extract_string(q.failed_checks, '$[*].check'), $checks)",
            {"checks": list(CLOCK_CHECKS)})}
        for entity, raw in RAW.items()
    }  # fmt: skip


def watermarks(pipeline: Pipeline) -> dict[str, int]:
    return dict(pipeline.query("SELECT entity, landed_through FROM staging._builds"))


def test_an_hourly_build_reads_what_changed_and_ends_as_a_replay_of_raw(
    sandbox: SandboxServer, pipeline: Pipeline
) -> None:
    sandbox.control("corpus", "POST")  # bad inputs too: quarantine is kept incrementally as well
    first = pipeline.run(selection=AssetSelection.groups("raw") | STAGING)
    assert {first.metadata[f"staging/{e}"]["mode"] for e in ENTITIES} == {"full: no earlier build"}
    before, waiting = watermarks(pipeline), held_by_the_clock(pipeline)
    assert sum(map(len, waiting.values())) > 0  # the corpus's times in the future

    sandbox.control("tick", "POST", changes=40)
    sandbox.control("corpus", "POST")  # the bad inputs again, newer: quarantined records get a new version
    hourly = pipeline.run(selection=AssetSelection.groups("raw") | STAGING)
    changed = {entity: len(keys | waiting[entity]) for entity, keys in landed_since(pipeline, before).items()}
    read = {e: hourly.metadata[f"staging/{e}"]["records_read"] for e in ENTITIES}
    assert {hourly.metadata[f"staging/{e}"]["mode"] for e in ENTITIES} == {"incremental"}
    assert read == changed  # exactly the records raw holds a newer landing of, and those the clock may now pass
    assert 0 < sum(read.values()) < sum(hourly.metadata[f"staging/{e}"]["rows_in"] for e in ENTITIES) / 10
    incremental = layer_state(pipeline)

    waiting = held_by_the_clock(pipeline)
    again = pipeline.run(selection=STAGING)  # nothing landed since: only what the clock holds is read again
    assert {e: again.metadata[f"staging/{e}"]["records_read"] for e in ENTITIES} == {
        e: len(keys) for e, keys in waiting.items()}  # fmt: skip
    assert layer_state(pipeline) == incremental

    replay = pipeline.run(full=True, selection=STAGING)
    assert {replay.metadata[f"staging/{e}"]["mode"] for e in ENTITIES} == {"full: asked"}
    assert layer_state(pipeline) == incremental
    assert {replay.metadata[f"staging/{e}"]["rows_differing"] for e in ENTITIES} == {0}
    assert {replay.checks[f"staging/{e}:replay_matches_incremental"] for e in ENTITIES} == {True}
    for entity in ENTITIES:  # the measures of the whole table, not of the records one build read
        for measure in ("rows_in", "rows_passed", "rows_quarantined", "failures_by_check"):
            assert hourly.metadata[f"staging/{entity}"][measure] == replay.metadata[f"staging/{entity}"][measure]

    # The nightly replays after its pulls: records landed since the last build are not compared. Kept rows that
    # drifted from what raw says (as a bug in the incremental path would leave them) are, and the replay says so.
    sandbox.control("tick", "POST", changes=40)
    assert pipeline.run(selection=AssetSelection.groups("raw")).success
    fresh = landed_since(pipeline, watermarks(pipeline))
    skip = {e: list(fresh[e] | waiting[e]) for e in ENTITIES}
    assert sum(map(len, fresh.values())) > 0
    with duckdb.connect(str(pipeline.warehouse)) as conn:
        conn.execute("UPDATE staging.stripe__customers SET email = 'drift@example.org' WHERE customer_id = (SELECT"
                     " min(customer_id) FROM staging.stripe__customers WHERE NOT list_contains($skip, customer_id))",
                     {"skip": skip["stripe__customers"]})  # fmt: skip
        conn.execute("DELETE FROM quarantine.klaviyo__events WHERE raw_landing_id = (SELECT min(q.raw_landing_id)"
                     " FROM quarantine.klaviyo__events q JOIN raw.klaviyo_events r ON r.landing_id = q.raw_landing_id"
                     " WHERE NOT list_contains($skip, coalesce(r.record_id, '#' || r.payload_hash)))",
                     {"skip": skip["klaviyo__events"]})  # fmt: skip
    drifted = pipeline.run(full=True, selection=STAGING)
    differing = {e: drifted.metadata[f"staging/{e}"]["rows_differing"] for e in ENTITIES}
    assert differing == {e: {"stripe__customers": 2, "klaviyo__events": 1}.get(e, 0) for e in ENTITIES}
    judged = {e for e in ENTITIES if not drifted.checks[f"staging/{e}:replay_matches_incremental"]}
    assert judged == {"stripe__customers", "klaviyo__events"}  # a warning, naming the records


def test_a_build_killed_before_it_commits_leaves_the_last_one_whole(start: Callable[..., Env], tmp_path: Path) -> None:
    env = start(synced=True)  # the test world after a first run that synced: the next pull brings echoes
    before = layer_state(env.pipeline), watermarks(env.pipeline)
    env.sandbox.control("tick", "POST", changes=40)
    assert env.pipeline.run(selection=AssetSelection.groups("raw")).success
    assert env.pipeline.query("SELECT count(*) FROM raw._echoes")[0][0] > 0  # read past by the builds below

    process = launch(env, tmp_path / "dagster_home", "staging/klaviyo__events", point="staging.writing")
    assert process.wait(timeout=180) == -signal.SIGKILL, "the build did not reach its commit"
    assert (layer_state(env.pipeline), watermarks(env.pipeline)) == before  # nothing of the killed build stays

    rerun = env.pipeline.run(selection=STAGING)
    assert rerun.metadata["staging/klaviyo__events"]["mode"] == "incremental"
    assert rerun.metadata["staging/klaviyo__events"]["records_read"] > 0
    resumed = layer_state(env.pipeline)
    env.pipeline.run(full=True, selection=STAGING)
    assert layer_state(env.pipeline) == resumed  # as if it had never been killed, echoes read past alike

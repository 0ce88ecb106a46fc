"""The benchmark at a tiny size: every stage runs and reports, and the report judges every target.

Its times are not checked here; `make bench SIZE=...` measures them (docs/benchmarks.md).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pytest

from cdp_assets.bench import harness, report
from cdp_assets.bench.report import STAGE_NAMES
from resources import LOOKBACK_VARIABLE, lookback_seconds
from sandbox.store import WorldStore
from tests.conftest import TEST_SANDBOX_CONFIG

PEOPLE = 200
TARGETS = (
    "nightly rebuild under 10 minutes", "peak memory under 6 GB", "identity at least 5 times faster than Splink alone",
    "identity precision at least Splink's", "hourly contracts-to-views under 15% of the nightly rebuild",
    "ingestion at 90% or more", "a sync of unchanged views under 30 s, sending nothing",
)


def test_bench_runs_every_stage_and_reports(tmp_path: Path) -> None:
    config = tmp_path / "sandbox.json"
    config.write_text(json.dumps(TEST_SANDBOX_CONFIG))
    markdown = tmp_path / "docs" / "benchmarks.md"
    markdown.parent.mkdir()
    markdown.write_text("# Benchmarks\n\nText kept around the figures.\n")
    bench = [sys.executable, "-m", "cdp_assets.cli", "bench", "--people", str(PEOPLE), "--data", str(tmp_path / "data"),
             "--markdown", str(markdown), "--sandbox-config", str(config), "--limit-scale", "2"]
    env = {**os.environ, LOOKBACK_VARIABLE: "5"}  # the sync's writes a look-back old sooner
    started = datetime.now(UTC)
    subprocess.run([*bench, "--until", "sync"], check=True, timeout=900, env=env)
    # An email event stamped before the pulls began, arriving after them: a pull following its cursor never reads
    # it; the hourly runs, naming the late window's days as their schedule does, read it.
    late = started - timedelta(minutes=1)
    with closing(WorldStore(tmp_path / "data" / "world").connect()) as world:
        [(payload,)] = world.execute("SELECT payload FROM records WHERE stream = 'klaviyo.events' LIMIT 1").fetchall()
        event = {**json.loads(payload), "id": "late_event"}
        event["attributes"] = {**event["attributes"], "datetime": late.isoformat()}
        world.execute("INSERT INTO records VALUES ('klaviyo.events', 'late_event', ?, ?, 0, ?)",
                      (int(late.timestamp()), int(late.timestamp() * 1000), json.dumps(event)))  # fmt: skip
        world.commit()
    # Resumed in a process of its own on what the first part left: the run after the unchanged sync reads back what
    # the first sync wrote only on that world (a fresh copy of the template holds none of it).
    subprocess.run([*bench, "--from", "sync_unchanged"], check=True, timeout=900, env=env)

    results = json.loads((tmp_path / "docs" / "benchmarks" / f"{PEOPLE}.json").read_text())
    assert results["people"] == PEOPLE
    # Every documented limit doubled, under the limits the sandbox settings give.
    assert results["limit_scale"] == 2 and results["limits"]["stripe"]["requests"] == {"max": 50, "seconds": 1.0}
    assert results["limits"]["zendesk"]["export"] == TEST_SANDBOX_CONFIG["limits"]["zendesk"]["export"]
    assert set(results["stages"]) == set(STAGE_NAMES)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).parents[1],
                            capture_output=True, text=True, check=True).stdout.strip()
    for stage, figures in results["stages"].items():
        assert figures["wall_seconds"] > 0 and figures["peak_rss_mb"] > 0, stage
        assert figures["rows"] > 0, stage
        assert figures["commit"].split("+")[0] == commit, stage  # which code measured it, resumed or not
    assert results["stages"]["sync"]["sent"] > 0
    assert results["stages"]["sync_unchanged"]["sent"] == 0  # what the views hold was acknowledged by the first
    assert results["change"]["records_changed"] > 0 and results["stages"]["hourly"]["rows"] > 0
    # The run after the first sync reads back the contacts it wrote; the last run, a look-back later, does not.
    written = results["stages"]["sync"]["syncs"]["sync/hubspot_contacts"]
    written = written["added"] + written["changed"]
    assert results["stages"]["hourly_after_sync"]["fetched"]["raw/hubspot_contacts"] >= written > 0
    assert results["stages"]["hourly_after_sync"]["sent"] == 0
    assert results["stages"]["hourly"]["fetched"]["raw/hubspot_contacts"] < written / 2
    with duckdb.connect(str(tmp_path / "data" / "warehouse.duckdb"), read_only=True) as warehouse:
        landed = warehouse.execute("SELECT count(*) FROM raw.klaviyo_events WHERE record_id = 'late_event'").fetchone()
    assert landed == (1,), "the late event, landed once by the hourly runs"
    assert results["stages"]["splink_alone"]["splink"]["pair_precision"] is not None

    text = markdown.read_text()
    assert text.startswith("# Benchmarks\n\nText kept around the figures.\n")
    section = text.split(f"<!-- bench:{PEOPLE}:start -->")[1].split(f"<!-- bench:{PEOPLE}:end -->")[0]
    # One commit for both parts (marked when the code differs from it), named once rather than stage by stage.
    assert f"\nCommit: {results['stages']['full_pull']['commit']}.\n" in section and "Commits:" not in section
    for name in STAGE_NAMES.values():
        assert f"| {name} |" in section
    for target in TARGETS:
        line = next(line for line in section.splitlines() if line.startswith(f"| {target}"))
        assert line.endswith("| met |") or line.endswith("| **not met** |"), line


def test_a_run_is_resumed_only_on_what_a_stopped_run_left_and_at_its_next_stage(tmp_path: Path) -> None:
    """Refused before any stage runs: nothing to resume, a run served otherwise, a stage other than the first not
    measured, a stop during a stage that would not do its work again, a world or warehouse gone."""
    measured = {stage: {"rows": 1} for stage in ("full_pull", "nightly_rebuild", "splink_alone")}

    def stopped(**kept: object) -> None:
        served = {"people": PEOPLE, "limit_scale": 1, "sandbox_config": {"limits": harness._limits(1, {})},
                  "lookback_seconds": lookback_seconds(), "stages": measured}
        (tmp_path / harness.RESULTS).write_text(json.dumps({**served, **kept}))

    with pytest.raises(SystemExit, match="no stopped run"):
        harness.run(PEOPLE, tmp_path, {}, start="sync")
    stopped()
    with pytest.raises(SystemExit, match=r"\(people, limit_scale, sandbox_config\): people 200, limit_scale 1"):
        harness.run(300, tmp_path, {}, limit_scale=2, start="sync")
    with pytest.raises(SystemExit, match=r"served otherwise \(sandbox_config\)"):
        harness.run(PEOPLE, tmp_path, {"limits": {"stripe": {"requests": {"max": 1, "seconds": 1.0}}}}, start="sync")
    with pytest.raises(SystemExit, match="goes on from sync, not nightly_rebuild"):
        harness.run(PEOPLE, tmp_path, {}, start="nightly_rebuild")  # measured already, on a warehouse past it
    with pytest.raises(SystemExit, match="goes on from sync, not hourly"):
        harness.run(PEOPLE, tmp_path, {}, start="hourly")
    stopped(running="sync")
    with pytest.raises(SystemExit, match="stopped during sync, which would not do again what it had done"):
        harness.run(PEOPLE, tmp_path, {}, start="sync")
    stopped()
    with pytest.raises(SystemExit, match="left no world of 200 people"):
        harness.run(PEOPLE, tmp_path, {}, start="sync")
    world = WorldStore(tmp_path / "world")
    world.set_meta("people", PEOPLE)
    world.set_meta("seed", 1)
    with pytest.raises(SystemExit, match="left no warehouse"):
        harness.run(PEOPLE, tmp_path, {}, start="sync")
    with pytest.raises(SystemExit, match="--until full_pull comes before --from sync"):
        harness.run(PEOPLE, tmp_path, {}, until="full_pull", start="sync")


def test_a_run_serves_a_copy_of_the_world_template_or_the_template_when_the_disk_is_short(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A copy needs the template's size free and as much again for the warehouse; short of it the template itself
    is served (and built again by the next run), rather than a copy filling the disk part way through the run."""
    template = WorldStore(tmp_path / "world-template")
    template.set_meta("people", PEOPLE)
    template.set_meta("seed", 1)
    size = sum(f.stat().st_size for f in (tmp_path / "world-template").rglob("*") if f.is_file())
    served = {"people": PEOPLE, "limit_scale": 1}

    harness._fresh(tmp_path, served, {}, profile=False)
    assert (tmp_path / "world" / "world.db").exists() and (tmp_path / "world-template" / "world.db").exists()

    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage._replace(free=2 * size - 1))
    harness._fresh(tmp_path, served, {}, profile=False)
    assert (tmp_path / "world" / "world.db").exists() and not (tmp_path / "world-template").exists()


def test_a_report_of_the_first_stages_alone_says_what_was_not_run() -> None:
    """What `--until` (or a stopped run) leaves: the stages measured, and every other target marked not run."""
    results = json.loads((Path(__file__).parents[1] / "docs" / "benchmarks" / "10000.json").read_text())
    results["stages"] = {stage: results["stages"][stage] for stage in ("full_pull", "nightly_rebuild")}

    judged = {target.name: target for target in report.targets(results, None)}
    section = report.markdown(results, None)

    assert judged["nightly rebuild under 10 minutes"].met is not None
    assert judged["ingestion at 90% or more of each limit-bound API's limit"].met is not None
    for name in ("identity at least 5 times faster than Splink alone", "a sync of unchanged views under 30 s, "
                 "sending nothing", "hourly contracts-to-views under 15% of the nightly rebuild"):
        assert judged[name].met is None and f"| {name} | not run | not run |" in section
    assert "not reached (stopped before them, or `--until`): Splink alone; first sync; sync, unchanged views; " \
        "hourly after the first sync; hourly after 1% change." in section

"""One benchmark stage, run in a process of its own: `python -m cdp_assets.bench.stages STAGE --data DIR`.

Each stage writes `DIR/STAGE.json`: its rows, seconds per step (from the run's step events), figures of its own,
and the commit and machine it ran on, taken as it starts from the code this process runs. The harness measures wall
time and peak memory from outside.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
from dagster import AssetKey, AssetSelection, DagsterEventType, DagsterInstance, RunConfig, materialize

from resources import build_resources

Figures = dict[str, Any]


def world(data: Path, people: int) -> Figures:
    from sandbox.world import build_world

    created = build_world(data / "world-template", people=people)
    return {"rows": sum(created.values()), "records": created}


def full_pull(data: Path, people: int) -> Figures:
    """Every source pulled from the start, as the nightly path does."""
    from cdp_assets.definitions import raw_assets

    figures = _run(AssetSelection.groups("raw"), full_refresh=True)
    pulls = {key: meta for key, meta in figures.pop("metadata").items() if key.startswith("raw/")}
    return {**figures, "rows": sum(m["rows_fetched"] for m in pulls.values()), "pulls": pulls,
            "streams": len(raw_assets)}


def nightly_rebuild(data: Path, people: int) -> Figures:
    """Contracts, identity (rebuilt from scratch and compared with itself), profiles, consent and every view."""
    figures = _run(AssetSelection.all() - AssetSelection.groups("raw", "sync"), full_refresh=True)
    staged = {key: meta for key, meta in figures.pop("metadata").items() if key.startswith("staging/")}
    return {**figures, "rows": sum(m["rows_in"] for m in staged.values())}


def sync(data: Path, people: int) -> Figures:
    """Every sync, from the views to the sandbox's destinations."""
    figures = _run(AssetSelection.groups("sync"))
    syncs = {key: meta for key, meta in figures.pop("metadata").items() if key.startswith("sync/")}
    compared = sum(m["added"] + m["changed"] + m["removed"] + m["unchanged"] for m in syncs.values())
    sent = sum(m["added"] + m["changed"] + m["removed"] for m in syncs.values())
    return {**figures, "rows": compared, "sent": sent, "syncs": syncs}


def hourly(data: Path, people: int) -> Figures:
    """The hourly job: incremental pulls through views and syncs. Its events are read by the days the hourly schedule
    names once every day has landed, the late window (each stage's instance is new, so it records no day landed)."""
    from cdp_assets.definitions import defs
    from cdp_assets.raw import days_of_streams
    from schedules import late_window_tags

    instance = DagsterInstance.ephemeral()
    tags = late_window_tags(days_of_streams(), datetime.now(UTC))
    started = time.perf_counter()
    result = defs.get_job_def("hourly_pipeline").execute_in_process(instance=instance, tags=tags,
                                                                    raise_on_error=False)  # fmt: skip
    seconds = time.perf_counter() - started
    if not result.success:
        raise SystemExit("the hourly run failed")
    metadata = _metadata(result.get_asset_materialization_events())
    pulls = {key: meta for key, meta in metadata.items() if key.startswith("raw/")}
    syncs = {key: meta for key, meta in metadata.items() if key.startswith("sync/")}
    return {"seconds": seconds, "steps": _step_seconds(instance, result.run_id),
            "rows": sum(m["rows_fetched"] for m in pulls.values()),
            "fetched": {key: m["rows_fetched"] for key, m in pulls.items()},
            "sent": sum(m["added"] + m["changed"] + m["removed"] for m in syncs.values())}


def splink_alone(data: Path, people: int) -> Figures:
    """Splink deduplicating the person records on its own, and both results scored against the world's truth."""
    from cdp_assets.bench.splink_alone import ALONE_PROFILES, dedupe
    from cdp_assets.identity.evaluation import WITHOUT_EVENTS, score

    with duckdb.connect(os.environ["CDP_WAREHOUSE"]) as conn:
        identity = score(conn, data / "world").lines[WITHOUT_EVENTS]
        started = time.perf_counter()
        records, pairs = dedupe(conn)
        seconds = time.perf_counter() - started
        alone = score(conn, data / "world", ALONE_PROFILES).lines[WITHOUT_EVENTS]
    return {"seconds": seconds, "rows": records, "pairs": pairs,
            "identity": {"pair_precision": identity.pair_precision, "pair_recall": identity.pair_recall},
            "splink": {"pair_precision": alone.pair_precision, "pair_recall": alone.pair_recall}}


STAGES: dict[str, Callable[[Path, int], Figures]] = {
    "world": world, "full_pull": full_pull, "nightly_rebuild": nightly_rebuild, "splink_alone": splink_alone,
    "sync": sync, "sync_unchanged": sync, "hourly_after_sync": hourly, "hourly": hourly,
}


def _run(selection: AssetSelection, full_refresh: bool = False) -> Figures:
    from cdp_assets.definitions import defs, refresh_ops

    instance = DagsterInstance.ephemeral()
    chosen = selection.resolve(defs.resolve_asset_graph())
    started = time.perf_counter()
    result = materialize(
        [*(defs.assets or []), *(defs.asset_checks or [])],
        selection=selection,
        resources=build_resources(),
        instance=instance,
        run_config=RunConfig(ops=refresh_ops(full_refresh, chosen)),
        raise_on_error=False,
    )
    seconds = time.perf_counter() - started
    if not result.success:
        raise SystemExit("the stage's run failed")
    return {"seconds": seconds, "steps": _step_seconds(instance, result.run_id),
            "metadata": _metadata(result.get_asset_materialization_events())}


def _metadata(events: list[Any]) -> dict[str, dict[str, Any]]:
    return {
        event.asset_key.to_user_string(): {k: v.value for k, v in event.materialization.metadata.items()}
        for event in events
        if isinstance(event.asset_key, AssetKey)
    }


def _step_seconds(instance: DagsterInstance, run_id: str) -> dict[str, float]:
    """Seconds per step (steps run one at a time, so they add up to the run)."""
    started: dict[str, float] = {}
    steps: dict[str, float] = {}
    for entry in instance.all_logs(run_id):
        event, step = entry.dagster_event, entry.step_key
        if event is None or step is None:
            continue
        if event.event_type == DagsterEventType.STEP_START:
            started[step] = entry.timestamp
        elif event.event_type in (DagsterEventType.STEP_SUCCESS, DagsterEventType.STEP_FAILURE):
            steps[step] = round(entry.timestamp - started.pop(step, entry.timestamp), 3)
    return steps


# What a stage runs, for the commit's mark: the figures a benchmark writes into docs/ as it goes change no code.
CODE = ("cdp_assets", "resources", "sandbox", "schedules", "pyproject.toml", "workspace.yaml")


def commit() -> str | None:
    """The commit of the code this process runs, marked `+changes` when that code differs from it; None outside a
    git checkout of its own."""
    root = Path(__file__).resolve().parents[2]
    git = ["git", "--no-optional-locks", "-C", str(root)]  # no index lock taken from a user's own git commands
    try:
        top, head, changed = (subprocess.run([*git, *command], capture_output=True, check=True, timeout=30).stdout
                              for command in (["rev-parse", "--show-toplevel"], ["rev-parse", "--short", "HEAD"],
                                              ["status", "--porcelain", "--untracked-files=no", "--", *CODE]))
    except (OSError, subprocess.SubprocessError):
        return None
    if Path(top.decode().strip()).resolve() != root:  # a copy inside some other repository
        return None
    return head.decode().strip() + ("+changes" if changed.strip() else "")


def main() -> None:
    from cdp_assets.bench.report import machine

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("stage", choices=sorted(STAGES))
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--people", type=int, required=True)
    args = parser.parse_args()
    ran_on = {"commit": commit(), "machine": machine()}
    figures = STAGES[args.stage](args.data, args.people)
    (args.data / f"{args.stage}.json").write_text(json.dumps({**figures, **ran_on}, indent=1, default=str))


if __name__ == "__main__":
    main()

"""The benchmark run: a world of N people, served by the sandbox, taken through the pipeline stage by stage.

Order: build the world (kept as a template between runs of one size, since it takes minutes at a million; each run
serves a fresh copy, as the run changes its world, or the template itself when the disk has not room for a copy and
as much again for the warehouse: the world of 100,000 people takes 1.9 GB, of a million 19 GB), a full pull, the
nightly rebuild, Splink alone on the same records, a first sync, a sync of unchanged views, an hourly run that reads
again what the first sync wrote into HubSpot and Zendesk (as any first hourly run after a sync of every profile
does), then 1% of the world changes and the hourly job runs again, from that steady state. An incremental pull reads
again what changed in the look-back before the last pull began, which an hour between runs leaves empty; back to
back, the run after the first sync starts a look-back after the sync's last write, so the last run does not read the
sync twice. Each stage runs in a child process; `os.wait4` gives its wall time and peak resident memory (the largest
of the child and anything it waited for). The sandbox's request counts per stage come from its `/_sandbox/stats`.

A run stopped after a stage (`until`, or because the host was needed: at a million people the stages take hours) is
resumed from the next (`start`) on the world and warehouse it left, with the figures it kept in `data/results.json`;
each stage records the commit and machine it ran on (cdp_assets/bench/stages.py), so a resumed run shows which code
and host measured what.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cdp_assets import stack
from resources import DESTINATIONS, SOURCES, lookback_seconds, pacing_variable
from sandbox.config import SandboxConfig
from sandbox.runner import SandboxServer
from sandbox.store import WorldStore

SERVED_STAGES = (
    "full_pull", "nightly_rebuild", "splink_alone", "sync", "sync_unchanged", "hourly_after_sync", "hourly",
)
CHANGED_SHARE = 0.01  # of the world's people, changed before the hourly run
RESULTS = "results.json"  # in the run's folder: its figures so far, what a resumed run goes on from
# The stages that do all their work again when run a second time (pulls from the start, rebuilds whole, a sync of
# what was acknowledged): a run stopped during one of them can resume from it.
REPEATED = ("full_pull", "nightly_rebuild", "splink_alone", "sync_unchanged")


def run(
    people: int, data: Path, sandbox_config: dict[str, Any], profile: bool = False, limit_scale: int = 1,
    until: str = SERVED_STAGES[-1],
    publish: Callable[[dict[str, Any]], None] | None = None,
    start: str | None = None,
) -> dict[str, Any]:
    """The stages at `people` up to `until`, or from `start` on a stopped run's world and warehouse; returns the
    figures the report is made from (also data/results.json, written before and after every stage).

    `limit_scale` multiplies every documented rate limit, in the sandbox and in each connector's own pace alike
    (an account on a higher plan): at a million people the documented limits alone hold the full pull to hours.
    `publish` is handed the figures so far after every stage.
    With `profile`, each stage runs under pyinstrument, which writes its call tree to data/profiles/STAGE.txt."""
    data.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **stack.launcher_environment(data),
           "CDP_WAREHOUSE": str((data / "warehouse.duckdb").resolve())}  # fmt: skip
    env.update(_paces(limit_scale))
    sandbox_config = {**sandbox_config, "limits": _limits(limit_scale, sandbox_config.get("limits", {}))}
    served = {"people": people, "limit_scale": limit_scale, "sandbox_config": json.loads(json.dumps(sandbox_config)),
              "lookback_seconds": lookback_seconds()}
    stages = SERVED_STAGES[SERVED_STAGES.index(start or SERVED_STAGES[0]): SERVED_STAGES.index(until) + 1]
    if not stages:
        raise SystemExit(f"bench: --until {until} comes before --from {start}")
    results = _resumed(data, served, start) if start else _fresh(data, served, env, profile)
    with SandboxServer(data / "world", sandbox_config, startup_timeout=600) as sandbox:
        env["CDP_SANDBOX_URL"] = sandbox.url
        results["limits"] = sandbox.control("config")["limits"]
        for stage in stages:
            if stage == "hourly_after_sync":  # the unchanged sync in between sends nothing
                time.sleep(max(0.0, results["stages"]["sync"]["ended_at"] + lookback_seconds() - time.time()))
            results["running"] = stage  # kept until it ends: a run stopped during it is resumed only if it repeats
            _keep(data, results)
            if stage == "hourly":
                results["change"] = sandbox.control("tick", "POST", changes=max(1, round(people * CHANGED_SHARE)))
            sandbox.control("stats", "DELETE")
            results["stages"][stage] = _stage(stage, data, people, env, profile)
            results["stages"][stage]["requests"] = sandbox.control("stats")
            del results["running"]
            _keep(data, results)
            if publish is not None:
                publish(results)
    return results


def _fresh(data: Path, served: dict[str, Any], env: dict[str, str], profile: bool) -> dict[str, Any]:
    """A new run's start: no warehouse, a fresh copy of the world template (built first if it is not of the size),
    and no figures of an earlier run, which a later resume would otherwise take on with this run's warehouse."""
    for stale in ("warehouse.duckdb", "warehouse.duckdb.wal", "alerts.duckdb", "privacy", RESULTS):
        path = data / stale
        shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    results: dict[str, Any] = {**served, "stages": {}}
    if _world_people(data / "world-template") != served["people"]:
        shutil.rmtree(data / "world-template", ignore_errors=True)
        results["stages"]["world"] = _stage("world", data, served["people"], env, profile)
    shutil.rmtree(data / "world", ignore_errors=True)
    template = data / "world-template"
    size = sum(f.stat().st_size for f in template.rglob("*") if f.is_file())
    if shutil.disk_usage(data).free >= 2 * size:
        shutil.copytree(template, data / "world")
    else:  # no room for a copy and as much again for the warehouse: the template is served, and built again next run
        print(f"bench: {size / 1e9:.1f} GB of world and too little disk for a copy; serving the template itself",
              flush=True)
        template.rename(data / "world")
    return results


def _resumed(data: Path, served: dict[str, Any], start: str) -> dict[str, Any]:
    """A stopped run's figures, to go on from `start`, the first stage it did not measure, on the world and warehouse
    it left, served alike. Refused when there is no such run, when `start` is not that stage (a stage measured again
    on a warehouse already past it would measure something else), or when the run stopped during `start` and `start`
    would not do again what it had done (a sync, an hourly run: its figures would be of the rest)."""
    kept = data / RESULTS
    if not kept.exists():
        raise SystemExit(f"bench: no stopped run in {data} to resume (no {RESULTS})")
    results = json.loads(kept.read_text())
    differing = [name for name, value in served.items() if results.get(name) != value]
    if differing:
        raise SystemExit(f"bench: the run in {data} was served otherwise ({', '.join(differing)}): "
                         f"{', '.join(f'{n} {results.get(n)!r}' for n in differing)}")
    following = next((stage for stage in SERVED_STAGES if stage not in results["stages"]), None)
    if start != following:
        raise SystemExit(f"bench: the run in {data} goes on from {following or 'nowhere (it measured every stage)'}, "
                         f"not {start}")
    if results.get("running") == start and start not in REPEATED:
        raise SystemExit(f"bench: the run in {data} stopped during {start}, which would not do again what it had "
                         "done; run the benchmark from the start")
    if _world_people(data / "world") != served["people"]:
        raise SystemExit(f"bench: the run in {data} left no world of {served['people']} people to resume on")
    if not (data / "warehouse.duckdb").exists():
        raise SystemExit(f"bench: the run in {data} left no warehouse to resume on")
    return results


def _keep(data: Path, results: dict[str, Any]) -> None:
    """results.json replaced whole, so a run stopped while writing it leaves the last one to resume from."""
    (data / f"{RESULTS}.tmp").write_text(json.dumps(results, indent=1))
    os.replace(data / f"{RESULTS}.tmp", data / RESULTS)


def _stage(stage: str, data: Path, people: int, env: dict[str, str], profile: bool) -> dict[str, Any]:
    """One stage in a process of its own (under pyinstrument with `profile`), so its peak memory is its own: the
    figures it wrote, with its wall time and that peak as the kernel counted it."""
    print(f"bench: {stage} ...", flush=True)
    command = [sys.executable, "-m", "cdp_assets.bench.stages", stage, "--data", str(data), "--people", str(people)]
    if profile:
        (data / "profiles").mkdir(exist_ok=True)
        command[1:1] = ["-m", "pyinstrument", "--show-all", "--outfile", str(data / "profiles" / f"{stage}.txt")]
    started = time.perf_counter()
    process = subprocess.Popen(command, env=env)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"bench stage {stage} failed with exit code {process.returncode}")
    figures = json.loads((data / f"{stage}.json").read_text())
    print(f"bench: {stage} took {wall:.1f} s, peak {usage.ru_maxrss / 1024:.0f} MB", flush=True)
    return {**figures, "wall_seconds": round(wall, 2), "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
            "ended_at": round(time.time(), 3)}


def _limits(scale: int, given: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The documented limits times `scale`, under any the sandbox settings give."""
    scaled = {service: {name: {"max": limit.max * scale, "seconds": limit.seconds} for name, limit in named.items()}
              for service, named in SandboxConfig().limits.items()}
    return {service: {**named, **given.get(service, {})} for service, named in scaled.items()}


def _paces(scale: int) -> dict[str, str]:
    """The calls per window of every account whose connectors pace themselves, times `scale`."""
    if scale == 1:
        return {}
    connectors = [*SOURCES.values(), *DESTINATIONS.values()]
    return {pacing_variable(kind.service_name): str(kind.pace.max * scale) for kind in connectors if kind.pace}


def _world_people(folder: Path) -> int | None:
    """The people of the world built in `folder` (None if none was finished there): a run for another size builds
    its world again."""
    if not (folder / "world.db").exists():
        return None
    store = WorldStore(folder)
    return store.get_meta("people") if store.get_meta("seed") is not None else None

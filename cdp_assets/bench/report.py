"""The benchmark's figures as tables, the targets judged on them, and their section of docs/benchmarks.md.

Ingestion's share of a rate limit: over the streams of a source whose pull lasted at least BOUND_WINDOWS
windows of its limit, their request rate (requests over seconds) over the limit's (`max` per `seconds`). A
shorter pull is over before the limit shapes it (its first window's burst alone would read as more than
100%), so it does not count; a source with none is not limit-bound at that size.
"""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Per source, the limit a full pull runs against (sandbox/config.py names them).
PULL_LIMITS = {"stripe": "requests", "hubspot": "ten_secondly", "zendesk": "export", "klaviyo": "steady",
               "mixpanel": "hourly"}
BOUND_WINDOWS = 3
IDENTITY_STEPS = ("identity__identifiers", "identity__identity_graph")  # records to record_profiles
PRODUCT_STAGES = ("full_pull", "nightly_rebuild", "sync", "sync_unchanged", "hourly_after_sync", "hourly")
STAGE_NAMES = {
    "world": "world build (sandbox)", "full_pull": "full pull", "nightly_rebuild": "nightly rebuild",
    "splink_alone": "Splink alone", "sync": "first sync", "sync_unchanged": "sync, unchanged views",
    "hourly_after_sync": "hourly after the first sync", "hourly": "hourly after 1% change",
}
MB_PER_GB = 1024
TARGET_NAMES = (
    "nightly rebuild under 10 minutes", "peak memory under 6 GB", "identity at least 5 times faster than Splink alone",
    "identity precision at least Splink's", "hourly contracts-to-views under 15% of the nightly rebuild",
    "ingestion at 90% or more of each limit-bound API's limit",
    "a sync of unchanged views under 30 s, sending nothing",
)


@dataclass(frozen=True)
class Target:
    name: str
    figure: str
    met: bool | None  # None: a stage it needs was not run


def _not_run(name: str) -> Target:
    return Target(name, "not run", None)


def layers(steps: dict[str, float]) -> dict[str, float]:
    """Seconds per layer (an asset key prefix), from seconds per step."""
    totals: dict[str, float] = {}
    for step, seconds in steps.items():
        layer = step.split("__")[0]
        totals[layer] = totals.get(layer, 0.0) + seconds
    return totals


def ingestion(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Per source: requests, seconds, rows, its share of the limit (None if not limit-bound), non-2xx answers."""
    pull = results["stages"].get("full_pull")
    if pull is None:
        return []
    served = pull["requests"]["services"]
    rows = []
    for service, limit_name in PULL_LIMITS.items():
        limit = results["limits"][service][limit_name]
        streams = [m for key, m in pull["pulls"].items() if key.startswith(f"raw/{service}_")]
        bound = [m for m in streams if m["seconds"] >= BOUND_WINDOWS * limit["seconds"]]
        allowed = sum(m["seconds"] * limit["max"] / limit["seconds"] for m in bound)
        status = served.get(service, {}).get("status", {})
        rows.append({
            "service": service, "requests": sum(m["requests"] for m in streams),
            "seconds": sum(m["seconds"] for m in streams), "rows": sum(m["rows_fetched"] for m in streams),
            "limit": f"{limit['max']} per {limit['seconds']:g} s",
            "share": sum(m["requests"] for m in bound) / allowed if allowed else None,
            "retries": sum(m["retries"] for m in streams),
            "refused": sum(n for code, n in status.items() if not code.startswith("2")),
        })
    return rows


def targets(results: dict[str, Any], smaller: dict[str, Any] | None) -> list[Target]:
    """Each target judged on the stages it needs; one whose stages were not run (`--until`) says so."""
    stages = results["stages"]
    if "nightly_rebuild" not in stages:
        return [_not_run(name) for name in TARGET_NAMES]
    nightly, alone = stages["nightly_rebuild"], stages.get("splink_alone")
    peak = max(stages[s]["peak_rss_mb"] for s in PRODUCT_STAGES if s in stages)
    found = [
        Target(TARGET_NAMES[0], f"{nightly['wall_seconds']:.0f} s", nightly["wall_seconds"] < 600),
        Target(TARGET_NAMES[1], f"{peak / MB_PER_GB:.2f} GB", peak < 6 * MB_PER_GB),
    ]
    if smaller is not None:
        both = [s for s in PRODUCT_STAGES if s in stages and s in smaller["stages"]]
        small_peak = max(smaller["stages"][s]["peak_rss_mb"] for s in both)
        growth = max(stages[s]["peak_rss_mb"] for s in both) / small_peak
        scale = results["people"] / smaller["people"]
        found.append(Target(f"memory not in proportion to data from {smaller['people']:,} people",
                            f"x{growth:.2f} for x{scale:g} people", growth < scale / 2))
    found += _identity_targets(nightly, alone) if alone else [_not_run(n) for n in TARGET_NAMES[2:4]]
    if "hourly" in stages:
        share = hourly_share(results)
        found.append(Target(TARGET_NAMES[4], f"{share:.1%}", share < 0.15))
    else:
        found.append(_not_run(TARGET_NAMES[4]))
    bound = [row for row in ingestion(results) if row["share"] is not None]
    lowest = min(bound, key=lambda row: row["share"], default=None)
    judged = "no API limit-bound"
    if lowest is not None:
        judged = f"lowest {lowest['share']:.1%} ({lowest['service']}) of {', '.join(r['service'] for r in bound)}"
    found.append(Target(TARGET_NAMES[5], judged, lowest is not None and lowest["share"] >= 0.9))
    unchanged = stages.get("sync_unchanged")
    found.append(Target(TARGET_NAMES[6], f"{unchanged['wall_seconds']:.1f} s, {unchanged['sent']} sent",
                        unchanged["wall_seconds"] < 30 and unchanged["sent"] == 0)
                 if unchanged else _not_run(TARGET_NAMES[6]))
    return found


def _identity_targets(nightly: dict[str, Any], alone: dict[str, Any]) -> list[Target]:
    identity_seconds = sum(nightly["steps"].get(step, 0.0) for step in IDENTITY_STEPS)
    speedup = alone["seconds"] / identity_seconds if identity_seconds else 0.0
    precision, splink_precision = alone["identity"]["pair_precision"], alone["splink"]["pair_precision"]
    return [Target(TARGET_NAMES[2], f"x{speedup:.1f}", speedup >= 5),
            Target(TARGET_NAMES[3], f"{precision:.4f} vs {splink_precision:.4f}", precision >= splink_precision)]


def hourly_share(results: dict[str, Any]) -> float:
    """The hourly run's contracts-to-views seconds (its steps but pulls and syncs) over the nightly rebuild's."""
    stages = results["stages"]
    hourly = sum(s for layer, s in layers(stages["hourly"]["steps"]).items() if layer not in ("raw", "sync"))
    rebuild = sum(stages["nightly_rebuild"]["steps"].values())
    return hourly / rebuild if rebuild else 0.0


def machine() -> str:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor() or platform.machine())
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3
    return f"{os.cpu_count()} cores ({model}), {memory:.0f} GB RAM, {platform.system()} {platform.release()}, " \
           f"Python {platform.python_version()}"


def _ran_on(results: dict[str, Any]) -> Iterator[str]:
    """The machine and commit the stages ran on: one of each, or each stage's when a resumed run spans several."""
    machines, commits = (_per_stage(results["stages"], field) for field in ("machine", "commit"))
    if len(set(machines.values())) > 1:
        ran_on = _listed("Machines", machines)
    else:
        recorded = next(iter(machines.values()), "unrecorded")
        ran_on = f"Machine: {recorded if recorded != 'unrecorded' else results.get('machine') or machine()}."
    yield f"{ran_on} Measured {results.get('measured_at', '')}."
    if len(set(commits.values())) > 1:
        yield _listed("Commits", commits)
    elif set(commits.values()) not in ({"unrecorded"}, set()):  # figures from before stages recorded it say nothing
        yield f"Commit: {next(iter(commits.values()))}."


def _per_stage(stages: dict[str, Any], field: str) -> dict[str, str]:
    return {stage: figures.get(field) or "unrecorded" for stage, figures in stages.items()}


def _listed(label: str, values: dict[str, str]) -> str:
    return f"{label}: " + "; ".join(f"{STAGE_NAMES[stage]}: {value}" for stage, value in values.items()) + "."


def markdown(results: dict[str, Any], smaller: dict[str, Any] | None) -> str:
    return "\n".join(_markdown(results, smaller))


def _markdown(results: dict[str, Any], smaller: dict[str, Any] | None) -> Iterator[str]:
    stages = results["stages"]
    yield f"### {results['people']:,} people"
    yield ""
    yield from _ran_on(results)
    scale = results.get("limit_scale", 1)
    if scale != 1:
        yield ""
        yield (f"Rate limits: {scale} times the documented ones, served by the sandbox and paced by the connectors "
               "alike (`--limit-scale`).")
    missing = [STAGE_NAMES[s] for s in STAGE_NAMES if s not in stages and s != "world"]
    if missing:
        yield ""
        yield f"Stages not reached (stopped before them, or `--until`): {'; '.join(missing)}."
    yield ""
    yield "| stage | wall time | rows | rows per second | peak RSS |"
    yield "| --- | ---: | ---: | ---: | ---: |"
    for stage, figures in stages.items():
        rate = figures["rows"] / figures["wall_seconds"] if figures["wall_seconds"] else 0
        yield (f"| {STAGE_NAMES[stage]} | {figures['wall_seconds']:,.1f} s | {figures['rows']:,} | {rate:,.0f} | "
               f"{figures['peak_rss_mb']:,.0f} MB |")
    yield ""
    for stage in ("nightly_rebuild", "hourly_after_sync", "hourly"):
        if stage in stages:
            split = ", ".join(f"{layer} {s:,.1f} s" for layer, s in layers(stages[stage]["steps"]).items())
            yield f"- {STAGE_NAMES[stage]} by layer: {split}."
    change = results.get("change", {})
    if "hourly" in stages:
        yield (f"- The change before the hourly run: {change.get('records_changed', 0):,} records changed and "
               f"{change.get('records_created', 0):,} created; the hourly run fetched {stages['hourly']['rows']:,} "
               f"rows and sent {stages['hourly']['sent']:,} records to destinations; the first sync sent "
               f"{stages['sync']['sent']:,}.")
    if "hourly_after_sync" in stages:
        settling = stages["hourly_after_sync"]
        echo = ", ".join(f"{key.removeprefix('raw/')} {settling['fetched'][key]:,}"
                         for key in ("raw/hubspot_contacts", "raw/zendesk_users") if key in settling.get("fetched", {}))
        yield (f"- The hourly run after the first sync read again what that sync wrote ({echo or 'not counted'}): "
               f"it fetched {settling['rows']:,} rows in all and sent {settling['sent']:,}.")
    if "nightly_rebuild" in stages:
        yield ""
    yield from _pull_table(results)
    yield from _identity_table(stages)
    yield "| target | figure | |"
    yield "| --- | --- | --- |"
    for target in targets(results, smaller):
        verdict = "not run" if target.met is None else "met" if target.met else "**not met**"
        yield f"| {target.name} | {target.figure} | {verdict} |"


def _pull_table(results: dict[str, Any]) -> Iterator[str]:
    rows = ingestion(results)
    if not rows:
        return
    yield "| source | requests | seconds | rows | limit | share of limit | retries | non-2xx answers |"
    yield "| --- | ---: | ---: | ---: | --- | ---: | ---: | ---: |"
    for row in rows:
        share = "not limit-bound" if row["share"] is None else f"{row['share']:.1%}"
        yield (f"| {row['service']} | {row['requests']:,} | {row['seconds']:,.1f} | {row['rows']:,} | {row['limit']} "
               f"| {share} | {row['retries']:,} | {row['refused']:,} |")
    yield ""


def _identity_table(stages: dict[str, Any]) -> Iterator[str]:
    alone = stages.get("splink_alone")
    if alone is None:
        return
    identity_seconds = sum(stages["nightly_rebuild"]["steps"].get(step, 0.0) for step in IDENTITY_STEPS)
    yield "| identity on the person records | seconds | pair precision | pair recall |"
    yield "| --- | ---: | ---: | ---: |"
    for name, seconds, scores in (("this pipeline's identity stage", identity_seconds, alone["identity"]),
                                  ("Splink alone", alone["seconds"], alone["splink"])):
        yield f"| {name} | {seconds:,.1f} | {scores['pair_precision']:.4f} | {scores['pair_recall']:.4f} |"
    yield ""


def write(path: Path, results: dict[str, Any], smaller: dict[str, Any] | None) -> None:
    """Replace this size's section of `path` (added in order of size if missing)."""
    people = results["people"]
    start, end = f"<!-- bench:{people}:start -->", f"<!-- bench:{people}:end -->"
    section = f"{start}\n{markdown(results, smaller)}\n{end}"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    head, found, rest = text.partition(start)
    path.write_text(head + section + rest.partition(end)[2] if found else f"{text.rstrip()}\n\n{section}\n")


def load(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.exists() else None

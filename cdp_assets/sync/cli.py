"""`cdp sync plan`: what each sync would send now (the dry run, without Dagster or any destination call).
`cdp sync status`: each sync's last runs and the rows its destination still refuses.

Both read the warehouse read-only (the plan's working tables are temporary), beside running jobs."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

import duckdb

from cdp_assets.sync import delivery, plan
from cdp_assets.sync.specs import load
from cdp_assets.warehouse_access import add_wait_option, connect, has_tables

STATUS_SQL = """
SELECT sync, started_at, status, added, changed, removed, unchanged, rejected, invalid, left_out, requests, message
FROM sync.runs
WHERE list_contains($syncs, sync)
QUALIFY row_number() OVER (PARTITION BY sync ORDER BY started_at DESC) <= $runs
ORDER BY sync, started_at DESC
"""
OPEN_REJECTIONS_SQL = """
SELECT sync, count(DISTINCT key), any_value(reason ORDER BY rejected_at DESC)
FROM sync.rejections WHERE resolved_at IS NULL AND list_contains($syncs, sync) GROUP BY sync ORDER BY sync
"""


def add_parsers(commands: argparse._SubParsersAction, default_warehouse: Path) -> None:
    warehouse = Path(os.environ.get("CDP_WAREHOUSE", default_warehouse))
    sync = commands.add_parser("sync", help="plan a sync (dry run) or see how syncs went")
    sync.add_argument("--warehouse", type=Path, default=warehouse)
    actions = sync.add_subparsers(dest="action", required=True)
    plan_parser = actions.add_parser("plan", help="what each sync would add, change and remove now")
    status = actions.add_parser("status", help="the last runs of each sync and its open rejections")
    status.add_argument("--runs", type=int, default=3, help="runs to show per sync")
    for parser in (plan_parser, status):
        parser.add_argument("--sync", action="append", help="only this sync (repeatable); default every sync")
        parser.add_argument("--json", action="store_true", help="print JSON instead of text")
        add_wait_option(parser)


def run(args: argparse.Namespace) -> None:
    specs = load().syncs
    names = args.sync or list(specs)
    unknown = sorted(set(names) - set(specs))
    if unknown:
        raise SystemExit(f"unknown syncs {unknown}; syncs.yaml defines {sorted(specs)}")
    with connect(args.warehouse, args.wait_seconds) as conn:
        synced = has_tables(conn, "sync", "state", "runs", "rejections")  # the first sync run makes them
        if args.action == "status":
            result = status(conn, names, args.runs, synced)
        elif synced:
            result = plans(conn, names)
        else:
            raise SystemExit("no sync has run on this warehouse yet, so there is nothing to plan against: "
                             "the first run of a sync sends every row its view admits")  # fmt: skip
    print(json.dumps(result, default=str, indent=2) if args.json else describe(args.action, result))


def plans(conn: duckdb.DuckDBPyConnection, names: list[str]) -> dict[str, Any]:
    found = {}
    for name in names:
        spec = load().syncs[name]
        planned = plan.prepare(conn, spec)
        share = planned.removal_share(spec.mode in delivery.REMOVING_MODES)
        found[name] = {
            "destination": spec.destination,
            "mode": spec.mode,
            "rows": planned.rows,
            "invalid": planned.invalid,
            "left_out": planned.left_out,
            "added": planned.added,
            "changed": planned.changed,
            "removed": planned.removed,
            "unchanged": planned.unchanged,
            "held": planned.held,
            "guard": "ok" if share <= spec.max_removal_share else f"would abort: removes {share:.0%} of {planned.held}",
            "sample": plan.sample(conn),
        }
    return found


def status(conn: duckdb.DuckDBPyConnection, names: list[str], runs: int, synced: bool) -> dict[str, Any]:
    found: dict[str, Any] = {name: {"runs": [], "open_rejections": 0} for name in names}
    if not synced:
        return found
    cursor = conn.execute(STATUS_SQL, {"syncs": names, "runs": runs})
    columns = [d[0] for d in cursor.description]
    for row in cursor.fetchall():
        found[row[0]]["runs"].append(dict(zip(columns[1:], row[1:], strict=True)))
    for name, keys, reason in conn.execute(OPEN_REJECTIONS_SQL, {"syncs": names}).fetchall():
        found[name].update(open_rejections=keys, latest_reason=reason)
    return found


def describe(action: str, result: dict[str, Any]) -> str:
    lines = []
    for name, found in result.items():
        if action == "plan":
            lines.append(
                f"{name} -> {found['destination']} ({found['mode']}): {found['added']} to add, {found['changed']} to "
                f"change, {found['removed']} to remove, {found['unchanged']} unchanged, {found['invalid']} invalid, "
                f"{found['left_out']} left out (key shared or held by another profile); guard {found['guard']}"
            )
            lines += [f"  {change}: {', '.join(keys)}" for change, keys in found["sample"].items()]
        else:
            lines.append(f"{name}: {found['open_rejections']} rows refused and not yet taken")
            if found.get("latest_reason"):
                lines.append(f"  latest reason: {found['latest_reason']}")
            lines += [
                f"  {r['started_at']} {r['status']}: +{r['added']} ~{r['changed']} -{r['removed']} "
                f"({r['unchanged']} unchanged), {r['rejected']} rejected, {r['invalid'] or 0} invalid, "
                f"{r['left_out'] or 0} left out, {r['requests']} requests"
                + (f"; {r['message']}" if r["message"] else "")
                for r in found["runs"]
            ]
    return "\n".join(lines)

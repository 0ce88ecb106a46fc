"""`cdp privacy delete|access`: file a request in the inbox, by any identifier the person is known by.
`cdp privacy process`: carry out the waiting requests now, in a run of the `privacy_requests` job queued on the
running Dagster (its inbox sensor does the same on its own every 30 seconds), or in this process.
`cdp privacy status`: requests, their status history and what each reached (rows per layer, each destination's
actions), read beside running jobs. `--dry-run` on delete or access files nothing: it says whom the request would
reach and what it would erase or export, read from the warehouse as it is."""

from __future__ import annotations

import argparse
import getpass
import json
import os
from pathlib import Path
from typing import Any

from cdp_assets import launch
from cdp_assets.privacy import erasure, inbox, subject
from cdp_assets.privacy.subject import Identifier
from cdp_assets.warehouse_access import add_wait_option, connect, has_tables

IDENTIFIERS = {"email": "email", "phone": "phone", "user_id": "user_id", "record": "record", "profile_id": "profile"}
STATUS_SQL = """
SELECT r.request_id, r.kind, r.status, r.received_at, r.profiles, r.records, r.rows_deleted, r.candidates,
       r.export_path, r.detail,
       list({'status': e.status, 'at': e.changed_at, 'detail': e.detail} ORDER BY e.changed_at) AS history
FROM privacy.requests r
LEFT JOIN privacy.request_events e USING (request_id)
WHERE $request IS NULL OR r.request_id = $request
GROUP BY ALL
ORDER BY r.received_at DESC
LIMIT $limit
"""
ACTIONS_SQL = """
SELECT request_id, target, action, sum(items) AS items, bool_and(status = 'done') AS ok
FROM privacy.request_actions
WHERE list_contains($ids, request_id)
GROUP BY ALL
ORDER BY ALL
"""


def add_parsers(commands: argparse._SubParsersAction, default_warehouse: Path) -> None:
    privacy = commands.add_parser("privacy", help="file, process or follow deletion and access requests")
    privacy.add_argument("--warehouse", type=Path, default=Path(os.environ.get("CDP_WAREHOUSE", default_warehouse)))
    actions = privacy.add_subparsers(dest="action", required=True)
    for kind, text in (("delete", "delete the person everywhere, for good"), ("access", "export all held on them")):
        parser = actions.add_parser(kind, help=text)
        for name in IDENTIFIERS:
            help_text = "a source record as stream:id, e.g. stripe.customers:cus_123" if name == "record" else None
            parser.add_argument(f"--{name.replace('_', '-')}", dest=name, action="append", help=help_text)
        parser.add_argument("--dry-run", action="store_true",
                            help=f"file nothing: list whom it would reach and what it would {kind}")  # fmt: skip
        parser.add_argument("--json", action="store_true", help="with --dry-run: as JSON")
        add_wait_option(parser)
    process = actions.add_parser("process", help="carry out the waiting requests now")
    process.add_argument("--request", help="only this request")
    launch.add_writer_options(process)
    status = actions.add_parser("status", help="requests and their history")
    status.add_argument("--request", help="only this request")
    status.add_argument("--limit", type=int, default=20)
    status.add_argument("--json", action="store_true")
    add_wait_option(status)


def run(args: argparse.Namespace) -> None:
    os.environ["CDP_WAREHOUSE"] = str(args.warehouse)
    from resources import privacy_folders

    folder, _ = privacy_folders()
    if args.action in ("delete", "access"):
        given = [(kind, getattr(args, name) or []) for name, kind in IDENTIFIERS.items()]
        identifiers = [Identifier(kind, value) for kind, values in given for value in values]
        if not identifiers:
            raise SystemExit("name the person by at least one of --email, --phone, --user-id, --record, --profile-id")
        if args.dry_run:
            try:
                print(describe_preview(preview(args.warehouse, identifiers, args.wait_seconds), args.json))
            except ValueError as exc:
                raise SystemExit(f"cdp privacy {args.action}: {exc}") from None
            return
        try:
            request = inbox.file_request(folder, "deletion" if args.action == "delete" else "access", identifiers,
                                         f"cli:{getpass.getuser()}")  # fmt: skip
        except ValueError as exc:
            raise SystemExit(f"cdp privacy {args.action}: {exc}") from None
        print(f"{request.request_id} filed in {folder}; the inbox sensor picks it up (or: cdp privacy process)")
    elif args.action == "process":
        process_now(args)
    else:
        print(describe(status(args.warehouse, args.request, args.limit, args.wait_seconds), args.json))


def process_now(args: argparse.Namespace) -> None:
    from cdp_assets.privacy.requests import OP_NAME, RequestsConfig

    config = RequestsConfig(request_ids=[args.request] if args.request else [])
    what = f"privacy request {args.request}" if args.request else "the privacy requests waiting"
    launch.write(args, "privacy_requests", what, {"ops": {OP_NAME: {"config": config.model_dump()}}})
    print("see `cdp privacy status` for what became of each request")


def status(warehouse: Path, request_id: str | None, limit: int, wait_seconds: float) -> list[dict[str, Any]]:
    with connect(warehouse, wait_seconds) as conn:
        if not has_tables(conn, "privacy", "requests", "request_events"):  # the first request makes them
            return []
        cursor = conn.execute(STATUS_SQL, {"request": request_id, "limit": limit})
        names = [d[0] for d in cursor.description]
        requests = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
        for r in requests:
            r.update(rows_per_layer={}, destinations={}, files={})
        if requests and has_tables(conn, "privacy", "request_actions"):
            by_id = {r["request_id"]: r for r in requests}
            for request, target, action, items, ok in conn.execute(ACTIONS_SQL, {"ids": list(by_id)}).fetchall():
                reached(by_id[request], target, action, int(items), ok)
        return requests


def reached(request: dict[str, Any], target: str, action: str, items: int, ok: bool) -> None:
    """Count one action of a request: rows deleted from a table, summed per layer, or what a destination did."""
    from resources import DESTINATIONS

    layer = target.split(".", 1)[0]
    if action == "deleted" and "." in target and layer in erasure.LAYERS:
        request["rows_per_layer"][layer] = request["rows_per_layer"].get(layer, 0) + items
    elif target in DESTINATIONS:
        request["destinations"].setdefault(target, {})[action if ok else f"{action} (failed)"] = items
    elif action in ("compacted", "scrubbed"):  # the files rewritten so no freed block keeps the person
        request["files"][target] = action if ok else f"{action} (failed)"


def describe(requests: list[dict[str, Any]], as_json: bool) -> str:
    if as_json:
        return json.dumps(requests, default=str, indent=2)
    lines = []
    for r in requests:
        lines.append(f"{r['request_id']} {r['kind']}: {r['status']} ({r['detail'] or ''})")
        lines.append(f"  profiles {r['profiles'] or 0}, landed records {r['records'] or 0}; rows per layer: "
                     + (", ".join(f"{k} {v}" for k, v in r["rows_per_layer"].items()) or "none"))  # fmt: skip
        for name, actions in r["destinations"].items():
            lines.append(f"  {name}: " + ", ".join(f"{action} {items}" for action, items in actions.items()))
        if r["files"]:
            lines.append("  files: " + ", ".join(f"{name} {done}" for name, done in r["files"].items()))
        if r["candidates"]:
            lines.append(f"  {r['candidates']} profiles left out that may be the same person (--dry-run lists them)")
        lines += [f"  {h['at']} {h['status']} {h['detail'] or ''}" for h in r["history"] if h["status"] is not None]
    return "\n".join(lines) or "no requests"


def preview(warehouse: Path, identifiers: list[Identifier], wait_seconds: float) -> dict[str, Any]:
    """Whom a request naming `identifiers` would reach and what it would erase or export, resolved as processing
    resolves it, on a read-only connection (the subject tables are temporary)."""
    from cdp_assets.privacy.requests import source_records
    from cdp_assets.sync.specs import load as load_syncs

    with connect(warehouse, wait_seconds) as conn:
        subject.resolve(conn, identifiers, subject.existing_raw_tables(conn))
        profiles = [p for (p,) in conn.execute("SELECT profile_id FROM _subject_profiles ORDER BY 1").fetchall()]
        records: dict[str, int] = {}
        for record in source_records(conn):
            records[record["stream"]] = records.get(record["stream"], 0) + 1
        rows: dict[str, dict[str, int]] = {}
        for table, count in erasure.counted(conn).items():
            rows.setdefault(table.split(".", 1)[0], {})[table] = count
        held = conn.execute(f"SELECT sync, count(*) FROM sync.state WHERE {erasure.KEYS} GROUP BY 1 ORDER BY 1")\
            .fetchall() if has_tables(conn, "sync", "state") else []  # fmt: skip
        specs = load_syncs().syncs
        destinations = {sync: {"destination": specs[sync].destination if sync in specs else "unknown", "keys": n}
                        for sync, n in held}  # fmt: skip
        return {"profiles": profiles, "source_records": records, "rows": rows, "destinations": destinations,
                "candidates": subject.candidates(conn)}  # fmt: skip


def describe_preview(plan: dict[str, Any], as_json: bool) -> str:
    if as_json:
        return json.dumps(plan, indent=2)
    lines = [f"would reach {len(plan['profiles'])} profiles: {', '.join(plan['profiles']) or 'none'}",
             "source records: " + (", ".join(f"{s} {n}" for s, n in plan["source_records"].items()) or "none")]
    for layer, tables in plan["rows"].items():
        lines.append(f"{layer}: {sum(tables.values())} rows (" + ", ".join(f"{t} {n}" for t, n in tables.items()) + ")")
    lines += [f"destination {d['destination']} ({sync}): {d['keys']} keys" for sync, d in plan["destinations"].items()]
    lines += [f"not included, for review: {c['profile_id']} ({c['reason']})" for c in plan["candidates"]]
    return "\n".join([*lines, "nothing filed (--dry-run)"])

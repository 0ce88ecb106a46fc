"""`cdp privacy delete|access`: file a request in the inbox, by any identifier the person is known by.
`cdp privacy process`: carry out the waiting requests now, in a run of the `privacy_requests` job queued on the
running Dagster (its inbox sensor does the same on its own every 30 seconds), or in this process.
`cdp privacy status`: requests and their status history, read beside running jobs."""

from __future__ import annotations

import argparse
import getpass
import json
import os
from pathlib import Path
from typing import Any

from cdp_assets import launch
from cdp_assets.privacy import inbox
from cdp_assets.privacy.subject import Identifier
from cdp_assets.warehouse_access import add_wait_option, connect, has_tables

IDENTIFIERS = {"email": "email", "phone": "phone", "user_id": "user_id", "record": "record", "profile_id": "profile"}
STATUS_SQL = """
SELECT r.request_id, r.kind, r.status, r.received_at, r.profiles, r.records, r.rows_deleted, r.export_path, r.detail,
       list({'status': e.status, 'at': e.changed_at, 'detail': e.detail} ORDER BY e.changed_at) AS history
FROM privacy.requests r
LEFT JOIN privacy.request_events e USING (request_id)
WHERE $request IS NULL OR r.request_id = $request
GROUP BY ALL
ORDER BY r.received_at DESC
LIMIT $limit
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
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def describe(requests: list[dict[str, Any]], as_json: bool) -> str:
    if as_json:
        return json.dumps(requests, default=str, indent=2)
    lines = []
    for r in requests:
        lines.append(f"{r['request_id']} {r['kind']}: {r['status']} ({r['detail'] or ''})")
        lines += [f"  {h['at']} {h['status']} {h['detail'] or ''}" for h in r["history"] if h["status"] is not None]
    return "\n".join(lines) or "no requests"

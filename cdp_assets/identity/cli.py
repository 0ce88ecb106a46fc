"""`cdp profile ...`: explain a profile, or add a "never link" rule to undo a wrong merge.
`cdp identity train`: retrain the probabilistic matching model on a warehouse's records."""

from __future__ import annotations

import argparse
import getpass
import json
import os
from pathlib import Path

import duckdb

from cdp_assets.identity import explain, matching, rules

LOOKUPS = ("email", "phone", "user_id", "device_id", "profile_id", "record")


def add_parsers(commands: argparse._SubParsersAction, default_warehouse: Path) -> None:
    warehouse = Path(os.environ.get("CDP_WAREHOUSE", default_warehouse))
    identity = commands.add_parser("identity", help="retrain the probabilistic matching model")
    identity.add_argument("--warehouse", type=Path, default=warehouse)
    identity.add_argument("action", choices=["train"])
    identity.add_argument("--model", type=Path, default=matching.MODEL_PATH, help="where to save the model")
    profile = commands.add_parser("profile", help="explain a profile or undo a wrong merge")
    profile.add_argument("--warehouse", type=Path, default=warehouse)
    actions = profile.add_subparsers(dest="action", required=True)
    show = actions.add_parser("explain", help="the identifiers, links and history of a profile")
    which = show.add_mutually_exclusive_group(required=True)
    for lookup in LOOKUPS:
        help_text = "a record as stream:id, e.g. hubspot.contacts:101" if lookup == "record" else None
        which.add_argument(f"--{lookup.replace('_', '-')}", dest=lookup, help=help_text)
    show.add_argument("--json", action="store_true", help="print JSON instead of text")
    never = actions.add_parser("never-link", help="keep two identifiers or records apart from the next run on")
    never.add_argument("a", help="type:value, e.g. email:ann@example.org or hubspot_contact:101")
    never.add_argument("b", nargs="?", help="the other side; leave out to stop `a` linking anything")
    never.add_argument("--reason", required=True)


def run(args: argparse.Namespace) -> None:
    if args.command == "identity":
        with duckdb.connect(str(args.warehouse)) as conn:
            records = matching.train_from_warehouse(conn, args.model)
        print(f"model trained on {records:,} records and saved to {args.model}")
        return
    identity_rules = rules.load()
    if args.action == "never-link":
        with duckdb.connect(str(args.warehouse)) as conn:
            explain.add_never_link(conn, identity_rules, args.a, args.b, args.reason, getpass.getuser())
        print("rule added; the next identity_graph run applies it and logs the split in identity.merge_log")
        return
    lookup = next(name for name in LOOKUPS if getattr(args, name))
    raw = getattr(args, lookup)
    if lookup == "record":
        stream, _, record_id = raw.partition(":")
        id_type, value = identity_rules.record_type(stream), record_id
        if id_type is None:
            raise SystemExit(f"{stream!r} has no person-level records")
    else:
        id_type, value = lookup, explain.lookup_value(lookup, raw, identity_rules)
    with duckdb.connect(str(args.warehouse), read_only=True) as conn:
        profile_id = explain.find_profile(conn, id_type, value) if value else None
        if profile_id is None:
            raise SystemExit(f"no profile holds {lookup} {raw!r}")
        result = explain.explain(conn, profile_id)
    if args.json:
        print(json.dumps(result.__dict__, default=str, indent=2))
    else:
        print(describe(result))


def describe(result: explain.Explanation) -> str:
    lines = [f"profile {result.profile_id}: {len(result.identifiers)} identifiers, {len(result.edges)} links"]
    lines += [f"  {row['id_type']:16} {row['value']}" for row in result.identifiers]
    lines.append("links (why these belong together):")
    for edge in result.edges:
        how = edge["method"] if edge["probability"] is None else f"{edge['method']} p={edge['probability']:.4f}"
        lines.append(
            f"  {edge['type_a']}:{edge['value_a']} ~ {edge['type_b']}:{edge['value_b']}  [{how}; "
            f"{edge['records']} record(s) in {', '.join(edge['streams']) or 'splink'}]"
        )
    if result.refused:
        lines.append("links refused:")
        lines += [f"  {r['type_a']}:{r['value_a']} ~ {r['type_b']}:{r['value_b']}  ({r['refused_by']})"
                  for r in result.refused]
    if result.history:
        lines.append("history:")
        lines += [f"  {h['logged_at']} {h['action']} {h['profile_id']} / {h['other_profile_id']}: {h['cause']}"
                  for h in result.history]
    return "\n".join(lines)

"""`cdp profile ...`: explain a profile, list a few to try, or add a "never link" rule to undo a wrong merge.
`cdp identity train`: retrain the probabilistic matching model on a warehouse's records; `cdp identity link` and
`link-check`: the same engine on any person file (link_cli.py).

Reads open the warehouse read-only beside running jobs (warehouse_access); the never-link rule is written by
a run of the `never_link` job, queued on the running Dagster like any other run."""

from __future__ import annotations

import argparse
import getpass
import json
import os
from pathlib import Path
from typing import Any

from cdp_assets import launch
from cdp_assets.identity import explain, link_cli, matching, rules
from cdp_assets.identity.never_link import OP_NAME, NeverLinkConfig
from cdp_assets.warehouse_access import add_wait_option, connect

LOOKUPS = ("email", "phone", "user_id", "device_id", "profile_id", "record")
SAMPLE_FIELDS = ("profile_id", "email", "phone", "record")
# Profiles with an email, a phone when they have one and a source record, the most records first: the ones
# whose explanation shows links across sources.
SAMPLE_SQL = """
WITH emails AS (
    SELECT profile_id, min(value) AS email FROM identity.identifier_profiles WHERE id_type = 'email' AND NOT shared
    GROUP BY ALL
), phones AS (
    SELECT profile_id, min(value) AS phone FROM identity.identifier_profiles WHERE id_type = 'phone' AND NOT shared
    GROUP BY ALL
), records AS (
    SELECT profile_id, min(stream || ':' || record_id) AS record, count(*) AS records
    FROM identity.record_profiles GROUP BY ALL
)
SELECT profile_id, email, phone, record
FROM emails JOIN records USING (profile_id) LEFT JOIN phones USING (profile_id)
ORDER BY records DESC, profile_id
LIMIT $limit
"""


def add_parsers(commands: argparse._SubParsersAction, default_warehouse: Path) -> None:
    warehouse = Path(os.environ.get("CDP_WAREHOUSE", default_warehouse))
    identity_parser = commands.add_parser("identity", help="retrain the matching model, or link a person file")
    identity_actions = identity_parser.add_subparsers(dest="action", required=True)
    identity = identity_actions.add_parser("train", help="retrain the probabilistic matching model")
    identity.add_argument("--warehouse", type=Path, default=warehouse)
    identity.add_argument("--model", type=Path, default=matching.MODEL_PATH, help="where to save the model")
    identity.add_argument("--world", type=Path, help="the sandbox world the warehouse pulled, recorded in the model "
                                                     "(default: the `sandbox` folder beside the warehouse, if any)")
    add_wait_option(identity)
    link_cli.add_parsers(identity_actions)
    profile = commands.add_parser("profile", help="explain a profile, list a few, or undo a wrong merge")
    profile.add_argument("--warehouse", type=Path, default=warehouse)
    actions = profile.add_subparsers(dest="action", required=True)
    show = actions.add_parser("explain", help="the identifiers, links and history of a profile")
    which = show.add_mutually_exclusive_group(required=True)
    for lookup in LOOKUPS:
        help_text = "a record as stream:id, e.g. hubspot.contacts:101" if lookup == "record" else None
        which.add_argument(f"--{lookup.replace('_', '-')}", dest=lookup, help=help_text)
    show.add_argument("--json", action="store_true", help="print JSON instead of text")
    add_wait_option(show)
    sample = actions.add_parser("sample", help="a few profiles to explain: id, email, phone and a source record")
    sample.add_argument("--limit", type=int, default=5)
    sample.add_argument("--field", choices=SAMPLE_FIELDS, help="print only this field, one value a line")
    add_wait_option(sample)
    never = actions.add_parser("never-link", help="keep two identifiers or records apart from the next run on")
    never.add_argument("a", help="type:value, e.g. email:ann@example.org or hubspot_contact:101")
    never.add_argument("b", nargs="?", help="the other side; leave out to stop `a` linking anything")
    never.add_argument("--reason", required=True)
    launch.add_writer_options(never)


def run(args: argparse.Namespace) -> None:
    if args.command == "identity" and args.action in link_cli.ACTIONS:
        link_cli.run(args)
    elif args.command == "identity":
        trained_on = trained_from(args.warehouse, args.world)
        with connect(args.warehouse, args.wait_seconds) as conn:
            records = matching.train_from_warehouse(conn, args.model, trained_on)
        print(f"model trained on {records:,} records ({trained_on['source']}) and saved to {args.model}")
    elif args.action == "never-link":
        never_link(args)
    elif args.action == "sample":
        with connect(args.warehouse, args.wait_seconds) as conn:
            cursor = conn.execute(SAMPLE_SQL, {"limit": args.limit})
            rows = [dict(zip(SAMPLE_FIELDS, row, strict=True)) for row in cursor.fetchall()]
        print(describe_sample(rows, args.field))
    else:
        show(args)


def trained_from(warehouse: Path, world: Path | None) -> dict[str, Any]:
    """What the model is trained on: the sandbox world the warehouse pulled (seed, size, hardness) when there is
    one, else the warehouse itself."""
    from cdp_assets.identity.evaluation import World

    world = world or warehouse.parent / "sandbox"
    if not (world / "world.db").exists():
        return {"source": "warehouse", "warehouse": str(warehouse)}
    built = World.read(world)
    return {"source": "world", "seed": built.seed, "people": built.people, "hardness": built.hardness}


def never_link(args: argparse.Namespace) -> None:
    identity_rules = rules.load()
    for side in filter(None, (args.a, args.b)):
        try:  # refused here, at once, rather than in the run
            explain.node(side, identity_rules)
        except ValueError as exc:
            raise SystemExit(str(exc)) from None
    config = NeverLinkConfig(a=args.a, b=args.b, reason=args.reason, added_by=getpass.getuser())
    launch.write(args, "never_link", f"never link {args.a} ~ {args.b or 'anything'}",
                 {"ops": {OP_NAME: {"config": config.model_dump()}}})  # fmt: skip
    print("once the rule is in, the next identity_graph run applies it and logs the split in identity.merge_log")


def show(args: argparse.Namespace) -> None:
    identity_rules = rules.load()
    lookup = next(name for name in LOOKUPS if getattr(args, name))
    raw = getattr(args, lookup)
    if lookup == "record":
        stream, _, record_id = raw.partition(":")
        id_type, value = identity_rules.record_type(stream), record_id
        if id_type is None:
            raise SystemExit(f"{stream!r} has no person-level records")
    else:
        id_type, value = lookup, explain.lookup_value(lookup, raw, identity_rules)
    with connect(args.warehouse, args.wait_seconds) as conn:
        profile_id = explain.find_profile(conn, id_type, value) if value else None
        holders = explain.shared_holders(conn, id_type, value) if value and profile_id is None else []
        if len(holders) == 1:
            profile_id = holders[0]
        elif holders:
            raise SystemExit(f"{lookup} {raw!r} is a shared value held by {len(holders)} profiles "
                             f"({', '.join(holders[:5])}{', ...' if len(holders) > 5 else ''}); "
                             "explain one with --profile-id")
        if profile_id is None:
            raise SystemExit(f"no profile holds {lookup} {raw!r}; `cdp profile sample` lists a few that exist")
        result = explain.explain(conn, profile_id)
    if args.json:
        print(json.dumps(result.__dict__, default=str, indent=2))
    else:
        print(describe(result))


def describe_sample(rows: list[dict[str, str | None]], field: str | None) -> str:
    if field:
        return "\n".join(str(row[field] or "") for row in rows)
    lines = [f"{'profile_id':26} {'email':36} {'phone':16} record"]
    lines += [f"{r['profile_id']:26} {r['email']:36} {r['phone'] or '':16} {r['record']}" for r in rows]
    lines.append("explain one: cdp profile explain --email EMAIL (or --phone, --record, --profile-id)")
    return "\n".join(lines)


def describe(result: explain.Explanation) -> str:
    lines = [f"profile {result.profile_id}: {len(result.identifiers)} identifiers, {len(result.edges)} links"]
    lines += [f"  {row['id_type']:16} {row['value']}{'  (shared)' if row.get('shared') else ''}"
              for row in result.identifiers]
    lines.append("links (why these belong together):")
    for edge in result.edges:
        how = edge["method"] if edge["probability"] is None else f"{edge['method']} p={edge['probability']:.4f}"
        lines.append(
            f"  {edge['type_a']}:{edge['value_a']} ~ {edge['type_b']}:{edge['value_b']}  [{how}; "
            f"{edge['records']} record(s) in {', '.join(edge['streams']) or 'splink'}]"
        )
    if result.shared:
        lines.append("shared values (several people use them: they link no one; the other profiles holding them):")
        for value in result.shared:
            others = value["other_profiles"]
            more = value["profiles"] - 1 - len(others)
            lines.append(f"  {value['id_type']}:{value['value']}  ({value['reason']}; {value['records']} record(s)) "
                         f"also on: {', '.join(others) or 'no other profile'}{f' and {more} more' if more > 0 else ''}")
    if result.refused:
        lines.append("links refused (rule: chain = the ends of a chain disagree, limit, never_link, shared):")
        for r in result.refused:
            how = "" if r["probability"] is None else f" p={r['probability']:.4f}"
            lines.append(f"  {r['type_a']}:{r['value_a']} ~ {r['type_b']}:{r['value_b']}  ({r['refused_by']}{how})")
    if result.traits:
        lines.append("golden record (rule: source record, changed at the source):")
        lines += [f"  {t['trait']:24} {t['value']}  ({t['rule']}: {t['stream']}:{t['record_id']}, {t['changed_at']})"
                  for t in result.traits]  # fmt: skip
    if result.history:
        lines.append("history:")
        lines += [f"  {h['logged_at']} {h['action']} {h['profile_id']} / {h['other_profile_id']}: {h['cause']}"
                  for h in result.history]
    return "\n".join(lines)

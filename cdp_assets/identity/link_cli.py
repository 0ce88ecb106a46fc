"""`cdp identity link` (link.py) and `cdp identity link-check` (link_check.py): parsers and runs."""

from __future__ import annotations

import argparse
from pathlib import Path

import duckdb

from cdp_assets.identity import link, link_check

ACTIONS = ("link", "link-check")


def add_parsers(actions: argparse._SubParsersAction) -> None:
    command = actions.add_parser("link", help="resolve the people of any person file (csv or parquet)")
    command.add_argument("--input", type=Path, required=True, help="the file, .csv or .parquet")
    command.add_argument("--map", required=True, help="column=field,... fields: record_id, the person fields "
                         "(first_name, last_name, full_name, date_of_birth, street_address, postal_code, city, "
                         "country, company, email, phone) and identifier types (user_id, national_id, ...); "
                         "several columns of one field are joined by a space")
    command.add_argument("--train", action="store_true", help="train the model on the file first")
    command.add_argument("--model", type=Path, help="model to score with (default: the shipped one), or with "
                         "--train where to save it (default: OUTPUT/model.json)")
    command.add_argument("--output", type=Path, default=Path("link-output"), help="folder for clusters and pairs")
    command.add_argument("--format", choices=link.FORMATS, default="csv", dest="output_format")
    check = actions.add_parser("link-check", help="`link --train` against Splink alone on a generated person file")
    check.add_argument("--people", type=int, default=10_000, help="people in the generated file")
    check.add_argument("--seed", type=int, default=3)
    check.add_argument("--febrl", action="store_true", help="FEBRL4 (held out: an independent check) instead")
    check.add_argument("--output", type=Path, default=Path("data/link-check"), help="folder for files and results")
    check.add_argument("--markdown", type=Path, help="also write the table to this file")


def run(args: argparse.Namespace) -> None:
    if args.action == "link":
        try:
            with duckdb.connect() as conn:
                linked = link.run(conn, args.input, link.parse_map(args.map), args.output, train=args.train,
                                  model=args.model, output_format=args.output_format)
        except link.LinkError as exc:
            raise SystemExit(f"cdp identity link: {exc}") from None
        merged = int((linked.pairs["decision"] == "merge").sum())
        print(f"{linked.records:,} records in {linked.clusters['cluster_id'].nunique():,} clusters; "
              f"{len(linked.pairs):,} pairs scored ({merged:,} merged) -> {args.output}")
        return
    command = "cdp identity link-check " + (
        "--febrl" if args.febrl else f"--people {args.people} --seed {args.seed}"
    )
    try:
        described, scores = link_check.check(args.people, args.seed, args.output, use_febrl=args.febrl)
    except link.LinkError as exc:  # an empty generated file, FEBRL4's package missing
        raise SystemExit(f"cdp identity link-check: {exc}") from None
    table = link_check.markdown(described, scores, command)
    print(table)
    if args.markdown:
        args.markdown.write_text(table)

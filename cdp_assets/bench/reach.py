"""How far the last run's changes reach in the identity graph: what a graph updated only where it changed would redo.

`python -m cdp_assets.bench.reach --warehouse data/bench/100000/warehouse.duckdb` takes the records of the identity
sources that the last run landed and the profiles holding them, and closes that region as an incremental run of the
graph does (identity/increment.py: the profiles holding a value its records carry, the other ends of its refused
links and review pairs), without the profiles Splink would pair with it. It prints the region's profiles, person
records and events against the whole graph's.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import duckdb

from cdp_assets.identity import increment, rules
from cdp_assets.raw import raw_table


@dataclass(frozen=True)
class Reach:
    changed_records: int
    rounds: int
    profiles: tuple[int, int]  # (in the region, in the graph)
    person_records: tuple[int, int]
    events: tuple[int, int]


def reach(conn: duckdb.DuckDBPyConnection) -> Reach:
    """The region of the last run's changes (TEMP `_region_profiles`, identity/increment.py), and its size against
    the graph's."""
    identity_rules = rules.load()
    streams = [source.stream for source in identity_rules.sources]
    present = {row[0] for row in conn.execute("SELECT table_schema || '.' || table_name "
                                              "FROM information_schema.tables WHERE table_schema = 'raw'").fetchall()}
    tables = {stream: raw_table(*stream.split(".", 1)) for stream in streams}
    landed = " UNION ALL ".join(
        f"SELECT $stream_{i} AS stream, record_id, run_id, landing_id FROM {table}"
        for i, (stream, table) in enumerate(tables.items()) if table in present
    )
    params = {f"stream_{i}": stream for i, stream in enumerate(tables)}
    conn.execute(f"CREATE OR REPLACE TEMP TABLE _reach_landed AS {landed}", params)
    conn.execute("""
        CREATE OR REPLACE TEMP TABLE _reach_changed AS SELECT DISTINCT stream, record_id FROM _reach_landed
        WHERE run_id = (SELECT arg_max(run_id, landing_id) FROM _reach_landed)""")
    rounds = increment.region_of(conn, "SELECT stream, record_id FROM _reach_changed")
    person = identity_rules.person_streams
    records = ("SELECT count(*) FILTER (WHERE list_contains($person, stream)), "
               "count(*) FILTER (WHERE NOT list_contains($person, stream)) FROM identity.record_profiles")
    inside = conn.execute(records + f" WHERE profile_id IN (FROM {increment.REGION})", {"person": person}).fetchall()[0]
    everywhere = conn.execute(records, {"person": person}).fetchall()[0]
    return Reach(
        changed_records=_count(conn, "FROM _reach_changed"), rounds=rounds,
        profiles=(_count(conn, f"FROM {increment.REGION}"),
                  _count(conn, "SELECT DISTINCT profile_id FROM identity.record_profiles")),
        person_records=(inside[0], everywhere[0]), events=(inside[1], everywhere[1]),
    )


def _count(conn: duckdb.DuckDBPyConnection, relation: str) -> int:
    return conn.execute(f"SELECT count(*) FROM ({relation})").fetchall()[0][0]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cdp_assets.bench.reach", description=__doc__)
    parser.add_argument("--warehouse", type=Path, required=True)
    args = parser.parse_args(argv)
    with duckdb.connect(str(args.warehouse), read_only=True) as conn:
        found = reach(conn)
    print(f"{found.changed_records:,} records landed by the last run; region closed in {found.rounds} rounds")
    for name, (inside, everywhere) in (("profiles", found.profiles), ("person records", found.person_records),
                                       ("events", found.events)):
        print(f"{name}: {inside:,} of {everywhere:,} ({inside / max(everywhere, 1):.1%})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

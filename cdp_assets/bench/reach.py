"""How far the last run's changes reach in the identity graph: what a graph updated only where it changed would redo.

`python -m cdp_assets.bench.reach --warehouse data/bench/100000/warehouse.duckdb` takes the records of the identity
sources that the last run landed and the profiles holding them, and closes that region over what can change with
them: every profile holding a shared value a profile of the region holds (a shared value is judged on all its
holders, and its events go to the first), and the profile at the other end of a refused link or a review pair
(the union-find and the chain check weigh both ends together), until nothing more joins. It prints the region's
profiles, person records and events against the whole graph's. Pairs a changed record would newly score with
records anywhere are not in it: finding them takes Splink.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import duckdb

from cdp_assets.identity import rules
from cdp_assets.raw import raw_table

REGION = "_reach_region"  # TEMP (profile_id): the closed region
# Each step: the profiles it adds to the region, from the region as it stands.
CLOSURE = {
    "shared values": """
        SELECT o.profile_id FROM identity.identifier_profiles s
        JOIN _reach_region USING (profile_id)
        JOIN identity.identifier_profiles o ON o.id_type = s.id_type AND o.value = s.value
        WHERE s.shared AND o.shared""",
    "refused links": """
        SELECT CASE WHEN profile_a IN (FROM _reach_region) THEN profile_b ELSE profile_a END
        FROM identity.refused_links
        WHERE profile_a IN (FROM _reach_region) OR profile_b IN (FROM _reach_region)""",
    "review pairs": """
        SELECT CASE WHEN profile_l IN (FROM _reach_region) THEN profile_r ELSE profile_l END
        FROM identity.match_review
        WHERE profile_l IN (FROM _reach_region) OR profile_r IN (FROM _reach_region)""",
}
MAX_ROUNDS = 100


@dataclass(frozen=True)
class Reach:
    changed_records: int
    rounds: int
    profiles: tuple[int, int]  # (in the region, in the graph)
    person_records: tuple[int, int]
    events: tuple[int, int]


def reach(conn: duckdb.DuckDBPyConnection) -> Reach:
    """The region of the last run's changes (TEMP `_reach_region`), and its size against the graph's."""
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
    conn.execute(f"CREATE OR REPLACE TEMP TABLE {REGION} AS SELECT DISTINCT profile_id "
                 "FROM identity.record_profiles JOIN _reach_changed USING (stream, record_id)")
    rounds = close(conn)
    person = identity_rules.person_streams
    records = ("SELECT count(*) FILTER (WHERE list_contains($person, stream)), "
               "count(*) FILTER (WHERE NOT list_contains($person, stream)) FROM identity.record_profiles")
    inside = conn.execute(records + f" WHERE profile_id IN (FROM {REGION})", {"person": person}).fetchall()[0]
    everywhere = conn.execute(records, {"person": person}).fetchall()[0]
    return Reach(
        changed_records=_count(conn, "FROM _reach_changed"), rounds=rounds,
        profiles=(_count(conn, f"FROM {REGION}"),
                  _count(conn, "SELECT DISTINCT profile_id FROM identity.record_profiles")),
        person_records=(inside[0], everywhere[0]), events=(inside[1], everywhere[1]),
    )


def close(conn: duckdb.DuckDBPyConnection) -> int:
    """Add to `_reach_region` every profile its CLOSURE steps join, until none does; returns the rounds taken."""
    rounds = 0
    while rounds < MAX_ROUNDS:
        rounds += 1
        before = _count(conn, f"FROM {REGION}")
        for step in CLOSURE.values():
            conn.execute(f"INSERT INTO {REGION} SELECT DISTINCT p FROM ({step}) joined(p) "
                         f"WHERE p IS NOT NULL AND p NOT IN (FROM {REGION})")
        if _count(conn, f"FROM {REGION}") == before:
            return rounds
    return rounds


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

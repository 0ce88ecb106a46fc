"""The nightly comparison: the identity graph as the runs kept it, against one rebuilt from scratch.

Between nightly runs the graph is resolved only where each run's changes reach (increment.py), keeping the ids of
the run before; the partition itself must not depend on that history. Nightly, before the rebase, the graph is
brought up to date where that run's changes reach, as an hourly run would, then computed again with no earlier
state (on the matcher's basis the kept graph was scored on, basis.py) and compared pair by pair with the kept graph:
any pair together in one and apart in the other is drift (a region that left out what a whole run would weigh, a
stable-id bug, a never-link rule applied differently). The rebase then resolves the whole graph on a basis counted
again. With no graph the hourly runs kept (a first build; new identity code, rules or model), the rebased graph is
compared instead.

Both sides are the graph's nodes: every identifier value, a person record's own id among them. The kept
profile of a person record is read from `identity.record_profiles`, which the later layers read, and that of
any other identifier from `identity.identifier_profiles`. Product events are left out of both sides: an event
owns no node, and `write_graph.sql` gives it the profile of its strongest identifier, so it is grouped
differently only if its identifiers are, which the comparison sees (those of events that reach no person
record too). Comparing the events themselves would cost a join the size of the event stream (8.6 million rows
at a million people) and show nothing more about grouping.
"""

import duckdb
import numpy as np
import pandas as pd

from cdp_assets.identity import resolution, rules

CHECK_NAME = "matches_rebuild_from_scratch"
DESCRIPTION = (
    "Nightly, before the rebase: the identity graph as the hourly runs kept it (resolved where their changes reached, "
    "and where this run's reach), against one partitioned again from scratch on the same basis, with no earlier "
    "run's ids, over every identifier (a person record's own id among them; events follow their identifiers). "
    "Passes when "
    "both group every identifier alike. Warns (never blocks; profiles stay usable) when a pair is together in one "
    "and apart in the other, or an identifier is in one only: an hourly region that missed what a whole run "
    "weighs, a stable-id or never-link bug. Never fails. Do: "
    "`cdp profile explain --profile-id` on the profiles the metadata names, then report it with the run id."
)
SAMPLE_PROFILES = 5  # kept profiles named in the metadata when the groupings differ
COMPARE_SQL = """
CREATE OR REPLACE TEMP TABLE _kept AS
SELECT id_type, value, profile_id FROM identity.identifier_profiles
WHERE id_type NOT IN (SELECT id_type FROM _record_types) AND NOT shared
UNION ALL
SELECT t.id_type, p.record_id, p.profile_id FROM identity.record_profiles p JOIN _record_types t USING (stream);
CREATE OR REPLACE TEMP TABLE _rebuilt AS
SELECT n.id_type, n.value, l.label FROM _nodes n JOIN _labels l USING (idx) WHERE NOT l.shared;
CREATE OR REPLACE TEMP TABLE _cells AS
SELECT r.label, k.profile_id, count(*) AS n FROM _rebuilt r JOIN _kept k USING (id_type, value) GROUP BY ALL;
"""
SUMMARY_SQL = """
WITH rebuilt AS (SELECT label, sum(n) AS n, count(*) AS profiles FROM _cells GROUP BY label),
kept AS (SELECT profile_id, sum(n) AS n, count(*) AS labels FROM _cells GROUP BY profile_id),
drifted AS (
    SELECT DISTINCT c.profile_id FROM _cells c JOIN rebuilt r USING (label) JOIN kept k USING (profile_id)
    WHERE r.profiles > 1 OR k.labels > 1
)
SELECT
    (SELECT coalesce(sum(n), 0) FROM _cells) AS nodes,
    (SELECT count(*) FROM _rebuilt ANTI JOIN _kept USING (id_type, value)) AS only_rebuilt,
    (SELECT count(*) FROM _kept ANTI JOIN _rebuilt USING (id_type, value)) AS only_kept,
    (SELECT coalesce(sum(n * (n - 1) // 2), 0) FROM _cells) AS pairs_in_both,
    (SELECT coalesce(sum(n * (n - 1) // 2), 0) FROM rebuilt) AS pairs_rebuilt,
    (SELECT coalesce(sum(n * (n - 1) // 2), 0) FROM kept) AS pairs_kept,
    (SELECT count(*) FROM rebuilt) AS rebuilt_profiles,
    (SELECT count(*) FROM kept) AS kept_profiles,
    (SELECT count(*) FROM drifted) AS drifted_profiles,
    (SELECT coalesce(string_agg(profile_id, ', ' ORDER BY profile_id), '')
     FROM (SELECT profile_id FROM drifted ORDER BY profile_id LIMIT $sample)) AS sample_profiles
"""


def compare(conn: duckdb.DuckDBPyConnection, identity_rules: rules.Rules) -> dict[str, float | int | str]:
    """The graph partitioned again from identity.identifiers alone, against the kept one, node by node."""
    # On the graph's kept basis (basis.py); leaves its nodes, with their idx, in temp table _nodes.
    built = resolution.partition(conn, identity_rules, rebase=False)
    frames = {
        # a shared value is on every profile holding it
        "_labels": pd.DataFrame({"idx": np.arange(len(built.labels)), "label": built.labels, "shared": built.shared}),
        "_record_types": pd.DataFrame(
            [(t.name, t.record_of) for t in identity_rules.types.values() if t.record_of], columns=["id_type", "stream"]
        ),
    }
    for name, frame in frames.items():
        conn.register(name, frame)
    conn.execute(COMPARE_SQL)
    cursor = conn.execute(SUMMARY_SQL, {"sample": SAMPLE_PROFILES})
    row = dict(zip([d[0] for d in cursor.description], cursor.fetchall()[0], strict=True))
    for name in frames:
        conn.unregister(name)
    row["pairs_only_rebuilt"] = row["pairs_rebuilt"] - row["pairs_in_both"]
    row["pairs_only_kept"] = row["pairs_kept"] - row["pairs_in_both"]
    row["drift"] = row["pairs_only_rebuilt"] + row["pairs_only_kept"] + row["only_rebuilt"] + row["only_kept"]
    kept = row["kept_profiles"]
    row["identical_share"] = (kept - row["drifted_profiles"]) / kept if kept else 1.0
    return {name: value if isinstance(value, str | float) else int(value) for name, value in row.items()}

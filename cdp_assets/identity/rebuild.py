"""The nightly comparison: the identity graph rebuilt from scratch against the one kept up run by run.

Each run resolves profiles from the identifiers it has, keeping the ids of the run before; the
partition itself must not depend on that history. Nightly, the components are computed again with no
earlier state and compared pair by pair with `identity.record_profiles`: any pair of records together in
one and apart in the other is drift (a stable-id bug, a never-link rule applied differently).
"""

import duckdb
import pandas as pd
from dagster import AssetCheckExecutionContext, AssetCheckResult, AssetChecksDefinition, AssetCheckSeverity, asset_check

from cdp_assets.identity import resolution, rules
from cdp_assets.identity.assets import GRAPH_KEY

CHECK_NAME = "matches_rebuild_from_scratch"
COMPARE_SQL = """
WITH both_sides AS (
    SELECT r.label, p.profile_id FROM _rebuilt r JOIN identity.record_profiles p USING (stream, record_id)
),
cells AS (SELECT label, profile_id, count(*) AS n FROM both_sides GROUP BY ALL),
rebuilt AS (SELECT label, sum(n) AS n, count(*) AS profiles FROM cells GROUP BY label),
kept AS (SELECT profile_id, sum(n) AS n, count(*) AS labels FROM cells GROUP BY profile_id)
SELECT
    (SELECT count(*) FROM both_sides) AS records,
    (SELECT count(*) FROM _rebuilt ANTI JOIN identity.record_profiles USING (stream, record_id)) AS only_rebuilt,
    (SELECT count(*) FROM identity.record_profiles ANTI JOIN _rebuilt USING (stream, record_id)) AS only_kept,
    (SELECT coalesce(sum(n * (n - 1) / 2), 0) FROM cells) AS pairs_in_both,
    (SELECT coalesce(sum(n * (n - 1) / 2), 0) FROM rebuilt) AS pairs_rebuilt,
    (SELECT coalesce(sum(n * (n - 1) / 2), 0) FROM kept) AS pairs_kept,
    (SELECT count(*) FROM rebuilt) AS rebuilt_profiles,
    (SELECT count(*) FROM kept) AS kept_profiles,
    (SELECT count(*) FROM cells c JOIN rebuilt r USING (label) JOIN kept k USING (profile_id)
     WHERE r.profiles = 1 AND k.labels = 1) AS identical_profiles
"""


def compare(conn: duckdb.DuckDBPyConnection, identity_rules: rules.Rules) -> dict[str, float]:
    built = resolution.partition(conn, identity_rules)
    record_of = {t.name: t.record_of for t in identity_rules.types.values() if t.record_of}
    records = built.nodes[built.nodes["id_type"].isin(list(record_of))]
    frame = pd.DataFrame(
        {"stream": records["id_type"].map(record_of), "record_id": records["value"], "label": records["label"]}
    )
    conn.register("_rebuilt_view", frame)
    conn.execute("CREATE OR REPLACE TEMP TABLE _rebuilt AS SELECT * FROM _rebuilt_view")
    conn.unregister("_rebuilt_view")
    cursor = conn.execute(COMPARE_SQL)
    row = dict(zip([d[0] for d in cursor.description], cursor.fetchone(), strict=True))
    row["pairs_only_rebuilt"] = row["pairs_rebuilt"] - row["pairs_in_both"]
    row["pairs_only_kept"] = row["pairs_kept"] - row["pairs_in_both"]
    row["identical_share"] = row["identical_profiles"] / row["kept_profiles"] if row["kept_profiles"] else 1.0
    return {name: float(value) if name == "identical_share" else int(value) for name, value in row.items()}


def build_rebuild_check() -> AssetChecksDefinition:
    @asset_check(
        asset=GRAPH_KEY,
        name=CHECK_NAME,
        required_resource_keys={"warehouse"},
        description="Nightly: the identity graph computed again from scratch, with no earlier run's ids, groups "
        "every record as the kept graph does (pairs of records together in one and apart in the other are drift).",
    )
    def matches_rebuild_from_scratch(context: AssetCheckExecutionContext) -> AssetCheckResult:
        with context.resources.warehouse.get_connection() as conn:
            found = compare(conn, rules.load())
        drift = found["pairs_only_rebuilt"] + found["pairs_only_kept"] + found["only_rebuilt"] + found["only_kept"]
        return AssetCheckResult(passed=drift == 0, severity=AssetCheckSeverity.WARN, metadata=found)

    return matches_rebuild_from_scratch

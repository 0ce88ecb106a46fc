"""Splink on its own, for the benchmark's comparison: the same person records, the same trained model and merge
threshold, but no deterministic graph in front, so Splink must also find the pairs that share an email or a phone.

Its clusters go to TEMP `_splink_alone_profiles`, shaped like identity.record_profiles so that one evaluation
scores both.
"""

from __future__ import annotations

import duckdb
from splink import block_on
from splink.blocking_rule_library import And, CustomRule

from cdp_assets.identity import matching
from cdp_assets.identity.rules import load as load_identity_rules

ALONE_PROFILES = "_splink_alone_profiles"
ALONE_RECORDS = "_splink_alone_records"  # the match records without the graph's cluster, which Splink's output names
# The identity stage's candidate rules without "in different clusters", and the identifiers the graph links on.
ALONE_RULES = (
    block_on("email"),
    block_on("phone"),
    block_on("full_name", "city"),
    And(block_on("full_name", "country"), CustomRule("(l.city IS NULL OR r.city IS NULL)")),
    block_on("last_name", "substr(first_name, 1, 1)", "city"),
    block_on("first_name", "substr(last_name, 1, 1)", "city"),
)

EVERY_RECORD_ITS_OWN = """
CREATE OR REPLACE TEMP TABLE _record_clusters AS
SELECT stream, record_id, row_number() OVER (ORDER BY stream, record_id)::BIGINT AS cluster_id
FROM (SELECT DISTINCT stream, record_id FROM identity.identifiers WHERE list_contains($streams, stream))
"""


def dedupe(conn: duckdb.DuckDBPyConnection) -> tuple[int, int]:
    """Deduplicate every person record with Splink alone; returns (records, pairs at or above the threshold)."""
    identity_rules = load_identity_rules()
    merge_at = identity_rules.merge_at
    conn.execute(EVERY_RECORD_ITS_OWN, {"streams": identity_rules.person_streams})
    records = matching.build_records(conn)
    conn.execute(
        f"CREATE OR REPLACE TEMP VIEW {ALONE_RECORDS} AS SELECT * EXCLUDE (cluster_id) FROM {matching.RECORDS_TABLE}"
    )
    model = matching.saved_model(conn)
    model["blocking_rules_to_generate_predictions"] = list(ALONE_RULES)
    with matching.scratch(conn):
        linker = matching.make_linker(conn, model, ALONE_RECORDS)
        pairs = linker.inference.predict(threshold_match_probability=merge_at, warning_mode="never")
        clusters = linker.clustering.cluster_pairwise_predictions_at_threshold(pairs, merge_at)
        conn.execute(
            f"CREATE OR REPLACE TEMP TABLE {ALONE_PROFILES} AS "
            "SELECT split_part(unique_id, ':', 1) AS stream, unique_id[strpos(unique_id, ':') + 1:] AS record_id, "
            f"cluster_id AS profile_id FROM {clusters.physical_name}"
        )
        found = conn.execute(f"SELECT count(*) FROM {pairs.physical_name}").fetchall()[0][0]
    return records, found

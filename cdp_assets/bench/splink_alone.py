"""Splink on its own, for the benchmark's comparison: the same person records, the same trained model and merge
threshold, but no deterministic graph in front, so Splink must also find the pairs that share an email or a phone.

Its clusters go to TEMP `_splink_alone_profiles`, shaped like identity.record_profiles so that one evaluation
scores both.
"""

from __future__ import annotations

import duckdb

from cdp_assets.identity import comparisons, matching
from cdp_assets.identity.rules import load as load_identity_rules

ALONE_PROFILES = "_splink_alone_profiles"
ALONE_RECORDS = "_splink_alone_records"  # the match records without the graph's cluster, which Splink's output names
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
    records = matching.build_records(conn, identity_rules)
    conn.execute(
        f"CREATE OR REPLACE TEMP VIEW {ALONE_RECORDS} AS SELECT * EXCLUDE (cluster_id) FROM {matching.RECORDS_TABLE}"
    )
    model = matching.saved_model(conn)
    # The matcher's own blocking rules (rules.yaml), without "in different clusters": the email and phone rules
    # among them make Splink find the pairs the graph would link on those identifiers.
    model["blocking_rules_to_generate_predictions"] = comparisons.build(conn, identity_rules.matcher,
                                                                        ALONE_RECORDS).blocking
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

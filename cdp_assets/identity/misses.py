"""Where the evaluation's missed pairs were lost: each pair of one person's person records in two profiles, put
down to the step of resolution that kept them apart.

Recall says how much was missed; this says where, so that work goes where the loss is. Per person, every two of
their profiles (identity.record_profiles) count their record pairs, put down to the first step that holds, in
this order:

- `not in identity`: a record the identity layer lacks (quarantined by a contract, or never pulled), a profile of
  its own on the strict line;
- `link refused`: the run refused a link that would have joined the two (identity.refused_links: a limit, the
  chain check, a shared value, a never-link rule);
- `in review`: a pair across the two waits in identity.match_review, for a person to decide;
- `scored under review_at`: the blocking rules compare a pair across the two, and the model, with the evidence
  the run took out (shared values, values of refused chains) taken out again, scores it under review_at;
- `never compared`: no blocking rule pairs a record of one with a record of the other.

The last two are the only ones not read from the run's own tables: they score the pairs across profiles again
(`matching.score`, the pipeline's model and blocking rules). Every share is of the person records' true pairs,
so the shares add up to 1 - recall of the strict line.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import duckdb

from cdp_assets.identity import basis, graph, matching, shared
from cdp_assets.identity.rules import Rules

STEPS = ("not in identity", "link refused", "in review", "scored under review_at", "never compared")

# Each person record truth labels, with its profile (NULL: the identity layer lacks it); run after evaluation.score,
# which loads eval_truth.
RECORDS_SQL = """
CREATE OR REPLACE TEMP TABLE _missed_records AS
SELECT t.stream, t.record_id, t.person_id, p.profile_id
FROM eval_truth AS t LEFT JOIN identity.record_profiles AS p USING (stream, record_id)
WHERE list_contains($streams, t.stream)
"""
CLUSTERS_SQL = """
CREATE OR REPLACE TEMP TABLE _record_clusters AS
SELECT stream, record_id, dense_rank() OVER (ORDER BY profile_id)::BIGINT AS cluster_id
FROM _missed_records WHERE profile_id IS NOT NULL
"""
# The values the run took out of the matcher's evidence (resolution.partition): shared ones, and the identifier end
# of a record's link the chain check refused (the run masks these from its checked pass; the refusals kept are the
# final pass's, which may differ by a link).
MASKED_SQL = """
CREATE OR REPLACE TEMP TABLE _missed_masked AS
SELECT id_type, value FROM identity.shared_values
UNION
SELECT CASE WHEN list_contains($record_types, type_a) THEN type_b ELSE type_a END,
       CASE WHEN list_contains($record_types, type_a) THEN value_b ELSE value_a END
FROM identity.refused_links
WHERE refused_by = $chain AND list_contains($record_types, type_a) <> list_contains($record_types, type_b)
"""
# The record pairs of one person in two profiles, by the first step that holds for the two, and the pairs a record
# missing from identity costs (all the pairs it makes with the person's other records).
STEPS_SQL = """
WITH cells AS (
    SELECT person_id, profile_id, count(*) AS n FROM _missed_records WHERE profile_id IS NOT NULL GROUP BY ALL
), apart AS (
    SELECT a.person_id, a.profile_id AS profile_l, b.profile_id AS profile_r, a.n * b.n AS pairs
    FROM cells AS a JOIN cells AS b ON a.person_id = b.person_id AND a.profile_id < b.profile_id
), refused AS (
    SELECT DISTINCT least(profile_a, profile_b) AS profile_l, greatest(profile_a, profile_b) AS profile_r
    FROM identity.refused_links WHERE profile_a <> profile_b
), reviewed AS (
    SELECT DISTINCT least(profile_l, profile_r) AS profile_l, greatest(profile_l, profile_r) AS profile_r
    FROM identity.match_review
), compared AS (
    SELECT DISTINCT least(l.profile_id, r.profile_id) AS profile_l, greatest(l.profile_id, r.profile_id) AS profile_r
    FROM _missed_scores AS s
    JOIN _missed_records AS l ON l.stream || ':' || l.record_id = s.unique_id_l
    JOIN _missed_records AS r ON r.stream || ':' || r.record_id = s.unique_id_r
    WHERE l.person_id = r.person_id
), people AS (
    SELECT count(*) AS n, count(*) - count(profile_id) AS missing FROM _missed_records GROUP BY person_id
)
SELECT 'not in identity' AS step, sum(n * (n - 1) // 2 - (n - missing) * (n - missing - 1) // 2) AS pairs FROM people
UNION ALL
SELECT CASE WHEN EXISTS (FROM refused f WHERE f.profile_l = a.profile_l AND f.profile_r = a.profile_r)
                THEN 'link refused'
            WHEN EXISTS (FROM reviewed v WHERE v.profile_l = a.profile_l AND v.profile_r = a.profile_r)
                THEN 'in review'
            WHEN EXISTS (FROM compared c WHERE c.profile_l = a.profile_l AND c.profile_r = a.profile_r)
                THEN 'scored under review_at'
            ELSE 'never compared' END, sum(pairs)
FROM apart AS a
GROUP BY 1
UNION ALL
SELECT 'true pairs', sum(n * (n - 1) // 2) FROM people
"""


@dataclass(frozen=True)
class Misses:
    true_pairs: int
    lost: dict[str, int]  # record pairs lost at each step of STEPS

    def share(self, step: str) -> float:
        return self.lost[step] / self.true_pairs if self.true_pairs else 0.0


def explain(conn: duckdb.DuckDBPyConnection, rules: Rules, model_path: Path = matching.MODEL_PATH) -> Misses:
    """The missed pairs of the rules' person records by step, on a connection where evaluation.score has loaded the
    truth.
    Scores every pair the blocking rules make across profiles (no threshold), so it costs one scoring of the
    warehouse's person records."""
    conn.execute(RECORDS_SQL, {"streams": rules.person_streams})
    conn.execute(CLUSTERS_SQL)
    conn.execute(MASKED_SQL, {"chain": graph.CHAIN,
                              "record_types": [t.name for t in rules.types.values() if t.record_of]})
    matching.build_records(conn, rules)
    shared.mask(conn, "_missed_masked")
    if not basis.load(conn, model_path):  # the basis the pipeline scored on, else one counted over the profiles
        basis.count(conn, model_path)
    scores = matching.score(conn, 0.0, model_path)
    conn.register("_missed_scores", scores.astype({"unique_id_l": str, "unique_id_r": str, "probability": float}))
    rows = dict(conn.execute(STEPS_SQL).fetchall())
    conn.unregister("_missed_scores")
    return Misses(int(rows.pop("true pairs") or 0), {step: int(rows.get(step) or 0) for step in STEPS})


def text(misses: Misses) -> str:
    lines = [f"{step:<24}{misses.lost[step]:>10,}{misses.share(step):>9.2%}" for step in STEPS]
    total = sum(misses.lost.values())
    return "\n".join([f"{'missed pairs, by step':<24}{'pairs':>10}{'of true':>9}", *lines,
                      f"{'all missed':<24}{total:>10,}{total / max(misses.true_pairs, 1):>9.2%}"])


def markdown(misses: Misses) -> str:
    rows = [f"| {step} | {misses.lost[step]:,} | {misses.share(step):.2%} |" for step in STEPS]
    total = sum(misses.lost.values())
    return "\n".join(["| missed person-record pairs, by step | pairs | of true pairs |", "| --- | ---: | ---: |", *rows,
                      f"| all missed (1 - strict recall) | {total:,} | {total / max(misses.true_pairs, 1):.2%} |"])

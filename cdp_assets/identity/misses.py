"""Where the evaluation's missed pairs were lost: each pair of one person's person records in two profiles, put
down to the step of resolution that kept them apart.

Recall says how much was missed; this says where, so that work goes where the loss is. Per person, every two of
their profiles (identity.record_profiles) count their record pairs, judged by the best pair of records across the
two that the matcher scores (the pipeline's model, blocking rules and thresholds, on the same `_match_records`):

- `not in identity`: a record the identity layer lacks (quarantined by a contract, or never pulled), a profile of
  its own on the strict line;
- `never compared`: no blocking rule pairs any record of one profile with one of the other;
- `scored under review_at`: compared, and the evidence says two people;
- `in review`: between review_at and merge_at, in identity.match_review for a person to decide;
- `refused`: at merge_at or above, and the link was refused (a limit, the chain check, a shared value).

Every share is of the person records' true pairs, so the shares add up to 1 - recall of the strict line.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import duckdb

from cdp_assets.identity import matching
from cdp_assets.identity.rules import Rules

STEPS = ("not in identity", "never compared", "scored under review_at", "in review", "refused")

# Each person record truth labels, with its profile (NULL: the identity layer lacks it); run after evaluation.score,
# which loads eval_truth.
RECORDS_SQL = """
CREATE OR REPLACE TEMP TABLE _missed_records AS
SELECT t.stream, t.record_id, t.person_id, p.profile_id
FROM eval_truth AS t LEFT JOIN identity.record_profiles AS p USING (stream, record_id)
WHERE list_contains($streams, t.stream);
CREATE OR REPLACE TEMP TABLE _record_clusters AS
SELECT stream, record_id, dense_rank() OVER (ORDER BY profile_id)::BIGINT AS cluster_id
FROM _missed_records WHERE profile_id IS NOT NULL
"""
# The record pairs of one person in two profiles, by the best score across the two, and the pairs a record missing
# from identity costs (all the pairs it makes with the person's other records).
STEPS_SQL = """
WITH cells AS (
    SELECT person_id, profile_id, count(*) AS n FROM _missed_records WHERE profile_id IS NOT NULL GROUP BY ALL
), apart AS (
    SELECT a.person_id, a.profile_id AS profile_l, b.profile_id AS profile_r, a.n * b.n AS pairs
    FROM cells AS a JOIN cells AS b ON a.person_id = b.person_id AND a.profile_id < b.profile_id
), scored AS (
    SELECT l.person_id, least(l.profile_id, r.profile_id) AS profile_l,
           greatest(l.profile_id, r.profile_id) AS profile_r, max(s.probability) AS best
    FROM _missed_scores AS s
    JOIN _missed_records AS l ON l.stream || ':' || l.record_id = s.unique_id_l
    JOIN _missed_records AS r ON r.stream || ':' || r.record_id = s.unique_id_r
    WHERE l.person_id = r.person_id
    GROUP BY ALL
), people AS (
    SELECT count(*) AS n, count(*) - count(profile_id) AS missing FROM _missed_records GROUP BY person_id
)
SELECT 'not in identity' AS step, sum(n * (n - 1) // 2 - (n - missing) * (n - missing - 1) // 2) AS pairs FROM people
UNION ALL
SELECT CASE WHEN best IS NULL THEN 'never compared' WHEN best < $review_at THEN 'scored under review_at'
            WHEN best < $merge_at THEN 'in review' ELSE 'refused' END, sum(pairs)
FROM apart LEFT JOIN scored USING (person_id, profile_l, profile_r)
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


def explain(conn: duckdb.DuckDBPyConnection, rules: Rules, streams: list[str],
            model_path: Path = matching.MODEL_PATH) -> Misses:
    """The missed pairs of `streams`' records by step, on a connection where evaluation.score has loaded the truth.
    Scores every pair the blocking rules make across profiles (no threshold), so it costs one scoring of the
    warehouse's person records."""
    for statement in RECORDS_SQL.split(";\n"):
        conn.execute(statement, {"streams": streams} if "$streams" in statement else None)
    matching.build_records(conn, rules)
    scores = matching.score(conn, 0.0, model_path)
    conn.register("_missed_scores", scores.astype({"unique_id_l": str, "unique_id_r": str, "probability": float}))
    rows = dict(conn.execute(STEPS_SQL, {"review_at": rules.review_at, "merge_at": rules.merge_at}).fetchall())
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

"""How well identity resolution finds the real people: its profiles scored against the sandbox's ground truth.

Reads ``identity.record_profiles(stream, record_id, profile_id)`` from the warehouse, and
``truth.csv`` (the person behind each record) and ``cases.csv`` (who makes which hard case)
from the world folder. Scored records are the records of PERSON_STREAMS that truth labels
and record_profiles holds; truth's records that record_profiles lacks (quarantined, say)
are counted as not scored. Every number comes from the contingency table of profile x
person over the scored records, in SQL.

Each line scores a set of member people (everyone, or the people with one hard case):

- pairwise: pairs of records in one profile against pairs of one person, counting the
  pairs with at least one member record. Precision: same-person pairs / same-profile
  pairs; recall: same-profile pairs / same-person pairs; F1 their harmonic mean.
- B-cubed, averaged over member records: the share of the record's profile that is its
  person (precision) and of its person that is in its profile (recall).
- over-merged: share of the profiles holding a member record that hold several people.
- split: share of member people whose records lie in more than one profile.

So a hard case's precision counts every same-profile pair that holds a case person's
record: merging a case person with anyone, in the case or not, lowers it.

The bars (pairwise precision >= 0.995, recall >= 0.97, over-merged < 0.5%) are judged on
the person-level records: Stripe customers, HubSpot contacts, Zendesk users and Klaviyo
profiles. Product events are scored in their own lines: they outnumber every other
record, and their truth is the human at the keyboard, which no identifier shows when a
couple shares one login.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import duckdb

from sandbox.store import CASES_FILE, TRUTH_FILE

PERSON_STREAMS = ("stripe.customers", "hubspot.contacts", "zendesk.users", "klaviyo.profiles", "mixpanel.events")
EVENTS = "mixpanel.events"
ALL, WITHOUT_EVENTS = "all records, with events", "person records"
BARS = {"pair_precision": 0.995, "pair_recall": 0.97}
OVER_MERGED_BAR = 0.005
START, END = "<!-- eval:start -->", "<!-- eval:end -->"

LOAD_TRUTH = """
CREATE OR REPLACE TEMP TABLE eval_truth AS
SELECT stream, record_id, person_id
FROM read_csv($path, header = true, columns = {'stream': 'VARCHAR', 'record_id': 'VARCHAR', 'person_id': 'BIGINT'})
WHERE list_contains($streams, stream)
"""
LOAD_CASES = """
CREATE OR REPLACE TEMP TABLE eval_cases AS
SELECT DISTINCT person_id, "case"
FROM read_csv($path, header = true, columns = {'person_id': 'BIGINT', 'case': 'VARCHAR'})
"""
LOAD_RECORDS = """
CREATE OR REPLACE TEMP TABLE eval_records AS
SELECT t.stream, t.person_id, p.profile_id
FROM eval_truth AS t JOIN {profiles} AS p USING (stream, record_id)
"""
RECORD_PROFILES = "identity.record_profiles"

NOT_SCORED_SQL = "SELECT (SELECT count(*) FROM eval_truth) - (SELECT count(*) FROM eval_records)"

# One line's metrics; $case NULL makes everyone a member.
SCORE_SQL = """
WITH cells AS (
    SELECT profile_id, person_id, count(*) AS n,
           $case::VARCHAR IS NULL OR person_id IN (SELECT person_id FROM eval_cases WHERE "case" = $case) AS member
    FROM eval_records
    WHERE $events OR stream <> $event_stream
    GROUP BY profile_id, person_id
), profiles AS (  -- profiles holding a member record: records, member records, people
    SELECT profile_id, sum(n) AS n, sum(n) FILTER (WHERE member) AS k, count(*) AS people
    FROM cells GROUP BY profile_id HAVING bool_or(member)
), persons AS (
    SELECT person_id, sum(n) AS n, count(*) AS profiles FROM cells WHERE member GROUP BY person_id
), sums AS (
    SELECT
        (SELECT sum(n) FROM persons) AS records,
        (SELECT sum(n * (n - 1) // 2) FROM cells WHERE member) AS true_pairs,
        (SELECT sum(n * (n - 1) // 2 - (n - k) * (n - k - 1) // 2) FROM profiles) AS profile_pairs,
        (SELECT sum(n * (n - 1) // 2) FROM persons) AS person_pairs,
        (SELECT sum(c.n * c.n / p.n) FROM cells AS c JOIN profiles AS p USING (profile_id) WHERE c.member) AS b3_p,
        (SELECT sum(c.n * c.n / q.n) FROM cells AS c JOIN persons AS q USING (person_id)) AS b3_r,
        (SELECT avg((people > 1)::INTEGER) FROM profiles) AS over_merged,
        (SELECT avg((profiles > 1)::INTEGER) FROM persons) AS split
)
SELECT coalesce(records, 0)::BIGINT, true_pairs / nullif(profile_pairs, 0), true_pairs / nullif(person_pairs, 0),
       b3_p / records, b3_r / records, over_merged, split
FROM sums
"""


@dataclass(frozen=True)
class Scores:
    """One line of the evaluation; None where a metric has nothing to measure (no pairs, no records)."""

    records: int
    pair_precision: float | None
    pair_recall: float | None
    bcubed_precision: float | None
    bcubed_recall: float | None
    over_merged: float | None  # share of profiles holding more than one real person
    split: float | None  # share of real people spread over several profiles

    @property
    def pair_f1(self) -> float | None:
        p, r = self.pair_precision, self.pair_recall
        return None if p is None or r is None or p + r == 0 else 2 * p * r / (p + r)


@dataclass(frozen=True)
class Evaluation:
    lines: dict[str, Scores]  # ALL, WITHOUT_EVENTS, then one per hard case
    not_scored: int  # records truth labels that identity.record_profiles lacks


def score(conn: duckdb.DuckDBPyConnection, world_folder: Path, profiles: str = RECORD_PROFILES) -> Evaluation:
    """Score identity.record_profiles in ``conn`` against the ground truth of the world in ``world_folder``.

    ``profiles`` names another table of the same shape to score instead (a project constant, never input)."""
    conn.execute(LOAD_TRUTH, {"path": str(world_folder / TRUTH_FILE), "streams": list(PERSON_STREAMS)})
    conn.execute(LOAD_CASES, {"path": str(world_folder / CASES_FILE)})
    conn.execute(LOAD_RECORDS.format(profiles=profiles))
    cases = [row[0] for row in conn.execute('SELECT DISTINCT "case" FROM eval_cases ORDER BY 1').fetchall()]
    scopes = [(WITHOUT_EVENTS, None, False), *((case, case, False) for case in cases), (ALL, None, True),
              *((f"{case}, with events", case, True) for case in cases)]
    lines = {}
    for name, case, events in scopes:
        row = conn.execute(SCORE_SQL, {"case": case, "events": events, "event_stream": EVENTS}).fetchall()[0]
        lines[name] = Scores(*row)
    return Evaluation(lines, conn.execute(NOT_SCORED_SQL).fetchall()[0][0])


HEADER = ("line", "records", "pair P", "pair R", "pair F1", "B3 P", "B3 R", "over-merged", "split")


def _cells(name: str, s: Scores) -> tuple[str, ...]:
    def ratio(x: float | None) -> str:
        return "-" if x is None else f"{x:.4f}"

    def share(x: float | None) -> str:
        return "-" if x is None else f"{x:.1%}"

    return (name, f"{s.records:,}", ratio(s.pair_precision), ratio(s.pair_recall), ratio(s.pair_f1),
            ratio(s.bcubed_precision), ratio(s.bcubed_recall), share(s.over_merged), share(s.split))


def summary(evaluation: Evaluation) -> str:
    scored = evaluation.lines[ALL].records
    return f"{scored:,} records scored, {evaluation.not_scored:,} not scored (missing from identity.record_profiles)"


def text_table(evaluation: Evaluation) -> str:
    rows = [HEADER, *(_cells(name, s) for name, s in evaluation.lines.items())]
    widths = [max(len(row[i]) for row in rows) for i in range(len(HEADER))]
    lines = [f"{row[0]:<{widths[0]}}  " + "  ".join(f"{c:>{w}}" for c, w in zip(row[1:], widths[1:], strict=True))
             for row in rows]
    return "\n".join([summary(evaluation), "", *lines, "", verdict(evaluation)])


def verdict(evaluation: Evaluation) -> str:
    """The bars, judged on the person records."""
    s = evaluation.lines[WITHOUT_EVENTS]
    checks = [f"{name} {getattr(s, name):.4f} >= {bar}: {'met' if getattr(s, name) >= bar else 'NOT met'}"
              for name, bar in BARS.items()]
    checks.append(f"over_merged {s.over_merged:.2%} < {OVER_MERGED_BAR:.1%}: "
                  f"{'met' if s.over_merged < OVER_MERGED_BAR else 'NOT met'}")
    return "bars on person records: " + "; ".join(checks)


def markdown_table(evaluation: Evaluation) -> str:
    rows = [" | ".join(_cells(name, s)) for name, s in evaluation.lines.items()]
    head = [" | ".join(HEADER), " | ".join(["---"] + ["---:"] * (len(HEADER) - 1))]
    return "\n".join([summary(evaluation) + ".", "", *(f"| {row} |" for row in head + rows), "",
                      verdict(evaluation) + "."])


def write_markdown(path: Path, evaluation: Evaluation) -> None:
    """Replace the section between the eval markers in ``path`` (appended, markers and all, if missing)."""
    text = path.read_text() if path.exists() else ""
    section = f"{START}\n{markdown_table(evaluation)}\n{END}"
    head, found, rest = text.partition(START)
    if found and END in rest:
        text = head + section + rest.partition(END)[2]
    else:
        text = f"{text.rstrip()}\n\n{section}\n" if text.strip() else f"{section}\n"
    path.write_text(text)

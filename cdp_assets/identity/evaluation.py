"""How well identity resolution finds the real people: its profiles scored against the sandbox's ground truth.

Reads ``identity.record_profiles(stream, record_id, profile_id)`` from the warehouse, and
``truth.csv`` (the person behind each record) and ``cases.csv`` (who makes which hard case)
from the world folder. The records are those of PERSON_STREAMS that truth labels. A record
that record_profiles lacks (quarantined by a contract, say) was not resolved: every line
counts it as a profile of its own, split from its person, except the one lenient line,
``person records, scored only``, which leaves such records out as the evaluation once did
and is reported beside the strict line to show what quarantine costs. Every number comes
from the contingency table of profile x person, in SQL.

Each line scores a set of member people (everyone, or the people with one hard case of
cases.csv, one line per case in name order):

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
the strict line of the person-level records: Stripe customers, HubSpot contacts, Zendesk
users and Klaviyo profiles. Product events are scored in their own lines: they outnumber
every other record, and their truth is the human at the keyboard, which no identifier
shows when a couple shares one login.

A score means something only on a world the model never saw: the matching model and its
thresholds are chosen on the held-out world (`cdp eval --held-out`: another seed and other
hardness settings, ``sandbox.hardness.Hardness.held_out()``), and ``held_out`` compares
what the saved model says it was trained on (its ``trained_on``) with the world scored.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

from cdp_assets.identity.matching import TRAINED_ON
from sandbox.hardness import Hardness
from sandbox.store import CASES_FILE, TRUTH_FILE, WorldStore

PERSON_STREAMS = ("stripe.customers", "hubspot.contacts", "zendesk.users", "klaviyo.profiles", "mixpanel.events")
EVENTS = "mixpanel.events"
ALL, WITHOUT_EVENTS, SCORED_ONLY = "all records, with events", "person records", "person records, scored only"
BARS = {"pair_precision": 0.995, "pair_recall": 0.97}
OVER_MERGED_BAR = 0.005
HELD_OUT_SEED = 11  # the world the model and its thresholds are chosen on (with Hardness.held_out())

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
# A record the identity layer lacks is a profile of its own (a name no profile id takes: ids have no colon).
LOAD_RECORDS = """
CREATE OR REPLACE TEMP TABLE eval_records AS
SELECT t.stream, t.person_id, coalesce(p.profile_id, 'unresolved:' || t.stream || ':' || t.record_id) AS profile_id,
       p.profile_id IS NOT NULL AS scored
FROM eval_truth AS t LEFT JOIN {profiles} AS p USING (stream, record_id)
"""
RECORD_PROFILES = "identity.record_profiles"

NOT_SCORED_SQL = "SELECT count(*) FILTER (WHERE NOT scored) FROM eval_records"

# One line's metrics; $case NULL makes everyone a member; $strict false leaves out the records not scored.
SCORE_SQL = """
WITH cells AS (
    SELECT profile_id, person_id, count(*) AS n,
           $case::VARCHAR IS NULL OR person_id IN (SELECT person_id FROM eval_cases WHERE "case" = $case) AS member
    FROM eval_records
    WHERE ($events OR stream <> $event_stream) AND ($strict OR scored)
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
class World:
    """The settings a sandbox world was built with, as its meta records them."""

    seed: int
    people: int
    hardness: dict[str, Any] | None  # None: the default settings

    @classmethod
    def read(cls, folder: Path) -> World:
        meta = WorldStore(folder).get_meta
        return cls(int(meta("seed")), int(meta("people")), _unless_default(meta("hardness")))

    def describe(self) -> str:
        return f"{self.people:,} people, seed {self.seed}, {_hardness_name(self.hardness)}"


def _unless_default(hardness: dict[str, Any] | None) -> dict[str, Any] | None:
    """A world's hardness settings, None when they are the defaults (a world built before they were recorded)."""
    if hardness is None:
        return None
    return None if Hardness.from_dict(hardness) == Hardness() else hardness


def _hardness_name(hardness: dict[str, Any] | None) -> str:
    if hardness is None:
        return "default hardness"
    return "held-out hardness" if Hardness.from_dict(hardness) == Hardness.held_out() else "other hardness"


@dataclass(frozen=True)
class Evaluation:
    lines: dict[str, Scores]  # WITHOUT_EVENTS, SCORED_ONLY, one per hard case, ALL, one per hard case with events
    not_scored: int  # records truth labels that identity.record_profiles lacks (unresolved on every strict line)
    world: World


def score(conn: duckdb.DuckDBPyConnection, world_folder: Path, profiles: str = RECORD_PROFILES) -> Evaluation:
    """Score identity.record_profiles in ``conn`` against the ground truth of the world in ``world_folder``.

    ``profiles`` names another table of the same shape to score instead (a project constant, never input)."""
    conn.execute(LOAD_TRUTH, {"path": str(world_folder / TRUTH_FILE), "streams": list(PERSON_STREAMS)})
    conn.execute(LOAD_CASES, {"path": str(world_folder / CASES_FILE)})
    conn.execute(LOAD_RECORDS.format(profiles=profiles))
    cases = [row[0] for row in conn.execute('SELECT DISTINCT "case" FROM eval_cases ORDER BY 1').fetchall()]
    scopes = [(WITHOUT_EVENTS, None, False, True), (SCORED_ONLY, None, False, False),
              *((case, case, False, True) for case in cases), (ALL, None, True, True),
              *((f"{case}, with events", case, True, True) for case in cases)]
    lines = {}
    for name, case, events, strict in scopes:
        params = {"case": case, "events": events, "strict": strict, "event_stream": EVENTS}
        lines[name] = Scores(*conn.execute(SCORE_SQL, params).fetchall()[0])
    return Evaluation(lines, conn.execute(NOT_SCORED_SQL).fetchall()[0][0], World.read(world_folder))


def held_out(model_path: Path, world: World) -> str:
    """Whether the saved model was trained on a world apart from ``world``: another seed and other hardness
    settings (a world of the same seed holds the same people; one of the same settings, people drawn alike)."""
    trained_on = json.loads(model_path.read_text()).get(TRAINED_ON) if model_path.exists() else None
    if not isinstance(trained_on, dict):
        return "the model does not record what it was trained on: held out NOT shown"
    if trained_on.get("seed") is None:
        return f"the model was trained on {trained_on}, not a sandbox world: held out NOT shown"
    trained = World(int(trained_on["seed"]), int(trained_on.get("people", 0)),
                    _unless_default(trained_on.get("hardness")))
    settings = [Hardness.from_dict(h) if h else Hardness() for h in (trained.hardness, world.hardness)]
    apart = trained.seed != world.seed and settings[0] != settings[1]  # as settings, however the JSON spells them
    return (f"the model was trained on a world of seed {trained.seed}, {_hardness_name(trained.hardness)}: "
            f"{'held out' if apart else 'NOT held out'}")


HEADER = ("line", "records", "pair P", "pair R", "pair F1", "B3 P", "B3 R", "over-merged", "split")


def _cells(name: str, s: Scores) -> tuple[str, ...]:
    def ratio(x: float | None) -> str:
        return "-" if x is None else f"{x:.4f}"

    def share(x: float | None) -> str:
        return "-" if x is None else f"{x:.1%}"

    return (name, f"{s.records:,}", ratio(s.pair_precision), ratio(s.pair_recall), ratio(s.pair_f1),
            ratio(s.bcubed_precision), ratio(s.bcubed_recall), share(s.over_merged), share(s.split))


def summary(evaluation: Evaluation) -> str:
    records, lacking = evaluation.lines[ALL].records, evaluation.not_scored
    return (f"A world of {evaluation.world.describe()}: {records:,} records, {lacking:,} of them missing from "
            f"identity.record_profiles (quarantined or never pulled), each counted as a profile of its own except "
            f"on the '{SCORED_ONLY}' line")


def text_table(evaluation: Evaluation, provenance: str) -> str:
    rows = [HEADER, *(_cells(name, s) for name, s in evaluation.lines.items())]
    widths = [max(len(row[i]) for row in rows) for i in range(len(HEADER))]
    lines = [f"{row[0]:<{widths[0]}}  " + "  ".join(f"{c:>{w}}" for c, w in zip(row[1:], widths[1:], strict=True))
             for row in rows]
    return "\n".join([summary(evaluation), "", *lines, "", verdict(evaluation), provenance])


def verdict(evaluation: Evaluation) -> str:
    """The bars, judged on the strict line of the person records."""
    s = evaluation.lines[WITHOUT_EVENTS]
    checks = [f"{name} {getattr(s, name):.4f} >= {bar}: {'met' if getattr(s, name) >= bar else 'NOT met'}"
              for name, bar in BARS.items()]
    checks.append(f"over_merged {s.over_merged:.2%} < {OVER_MERGED_BAR:.1%}: "
                  f"{'met' if s.over_merged < OVER_MERGED_BAR else 'NOT met'}")
    return f"bars on {WITHOUT_EVENTS} (strict): " + "; ".join(checks)


def markers(people: int) -> tuple[str, str]:
    """The markers around one world size's table in a markdown file: each size has its own section."""
    return f"<!-- eval:{people}:start -->", f"<!-- eval:{people}:end -->"


def markdown_table(evaluation: Evaluation, command: str, provenance: str, appendix: str = "") -> str:
    rows = [" | ".join(_cells(name, s)) for name, s in evaluation.lines.items()]
    head = [" | ".join(HEADER), " | ".join(["---"] + ["---:"] * (len(HEADER) - 1))]
    return "\n".join([f"`{command}`. {summary(evaluation)}.", "", *(f"| {row} |" for row in head + rows), "",
                      f"{verdict(evaluation)}. {provenance[0].upper()}{provenance[1:]}.",
                      *(["", appendix] if appendix else [])])


def write_markdown(path: Path, evaluation: Evaluation, command: str, provenance: str, appendix: str = "") -> None:
    """Replace the section of the scored world's size in ``path`` (appended, markers and all, if missing), with
    ``appendix`` (markdown) after the table."""
    start, end = markers(evaluation.world.people)
    text = path.read_text() if path.exists() else ""
    section = f"{start}\n{markdown_table(evaluation, command, provenance, appendix)}\n{end}"
    head, found, rest = text.partition(start)
    if found and end in rest:
        text = head + section + rest.partition(end)[2]
    else:
        text = f"{text.rstrip()}\n\n{section}\n" if text.strip() else f"{section}\n"
    path.write_text(text)

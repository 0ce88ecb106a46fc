"""Each hard case through the pipeline: its people's records linked, and kept apart from everyone else, as truth says.

The shared session world (400 people, two full runs around a tick, `profiled` in conftest) is scored by the identity
evaluation (`cdp_assets/identity/evaluation.py`, itself checked against planted errors in test_identity_eval.py) on
its strict person-record lines: a quarantined record of a case's person counts as unresolved. A case's recall counts
the pairs of its own people's records; its precision every same-profile pair holding one of them, so merging a case's
person with anyone lowers it. The thresholds are the issue's targets: precision >= 0.98 for every hard case, and the
recall bar of the person records (0.97), since a case's people are persons like any other. Recall is not yet met on
most cases; those are marked expected to fail, strictly, so each one's figure stays visible in the run.
"""

from __future__ import annotations

import csv

import duckdb
import pytest

from cdp_assets.identity import misses
from cdp_assets.identity.evaluation import BARS, EVENTS, PERSON_STREAMS, WITHOUT_EVENTS, Evaluation, score
from cdp_assets.identity.rules import load as load_rules
from tests.conftest import TEST_PEOPLE, Profiled

# The hard-case names of cases.csv (fixed for issue 24): the sandbox labels its people with them.
HARD_CASES = (
    "shared_device", "shared_login", "several_emails", "typos", "case_variants", "job_change", "role_mailbox",
    "household_phone", "email_typo", "plus_address", "name_swap", "nickname", "diacritics", "moved", "common_name",
    "two_accounts",
)  # fmt: skip
CASE_PRECISION = 0.98
CASE_RECALL = BARS["pair_recall"]
SHARED_LOGIN_EVENTS_PRECISION = 0.99  # a shared login's events go to one person's profile, not the couple's


@pytest.fixture(scope="module")
def scored(profiled: Profiled) -> Evaluation:
    with duckdb.connect(str(profiled.pipeline.warehouse), read_only=True) as conn:
        return score(conn, profiled.world)


def test_every_case_the_world_labels_is_tested(profiled: Profiled) -> None:
    with (profiled.world / "cases.csv").open(newline="") as f:
        labelled = {row["case"] for row in csv.DictReader(f)}
    assert labelled <= set(HARD_CASES), labelled - set(HARD_CASES)


def _line(case: str, scored: Evaluation) -> tuple[float, float, str]:
    if case not in scored.lines:
        pytest.skip(f"no person of the {TEST_PEOPLE}-person test world makes the {case} case")
    line = scored.lines[case]
    # None: no pair to measure (no record of the case's people shares a profile; none of them has two records).
    precision = 1.0 if line.pair_precision is None else line.pair_precision
    recall = 1.0 if line.pair_recall is None else line.pair_recall
    found = f"{case}: {line.records} records, pair precision {precision:.4f}, recall {recall:.4f}, " \
            f"over-merged {line.over_merged:.1%}, split {line.split:.1%}"  # fmt: skip
    return precision, recall, found


@pytest.mark.parametrize("case", HARD_CASES)
def test_a_hard_case_s_people_are_kept_apart_from_everyone_else(case: str, scored: Evaluation) -> None:
    precision, _, found = _line(case, scored)
    assert precision >= CASE_PRECISION, found


# Cases whose recall is still short of the bar on the test world (issue 24 is open on recall: docs/identity.md has
# the figures). Strict: a case that reaches the bar fails here until it leaves this list, so the list cannot go stale.
RECALL_SHORT = frozenset({
    "shared_device", "shared_login", "several_emails", "typos", "case_variants", "job_change", "role_mailbox",
    "household_phone", "email_typo", "plus_address", "nickname", "moved", "common_name",
})  # fmt: skip


@pytest.mark.parametrize(
    "case",
    [pytest.param(case, marks=pytest.mark.xfail(strict=True, reason="recall short of the bar: issue 24 open"))
     if case in RECALL_SHORT else case for case in HARD_CASES],
)
def test_a_hard_case_s_records_are_linked_as_truth_says(case: str, scored: Evaluation) -> None:
    _, recall, found = _line(case, scored)
    assert recall >= CASE_RECALL, found


@pytest.mark.xfail(strict=True, reason="a shared login's events are not yet told apart by the human at the keyboard")
def test_a_shared_login_s_events_do_not_merge_its_people(scored: Evaluation) -> None:
    line = scored.lines.get("shared_login, with events")
    if line is None:
        pytest.skip(f"no couple of the {TEST_PEOPLE}-person test world shares a login")
    assert line.pair_precision is not None and line.pair_precision >= SHARED_LOGIN_EVENTS_PRECISION, line


def test_the_missed_pairs_are_put_down_to_the_steps_that_lost_them(profiled: Profiled) -> None:
    """The steps' shares add up to what recall misses on the strict line; the records identity lacks (the test world
    quarantines some), counted from truth and identity.record_profiles apart from the explanation, cost exactly
    the pairs of `not in identity`; and the pairs in review are those the run's own tables hold."""
    with duckdb.connect(str(profiled.pipeline.warehouse), read_only=True) as conn:
        strict = score(conn, profiled.world).lines[WITHOUT_EVENTS]
        missed = misses.explain(conn, load_rules())
        (lacking, lost_by_lacking), = conn.execute(
            """
            WITH truth AS (
                SELECT * FROM read_csv($path, header = true, all_varchar = true) WHERE list_contains($streams, stream)
            ), people AS (
                SELECT count(*) AS n, count(*) FILTER (WHERE p.profile_id IS NULL) AS k
                FROM truth t LEFT JOIN identity.record_profiles p USING (stream, record_id) GROUP BY t.person_id
            )
            SELECT sum(k), sum(n * (n - 1) // 2 - (n - k) * (n - k - 1) // 2) FROM people
            """,
            {"path": str(profiled.world / "truth.csv"), "streams": [s for s in PERSON_STREAMS if s != EVENTS]},
        ).fetchall()
        # The pairs a person decides: one person's records in two profiles between which a pair waits in review and
        # no link was refused, counted here from the run's tables apart from the explanation's own query.
        (reviewed,), = conn.execute(
            """
            WITH truth AS (
                SELECT * FROM read_csv($path, header = true, all_varchar = true) WHERE list_contains($streams, stream)
            ), cells AS (
                SELECT t.person_id, p.profile_id, count(*) AS n
                FROM truth t JOIN identity.record_profiles p USING (stream, record_id) GROUP BY ALL
            )
            SELECT coalesce(sum(a.n * b.n), 0) FROM cells a JOIN cells b
              ON a.person_id = b.person_id AND a.profile_id < b.profile_id
            WHERE EXISTS (FROM identity.match_review r WHERE (r.profile_l, r.profile_r) IN
                          ((a.profile_id, b.profile_id), (b.profile_id, a.profile_id)))
              AND NOT EXISTS (FROM identity.refused_links f WHERE (f.profile_a, f.profile_b) IN
                              ((a.profile_id, b.profile_id), (b.profile_id, a.profile_id)))
            """,
            {"path": str(profiled.world / "truth.csv"), "streams": [s for s in PERSON_STREAMS if s != EVENTS]},
        ).fetchall()
    assert lacking > 0, "the test world quarantines person records: the positive control"
    assert missed.lost["not in identity"] == lost_by_lacking
    assert missed.true_pairs > 0 and all(lost >= 0 for lost in missed.lost.values())
    assert sum(missed.lost.values()) / missed.true_pairs == pytest.approx(1 - strict.pair_recall, abs=1e-9)
    assert reviewed > 0 and missed.lost["in review"] == reviewed

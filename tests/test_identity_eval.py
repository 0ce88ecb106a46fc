"""The identity evaluation scores exactly: perfect for truth itself, and by the expected amount for planted errors."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import duckdb
import pytest

from cdp_assets.identity.evaluation import (
    ALL,
    END,
    PERSON_STREAMS,
    START,
    WITHOUT_EVENTS,
    Scores,
    score,
    write_markdown,
)

PERFECT = (1.0, 1.0, 1.0, 1.0, 0.0, 0.0)


@pytest.fixture
def profiles(world_template: Path, tmp_path: Path) -> duckdb.DuckDBPyConnection:
    """A warehouse whose identity layer got every person exactly right: one profile per person."""
    conn = duckdb.connect(str(tmp_path / "warehouse.duckdb"))
    conn.execute("CREATE SCHEMA identity")
    conn.execute(
        """
        CREATE TABLE identity.record_profiles AS
        SELECT stream, record_id, 'p' || person_id AS profile_id
        FROM read_csv($path, header = true, all_varchar = true)
        WHERE list_contains($streams, stream)
        """,
        {"path": str(world_template / "truth.csv"), "streams": list(PERSON_STREAMS)},
    )
    return conn


def records_per_person(world: Path, events: bool = True) -> Counter[str]:
    with (world / "truth.csv").open(newline="") as f:
        return Counter(row["person_id"] for row in csv.DictReader(f)
                       if row["stream"] in PERSON_STREAMS and (events or row["stream"] != "mixpanel.events"))


def pairs(n: int) -> int:
    return n * (n - 1) // 2


def metrics(line: Scores) -> tuple[float | None, ...]:
    return tuple(getattr(line, name) for name in ("pair_precision", "pair_recall", "bcubed_precision",
                                                   "bcubed_recall", "over_merged", "split"))


def test_truth_scores_perfectly_on_every_line(world_template: Path, profiles: duckdb.DuckDBPyConnection) -> None:
    result = score(profiles, world_template)
    cases = {"shared_device", "shared_login", "several_emails", "typos", "case_variants", "job_change"}
    assert set(result.lines) == {ALL, WITHOUT_EVENTS, *cases, *(f"{case}, with events" for case in cases)}
    for name, line in result.lines.items():
        assert metrics(line) == PERFECT and line.pair_f1 == 1.0, name
    assert result.lines[ALL].records == sum(records_per_person(world_template).values())
    assert 0 < result.lines[WITHOUT_EVENTS].records < result.lines[ALL].records
    assert result.not_scored == 0


def test_a_planted_merge_costs_precision_by_the_cross_pairs(
    world_template: Path, profiles: duckdb.DuckDBPyConnection
) -> None:
    counts = records_per_person(world_template, events=False)
    a, b = (person for person, _ in counts.most_common(2))
    profiles.execute("UPDATE identity.record_profiles SET profile_id = $a WHERE profile_id = $b",
                     {"a": f"p{a}", "b": f"p{b}"})
    result = score(profiles, world_template)
    for name, events in ((ALL, True), (WITHOUT_EVENTS, False)):
        n = records_per_person(world_template, events)
        same_person = sum(pairs(k) for k in n.values())
        line = result.lines[name]
        assert line.pair_precision == pytest.approx(same_person / (same_person + n[a] * n[b])), name
        assert line.pair_precision < 1.0 and line.pair_recall == 1.0 and line.split == 0.0
        assert line.over_merged == pytest.approx(1 / (len(n) - 1)), name


def test_a_planted_split_costs_recall_by_the_pairs_it_cuts(
    world_template: Path, profiles: duckdb.DuckDBPyConnection
) -> None:
    counts = records_per_person(world_template)
    person, total = counts.most_common(1)[0]
    moved = total // 3
    profiles.execute(
        """
        UPDATE identity.record_profiles SET profile_id = 'split' WHERE (stream, record_id) IN (
            SELECT (stream, record_id) FROM identity.record_profiles WHERE profile_id = $p
            ORDER BY stream, record_id LIMIT $moved)
        """,
        {"p": f"p{person}", "moved": moved},
    )
    line = score(profiles, world_template).lines[ALL]
    same_person = sum(pairs(k) for k in counts.values())
    assert line.pair_recall == pytest.approx((same_person - moved * (total - moved)) / same_person)
    assert line.pair_recall < 1.0 and line.pair_precision == 1.0 and line.over_merged == 0.0
    assert line.split == pytest.approx(1 / len(counts))


def test_records_the_identity_layer_lacks_are_not_scored(
    world_template: Path, profiles: duckdb.DuckDBPyConnection, tmp_path: Path
) -> None:
    before = score(profiles, world_template).lines[ALL].records
    profiles.execute("DELETE FROM identity.record_profiles WHERE stream = 'zendesk.users'")
    result = score(profiles, world_template)
    assert result.not_scored == before - result.lines[ALL].records > 0
    assert metrics(result.lines[ALL]) == PERFECT

    doc = tmp_path / "identity.md"
    doc.write_text(f"# Identity\n\n{START}\nold table\n{END}\n\nmore text\n")
    write_markdown(doc, result)
    text = doc.read_text()
    assert "old table" not in text and text.startswith("# Identity\n\n") and text.endswith(f"{END}\n\nmore text\n")
    assert f"| {ALL} | {result.lines[ALL].records:,} | 1.0000 |" in text

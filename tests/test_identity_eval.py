"""The identity evaluation scores exactly: perfect for truth itself, and by the expected amount for planted errors;
a record the identity layer lacks is unresolved on the strict lines, and only the lenient line leaves it out."""

from __future__ import annotations

import csv
import dataclasses
import json
from collections import Counter
from pathlib import Path

import duckdb
import pytest

from cdp_assets.identity.evaluation import (
    ALL,
    EVENTS,
    HELD_OUT_SEED,
    PERSON_STREAMS,
    SCORED_ONLY,
    WITHOUT_EVENTS,
    Evaluation,
    Scores,
    World,
    held_out,
    markers,
    score,
    verdict,
    write_markdown,
)
from sandbox.hardness import Hardness

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


def world_cases(world: Path) -> list[str]:
    with (world / "cases.csv").open(newline="") as f:
        return sorted({row["case"] for row in csv.DictReader(f)})


def test_truth_scores_perfectly_on_every_line(world_template: Path, profiles: duckdb.DuckDBPyConnection) -> None:
    result = score(profiles, world_template)
    cases = world_cases(world_template)  # every hard case the world labels has its lines, in name order
    assert list(result.lines) == [WITHOUT_EVENTS, SCORED_ONLY, *cases, ALL, *(f"{case}, with events" for case in cases)]
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


def test_records_the_identity_layer_lacks_count_as_unresolved_but_on_the_lenient_line(
    world_template: Path, profiles: duckdb.DuckDBPyConnection
) -> None:
    """Quarantined Zendesk users, say: each is a profile of its own, split from its person, on every strict line."""
    with (world_template / "truth.csv").open(newline="") as f:
        rows = [row for row in csv.DictReader(f) if row["stream"] in PERSON_STREAMS and row["stream"] != EVENTS]
    total, kept = Counter(row["person_id"] for row in rows), Counter(
        row["person_id"] for row in rows if row["stream"] != "zendesk.users")
    profiles.execute("DELETE FROM identity.record_profiles WHERE stream = 'zendesk.users'")
    result = score(profiles, world_template)
    assert result.not_scored == sum(total.values()) - sum(kept.values()) > 0

    strict, lenient = result.lines[WITHOUT_EVENTS], result.lines[SCORED_ONLY]
    assert strict.records == sum(total.values()) and lenient.records == sum(kept.values())
    assert strict.pair_precision == 1.0 and strict.over_merged == 0.0
    same_person = sum(pairs(n) for n in total.values())
    assert strict.pair_recall == pytest.approx(sum(pairs(kept[p]) for p in total) / same_person)
    assert strict.split == pytest.approx(sum(total[p] > 1 and kept[p] < total[p] for p in total) / len(total))
    assert strict.pair_recall < 1.0 and metrics(lenient) == PERFECT
    assert result.lines[ALL].pair_recall < 1.0


def test_each_world_size_has_its_own_section_in_the_docs(
    world_template: Path, profiles: duckdb.DuckDBPyConnection, tmp_path: Path
) -> None:
    small = score(profiles, world_template)
    large = dataclasses.replace(small, world=dataclasses.replace(small.world, people=100_000))
    start, end = markers(small.world.people)
    doc = tmp_path / "identity.md"
    doc.write_text(f"# Identity\n\n{start}\nold table\n{end}\n\nmore text\n")
    write_markdown(doc, small, "cdp eval --people 400", "provenance")
    text = doc.read_text()
    assert "old table" not in text and text.startswith("# Identity\n\n") and text.endswith(f"{end}\n\nmore text\n")
    assert f"| {WITHOUT_EVENTS} | {small.lines[WITHOUT_EVENTS].records:,} | 1.0000 |" in text
    assert "`cdp eval --people 400`" in text and "Provenance." in text

    write_markdown(doc, large, "cdp eval --people 100000", "other provenance")  # appended, the first kept
    write_markdown(doc, small, "cdp eval --people 400", "again")  # rewrites its own section only
    text = doc.read_text()
    for people in (400, 100_000):
        assert text.count(markers(people)[0]) == text.count(markers(people)[1]) == 1
    assert "Again." in text and "Other provenance." in text and "Provenance." not in text


@pytest.mark.parametrize(
    ("trained_on", "verdict"),
    [
        (None, "held out NOT shown"),
        ({"warehouse": "data/warehouse.duckdb"}, "held out NOT shown"),
        ({"seed": 7, "people": 5000}, "NOT held out"),  # the scored world itself
        ({"seed": HELD_OUT_SEED, "people": 5000}, "NOT held out"),  # another seed, the same settings
        ({"seed": 7, "people": 5000, "hardness": "held_out"}, "NOT held out"),  # the same people
        ({"seed": HELD_OUT_SEED, "people": 5000, "hardness": "held_out"}, "held out"),
    ],
)
def test_a_score_says_whether_the_model_saw_the_scored_world(
    trained_on: dict[str, object] | None, verdict: str, tmp_path: Path
) -> None:
    if trained_on and trained_on.get("hardness") == "held_out":
        trained_on = {**trained_on, "hardness": dataclasses.asdict(Hardness.held_out())}
    model = tmp_path / "model.json"
    model.write_text(json.dumps({"link_type": "dedupe_only", **({"trained_on": trained_on} if trained_on else {})}))
    said = held_out(model, World(seed=7, people=5000, hardness=None))
    assert said.endswith(f": {verdict}"), said


def test_the_bars_are_judged_on_the_strict_line(world_template: Path, profiles: duckdb.DuckDBPyConnection) -> None:
    result = score(profiles, world_template)
    failing = Evaluation({**result.lines, WITHOUT_EVENTS: dataclasses.replace(result.lines[WITHOUT_EVENTS],
                                                                             pair_recall=0.9)},
                         result.not_scored, result.world)
    assert "NOT met" not in verdict(result) and "pair_recall 0.9000 >= 0.97: NOT met" in verdict(failing)

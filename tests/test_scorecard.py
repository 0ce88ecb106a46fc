"""The quality scorecard's metadata as the UI shows it: one table of every entity, and short numeric keys."""

from __future__ import annotations

import pytest

from tests.conftest import Profiled

MAX_KEY = 24  # a longer metadata key runs into its timestamp in the UI
COLUMNS = ["entity", "quarantine_rate", "validity", "completeness", "uniqueness", "freshness_hours", "rows"]
IDENTITY = {"profiles": "profiles", "duplicated_share": "duplicated", "disconnected_share": "disconnected",
            "decayed_share": "decayed", "distrusted_share": "distrusted", "review_pairs": "review_pairs"}  # fmt: skip


def test_the_scorecard_is_a_table_of_entities_and_short_keys_the_ui_plots(profiled: Profiled) -> None:
    meta = profiled.metadata["quarantine/quality_scorecard"]
    assert [key for key in meta if len(key) > MAX_KEY] == []

    table = meta["scorecard"]
    assert [c.name for c in table.schema.columns] == COLUMNS
    entities = {r.data["entity"]: r.data for r in table.records}
    assert len(entities) == meta["entities"] == 12
    for entity, row in entities.items():
        assert list(row) == COLUMNS, entity
        [(staged,)] = profiled.pipeline.query(f"SELECT count(*) FROM staging.{entity}")
        [(held,)] = profiled.pipeline.query(f"SELECT count(*) FROM quarantine.{entity}")
        assert row["rows"] == staged, entity
        assert row["validity"] == pytest.approx(1 - row["quarantine_rate"], abs=1e-6), entity
        assert (row["quarantine_rate"] > 0) == (held > 0), entity

    worst = max(entities.values(), key=lambda row: row["quarantine_rate"])
    assert (meta["worst_entity"], meta["worst_quarantine_rate"]) == (worst["entity"], worst["quarantine_rate"])
    assert meta["min_completeness"] == min(row["completeness"] for row in entities.values())
    assert meta["min_uniqueness"] == min(row["uniqueness"] for row in entities.values())
    assert meta["max_freshness_hours"] == max(row["freshness_hours"] for row in entities.values())

    health = profiled.rows(
        "SELECT * FROM quarantine.quality_identity_history ORDER BY measured_at DESC LIMIT 1"
    )[0]  # fmt: skip
    for key, column in IDENTITY.items():
        assert isinstance(meta[key], int | float) and meta[key] == pytest.approx(health[column], abs=1e-6), key
    assert meta["profiles"] > 0 and 0 < meta["duplicated_share"] < 1

"""Identity health for the quality scorecard: duplicated, disconnected, decayed and distrusted profiles."""

from __future__ import annotations

from pathlib import Path

import duckdb

from cdp_assets.identity.rules import Rules

HEALTH_SQL = (Path(__file__).parent / "sql" / "identity_health.sql").read_text()
MEASURES = ("profiles", "duplicated", "disconnected", "decayed", "distrusted", "review_pairs")


def measure(conn: duckdb.DuckDBPyConnection, rules: Rules, run_id: str) -> dict[str, float]:
    """Append this run's measures to quarantine.quality_identity_history and return them."""
    conn.execute(
        """
        CREATE SCHEMA IF NOT EXISTS quarantine;
        CREATE TABLE IF NOT EXISTS quarantine.quality_identity_history (
            run_id VARCHAR, measured_at TIMESTAMPTZ, profiles BIGINT, duplicated DOUBLE, disconnected DOUBLE,
            decayed DOUBLE, distrusted DOUBLE, review_pairs BIGINT);
        """
    )
    conn.execute(
        HEALTH_SQL,
        {"run_id": run_id, "person_streams": rules.person_streams, "trusted": list(rules.trusted_streams),
         "decay_days": rules.decay_days},
    )
    row = conn.execute(
        f"SELECT {', '.join(MEASURES)} FROM quarantine.quality_identity_history "
        "WHERE run_id = $run_id ORDER BY measured_at DESC LIMIT 1",
        {"run_id": run_id},
    ).fetchone()
    return {name: float(value or 0) for name, value in zip(MEASURES, row, strict=True)}

"""What the warehouse keeps of each sync: acknowledged state, rejections, invalid rows and the run log.

A batch's acknowledgements and rejections are written in one transaction right after the
destination answered, so state never runs ahead of what the destination holds: a run
killed between the answer and the commit sends that batch again, and the destination's
idempotent upsert or set operation leaves it as it was.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import duckdb

from cdp_assets.privacy.redact import redacted
from resources.destinations import Delivery

REASON_CHARS = 1000
STORE_SQL = """
INSERT OR REPLACE INTO sync.state
SELECT $sync, p.key, p.checksum, p.payload::JSON, a.destination_id, now(), $run_id
FROM _sync_plan p
JOIN (SELECT unnest($keys::VARCHAR[]) AS key, unnest($ids::VARCHAR[]) AS destination_id) a USING (key)
"""
DROP_SQL = """
DELETE FROM sync.state
WHERE sync = $sync AND key IN (
    SELECT key FROM _sync_plan WHERE change = 'remove' AND key IN (SELECT unnest($keys::VARCHAR[])))
"""
DELIVERED_SQL = """
INSERT INTO sync.deliveries
SELECT $sync, key, $operation, (CASE WHEN $stores THEN payload ELSE previous END)::JSON, now(), $run_id
FROM _sync_plan WHERE key IN (SELECT unnest($keys::VARCHAR[]))
"""
RESOLVE_SQL = """
UPDATE sync.rejections SET resolved_at = now(), resolved_run_id = $run_id
WHERE sync = $sync AND resolved_at IS NULL AND key IN (SELECT unnest($keys::VARCHAR[]))
"""
REJECT_SQL = """
INSERT INTO sync.rejections
SELECT $sync, key, $run_id, now(), $operation, reason, NULL, NULL
FROM (SELECT unnest($keys::VARCHAR[]) AS key, unnest($reasons::VARCHAR[]) AS reason)
"""
INVALID_SQL = """
INSERT INTO sync.invalid_rows
SELECT $sync, $run_id, key, invalid_reason, now() FROM _sync_rows WHERE invalid_reason IS NOT NULL
"""


@dataclass
class RunRecord:
    """One row of sync.runs, filled in as the run goes."""

    run_id: str
    sync: str
    destination: str
    mode: str
    dry_run: bool
    status: str = "in_progress"
    model_rows: int | None = None
    invalid: int | None = None
    added: int | None = None
    changed: int | None = None
    removed: int | None = None
    unchanged: int | None = None
    acknowledged: int = 0
    rejected: int = 0
    requests: int = 0
    retries: int = 0
    batches: int = 0
    splits: int = 0
    waited_seconds: float = 0.0
    seconds: float = 0.0
    profiles: int | None = None
    largest_profile_records: int | None = None
    message: str | None = None


def acknowledge(
    conn: duckdb.DuckDBPyConnection, sync: str, run_id: str, operation: str, stores: bool, delivery: Delivery
) -> None:
    """Move state for what the destination took (store the new state, or drop a removed key's), log each delivery,
    and keep its refusals, in one transaction."""
    params = {"sync": sync, "run_id": run_id}
    keys = list(delivery.acknowledged)
    conn.begin()
    try:
        if keys and stores:
            ids = [delivery.acknowledged[key] for key in keys]
            conn.execute(STORE_SQL, {**params, "keys": keys, "ids": ids})
        elif keys:
            conn.execute(DROP_SQL, {"sync": sync, "keys": keys})
        if keys:
            conn.execute(DELIVERED_SQL, {**params, "operation": operation, "stores": stores, "keys": keys})
            conn.execute(RESOLVE_SQL, {**params, "keys": keys})
        if delivery.rejected:
            rejected = list(delivery.rejected)
            reasons = [redacted(delivery.rejected[key], REASON_CHARS) for key in rejected]  # may echo the row
            conn.execute(REJECT_SQL, {**params, "operation": operation, "keys": rejected, "reasons": reasons})
    except Exception:
        conn.rollback()  # the connection stays usable for the run log
        raise
    conn.commit()


def forget_removed(conn: duckdb.DuckDBPyConnection, sync: str, run_id: str) -> int:
    """Upsert mode leaves the destination's copy of a row that left the view; state forgets it, and a refusal of
    it is no longer waiting to be taken."""
    gone = "key IN (SELECT key FROM _sync_plan WHERE change = 'remove')"
    conn.execute(
        f"UPDATE sync.rejections SET resolved_at = now(), resolved_run_id = $run_id WHERE sync = $sync"
        f" AND resolved_at IS NULL AND {gone}",
        {"sync": sync, "run_id": run_id},
    )
    removed = conn.execute(f"DELETE FROM sync.state WHERE sync = $sync AND {gone}", {"sync": sync}).fetchone()[0]
    return int(removed)


def record_invalid(conn: duckdb.DuckDBPyConnection, sync: str, run_id: str) -> None:
    conn.execute(INVALID_SQL, {"sync": sync, "run_id": run_id})


def open_run(conn: duckdb.DuckDBPyConnection, run: RunRecord) -> None:
    values = asdict(run)
    names = ", ".join(values)
    conn.execute(
        f"INSERT INTO sync.runs ({names}, started_at) VALUES ({', '.join('$' + n for n in values)}, now())", values
    )


def close_run(conn: duckdb.DuckDBPyConnection, run: RunRecord) -> None:
    values: dict[str, Any] = asdict(run)
    sets = ", ".join(f"{n} = ${n}" for n in values if n not in ("run_id", "sync"))
    conn.execute(f"UPDATE sync.runs SET {sets}, finished_at = now() WHERE run_id = $run_id AND sync = $sync", values)

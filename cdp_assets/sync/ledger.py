"""What the warehouse keeps of each sync: acknowledged state, rejections, invalid rows and the run log.

A batch's plan rows are written to `sync.intents` and committed before it is sent; its
acknowledgements and rejections are written in one transaction right after the destination
answered, which also settles (deletes) the intent. State never runs ahead of what the
destination holds, and what a killed run had in flight is still named in `sync.intents`
for the next run to settle without sending it again (recovery.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import duckdb

from cdp_assets import failpoint
from cdp_assets.privacy.redact import redacted
from resources.destinations import Delivery

REASON_CHARS = 1000
STORE_SQL = """
INSERT OR REPLACE INTO sync.state
SELECT $sync, p.key, p.checksum, p.payload::JSON, a.destination_id, now(), $run_id
FROM {plan} p
JOIN (SELECT unnest($keys::VARCHAR[]) AS key, unnest($ids::VARCHAR[]) AS destination_id) a USING (key)
"""
DROP_SQL = """
DELETE FROM sync.state
WHERE sync = $sync AND key IN (
    SELECT key FROM {plan} WHERE change = 'remove' AND key IN (SELECT unnest($keys::VARCHAR[])))
"""
DELIVERED_SQL = """
INSERT INTO sync.deliveries
SELECT $sync, key, $operation, (CASE WHEN $stores THEN payload ELSE previous END)::JSON, now(), $run_id
FROM {plan} WHERE key IN (SELECT unnest($keys::VARCHAR[]))
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
INTEND_SQL = """
INSERT INTO sync.intents
SELECT $sync, $run_id, $batch, $operation, $stores, seq, key, change, payload, checksum, previous, NULL, now()
FROM {plan} WHERE key IN (SELECT unnest($keys::VARCHAR[]))
"""
INTENT = "sync = $sync AND run_id = $run_id AND batch = $batch"
UNSETTLED_SQL = """
SELECT run_id, batch, any_value(operation), any_value(stores), any_value(ticket)
FROM sync.intents WHERE sync = $sync GROUP BY run_id, batch ORDER BY min(intended_at), batch
"""
# The plan rows of one intent, as a plan, for `acknowledge` to record a killed run's batch as it would have.
RESTORE_SQL = f"""
CREATE OR REPLACE TEMP TABLE {{plan}} AS
SELECT seq, key, change, payload, checksum, previous FROM sync.intents WHERE {INTENT}
"""
INTERRUPTED_SQL = """
UPDATE sync.runs SET status = 'interrupted', finished_at = now(), message = $message,
    acknowledged = (SELECT count(*) FROM sync.deliveries d WHERE d.sync = runs.sync AND d.run_id = runs.run_id),
    rejected = (SELECT count(*) FROM sync.rejections j WHERE j.sync = runs.sync AND j.run_id = runs.run_id)
WHERE sync = $sync AND status = 'in_progress' AND run_id <> $run_id
"""
# Of the whole model (plan.py's), whether the plan read every row or followed the view's changes.
INVALID_SQL = """
INSERT INTO sync.invalid_rows
SELECT $sync, $run_id, key, invalid_reason, now() FROM {model} WHERE invalid_reason IS NOT NULL
"""
LEFT_OUT_SQL = """
INSERT INTO sync.left_out_rows
SELECT $sync, $run_id, key, left_out_reason, now() FROM {model} WHERE left_out_reason IS NOT NULL
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
    left_out: int | None = None
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
    followed: bool | None = None  # planned from the view's logged changes, not every row
    rows_read: int | None = None  # rows of the view the plan read


def intend(conn: duckdb.DuckDBPyConnection, sync: str, run_id: str, batch: int, operation: str, stores: bool,
           keys: list[str], plan: str) -> None:
    """Commit the intent to send a batch (its rows of the table `plan`), before it is sent."""
    params = {"sync": sync, "run_id": run_id, "batch": batch, "operation": operation, "stores": stores, "keys": keys}
    conn.execute(INTEND_SQL.format(plan=plan), params)


def note_ticket(conn: duckdb.DuckDBPyConnection, sync: str, run_id: str, batch: int, ticket: str) -> None:
    """Keep what collects a submitted batch's answer (a job id), so a later run can collect it."""
    conn.execute(f"UPDATE sync.intents SET ticket = $ticket WHERE {INTENT}",
                 {"sync": sync, "run_id": run_id, "batch": batch, "ticket": ticket})  # fmt: skip


def unsettled(conn: duckdb.DuckDBPyConnection, sync: str) -> list[tuple[str, int, str, bool, str | None]]:
    """Batches of the sync's earlier runs that were sent (or about to be) and never recorded, oldest first:
    run id, batch number, operation, whether it stores, ticket."""
    return conn.execute(UNSETTLED_SQL, {"sync": sync}).fetchall()


def restore_plan(conn: duckdb.DuckDBPyConnection, sync: str, run_id: str, batch: int, into: str) -> None:
    """Make one intent's rows a plan: TEMP `into`."""
    conn.execute(RESTORE_SQL.format(plan=into), {"sync": sync, "run_id": run_id, "batch": batch})


def close_interrupted(conn: duckdb.DuckDBPyConnection, sync: str, run_id: str) -> int:
    """Close the sync's runs a kill left `in_progress` (a sync's runs never overlap) as `interrupted`, with what
    they got acknowledged; returns how many."""
    message = f"interrupted: the run ended without closing its log; run {run_id} settled what it had sent"
    return len(conn.execute(INTERRUPTED_SQL + " RETURNING run_id",
                            {"sync": sync, "run_id": run_id, "message": message}).fetchall())  # fmt: skip


def acknowledge(
    conn: duckdb.DuckDBPyConnection,
    sync: str,
    run_id: str,
    operation: str,
    stores: bool,
    delivery: Delivery,
    batch: int,
    unconfirmed: Sequence[str] = (),
    *,
    plan: str,
) -> None:
    """Move state for what the destination took (store the new state, or drop a removed key's), log each delivery,
    keep its refusals and settle the batch's intent, in one transaction; the batch's rows are those of the table
    `plan`. `unconfirmed` keys are ones a destination may have taken but cannot say: logged as delivered, their state
    left for the plan to send them again."""
    params = {"sync": sync, "run_id": run_id}
    keys = list(delivery.acknowledged)
    conn.begin()
    try:
        if keys and stores:
            ids = [delivery.acknowledged[key] for key in keys]
            conn.execute(STORE_SQL.format(plan=plan), {**params, "keys": keys, "ids": ids})
        elif keys:
            conn.execute(DROP_SQL.format(plan=plan), {"sync": sync, "keys": keys})
        if keys or unconfirmed:
            delivered = [*keys, *unconfirmed]
            conn.execute(DELIVERED_SQL.format(plan=plan),
                         {**params, "operation": operation, "stores": stores, "keys": delivered})
        if keys:
            conn.execute(RESOLVE_SQL, {**params, "keys": keys})
        if delivery.rejected:
            rejected = list(delivery.rejected)
            reasons = [redacted(delivery.rejected[key], REASON_CHARS) for key in rejected]  # may echo the row
            conn.execute(REJECT_SQL, {**params, "operation": operation, "keys": rejected, "reasons": reasons})
        conn.execute(f"DELETE FROM sync.intents WHERE {INTENT}", {**params, "batch": batch})
        failpoint.reach("sync.recording")
    except Exception:
        conn.rollback()  # the connection stays usable for the run log
        raise
    conn.commit()


def forget_removed(conn: duckdb.DuckDBPyConnection, sync: str, run_id: str, plan: str) -> int:
    """Upsert mode leaves the destination's copy of a row that left the view (a removal in the table `plan`); state
    forgets it, and a refusal of it is no longer waiting to be taken."""
    gone = f"key IN (SELECT key FROM {plan} WHERE change = 'remove')"
    conn.execute(
        f"UPDATE sync.rejections SET resolved_at = now(), resolved_run_id = $run_id WHERE sync = $sync"
        f" AND resolved_at IS NULL AND {gone}",
        {"sync": sync, "run_id": run_id},
    )
    removed = conn.execute(f"DELETE FROM sync.state WHERE sync = $sync AND {gone}", {"sync": sync}).fetchone()[0]
    return int(removed)


def record_invalid(conn: duckdb.DuckDBPyConnection, sync: str, run_id: str, model: str) -> None:
    """Keep the invalid rows of the plan's model (the table `model`) and the rows it left out, with their reasons."""
    conn.execute(INVALID_SQL.format(model=model), {"sync": sync, "run_id": run_id})
    conn.execute(LEFT_OUT_SQL.format(model=model), {"sync": sync, "run_id": run_id})


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

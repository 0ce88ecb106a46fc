"""Sending a plan: each kind of change becomes a destination operation, sent in batches the destination allows.

A batch the destination refuses whole is split in halves until the rows it refuses are
alone, and each of those is recorded with the destination's reason; the rest go through.
Removals go first, so an audience member whose identifiers changed is taken out under the
old ones before being added under the new. Asynchronous destinations get several batches
in flight at once. Each batch's intent is committed before it is sent, and state moves per
batch, as each answer arrives (see ledger.py); what a kill leaves in flight, recovery.py settles.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import duckdb

from cdp_assets.sync import ledger
from resources.destinations import ADD, REMOVE, UPSERT, BatchRefused, Delivery, DestinationResource, SyncRecord


@dataclass(frozen=True)
class Step:
    """One pass over the plan: the changes it covers, the destination operation they become (None: no call, the
    state alone forgets them), which fields it sends (the new ones or those acknowledged last), and whether an
    acknowledgement stores the new state or drops the key."""

    changes: tuple[str, ...]
    operation: str | None
    sends: str  # "payload" or "previous"
    stores: bool
    after_removal: bool = False  # skips keys whose removal the destination refused earlier in the run


STEPS: dict[str, tuple[Step, ...]] = {
    # Rows that leave the view stay in the destination; only the state forgets them.
    "upsert": (Step(("remove",), None, "previous", False), Step(("add", "change"), UPSERT, "payload", True)),
    # Rows that leave the view are removed from the destination too.
    "mirror": (Step(("remove",), REMOVE, "previous", False), Step(("add", "change"), UPSERT, "payload", True)),
    # A changed member is removed under its old identifiers, then added under the new; if the removal is
    # refused, the add waits too, so the state still names what must be taken out.
    "audience": (
        Step(("remove", "change"), REMOVE, "previous", False),
        Step(("add", "change"), ADD, "payload", True, after_removal=True),
    ),
}
REMOVING_MODES = ("mirror", "audience")  # modes that take rows out of the destination (the deletion guard's)


@dataclass
class Sent:
    acknowledged: int = 0
    rejected: int = 0
    batches: int = 0
    splits: int = 0


REFUSED_REMOVAL = (
    " AND key NOT IN (SELECT key FROM sync.rejections WHERE sync = $sync AND run_id = $run_id AND operation = 'remove')"
)


def batches(
    conn: duckdb.DuckDBPyConnection, sync: str, run_id: str, step: Step, size: int, plan: str
) -> Iterator[list[SyncRecord]]:
    """The step's rows from the table `plan`, `size` at a time, read batch by batch between the state writes."""
    after = 0
    skip = REFUSED_REMOVAL if step.after_removal else ""
    params = {"sync": sync, "run_id": run_id} if step.after_removal else {}
    while True:
        rows = conn.execute(
            f"SELECT seq, key, change, {step.sends} FROM {plan} WHERE list_contains($changes, change)"
            f" AND seq > $after{skip} ORDER BY seq LIMIT $size",
            {"changes": list(step.changes), "after": after, "size": size, **params},
        ).fetchall()
        if not rows:
            return
        after = rows[-1][0]
        yield [SyncRecord(key, json.loads(values), change) for _, key, change, values in rows]


def deliver(
    conn: duckdb.DuckDBPyConnection,
    sync: str,
    run_id: str,
    step: Step,
    destination: DestinationResource,
    options: Mapping[str, str],
    sent: Sent,
    plan: str,
) -> None:
    """Send one step's rows of the table `plan`; a destination error that retries could not cure propagates (state
    is as acknowledged)."""
    assert step.operation is not None
    operation: str = step.operation
    waiting: deque[list[SyncRecord]] = deque()  # halves of refused batches, sent before new batches
    in_flight: deque[tuple[int, list[SyncRecord], Any]] = deque()
    reader = batches(conn, sync, run_id, step, destination.batch_size, plan)

    def refused(number: int, batch: list[SyncRecord], exc: BatchRefused) -> None:
        if len(batch) == 1:
            settle(number, Delivery(rejected={batch[0].key: exc.reason}))
            return
        settle(number, Delivery())  # nothing taken; each half goes as a batch of its own
        sent.splits += 1
        middle = len(batch) // 2
        waiting.extendleft([batch[middle:], batch[:middle]])

    def settle(number: int, delivery: Delivery) -> None:
        ledger.acknowledge(conn, sync, run_id, operation, step.stores, delivery, number, plan=plan)
        sent.acknowledged += len(delivery.acknowledged)
        sent.rejected += len(delivery.rejected)

    while True:
        while len(in_flight) < destination.max_in_flight:
            batch = waiting.popleft() if waiting else next(reader, None)
            if batch is None:
                break
            sent.batches += 1
            number = sent.batches
            ledger.intend(conn, sync, run_id, number, operation, step.stores, [record.key for record in batch], plan)
            try:
                ticket = destination.submit(operation, batch, options)
            except BatchRefused as exc:
                refused(number, batch, exc)
                continue
            receipt = destination.receipt(ticket)
            if receipt is not None:
                ledger.note_ticket(conn, sync, run_id, number, receipt)
            in_flight.append((number, batch, ticket))
        if not in_flight:
            return
        number, batch, ticket = in_flight.popleft()
        try:
            settle(number, destination.collect(ticket))
        except BatchRefused as exc:
            refused(number, batch, exc)

"""Settling what a killed run of a sync left in flight, before the sync's next run plans.

Every batch is in `sync.intents` from before it is sent until its answer is recorded. A kill
(of the process, the machine) leaves some there. The next run of the sync asks the destination
what became of each: by the ticket the submit returned (a Zendesk job id), or by reading back
what it holds for the batch's keys (HubSpot), and records the answer under the killed run's id
as that run would have: state moves for what was taken, `sync.deliveries` lists it, refusals
are kept. Only what the destination did not take is left for the plan to send again; what it
cannot say about (Braze, Meta) is logged as possibly taken and sent again, harmlessly, since
their operations are idempotent. The killed run's log row is then closed as `interrupted`.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb

from cdp_assets.sync import delivery, ledger
from resources.destinations import Delivery, DestinationResource

EVERY_CHANGE = ("add", "change", "remove")
RECOVERED = "_recovered_plan"  # TEMP: the rows of the batch being settled, as its intent kept them


@dataclass
class Recovered:
    batches: int = 0
    acknowledged: int = 0  # confirmed taken, not sent again
    rejected: int = 0
    unconfirmed: int = 0  # the destination cannot say: logged as possibly taken, sent again
    interrupted: int = 0  # runs closed as interrupted


def recover(
    conn: duckdb.DuckDBPyConnection, sync: str, run_id: str, destination: DestinationResource
) -> Recovered:
    """Settle every unsettled batch of the sync's earlier runs, then close those runs' log rows."""
    done = Recovered()
    for earlier, batch, operation, stores, ticket in ledger.unsettled(conn, sync):
        ledger.restore_plan(conn, sync, earlier, batch, RECOVERED)
        step = delivery.Step(EVERY_CHANGE, operation, "payload" if stores else "previous", stores)
        records = [record for part in delivery.batches(conn, sync, earlier, step, destination.batch_size, RECOVERED)
                   for record in part]  # fmt: skip
        answer = destination.recover(operation, records, ticket)
        unconfirmed = [record.key for record in records] if answer is None else []
        answer = answer or Delivery()
        ledger.acknowledge(conn, sync, earlier, operation, stores, answer, batch, unconfirmed, plan=RECOVERED)
        done.batches += 1
        done.acknowledged += len(answer.acknowledged)
        done.rejected += len(answer.rejected)
        done.unconfirmed += len(unconfirmed)
    done.interrupted = ledger.close_interrupted(conn, sync, run_id)
    return done

"""What every destination connector does: take one batch of records for one operation and say what became of each.

A connector speaks its service's contract (paths, envelopes, batch limits, async jobs,
throttling signals) and never touches the warehouse. The sync engine
(`cdp_assets/sync/delivery.py`) batches, splits and records; a connector answers per
batch with a `Delivery`, or raises `BatchRefused` when the service refused the whole
batch as invalid without saying which rows, so the engine splits it to find them.

Every operation is idempotent by the record's key (an upsert by email or external id,
a set add or remove), so a batch sent again after a lost answer changes nothing twice.
A connector that can say what became of a batch whose sender was killed (`receipt` and
`recover`) spares the destination that second sending and keeps the log exact.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from resources.http import RateLimit
from resources.service import ServiceResource

UPSERT, REMOVE, ADD = "upsert", "remove", "add"


@dataclass(frozen=True)
class SyncRecord:
    """One row of a sync's model: its key, the mapped fields' values as the view holds them, and whether it is
    new to the destination (`add`), changed, or leaving it (`remove`)."""

    key: str
    values: dict[str, Any]
    change: str = "add"


@dataclass
class Delivery:
    """What the destination made of one batch: keys it acknowledged (with its own id, when it gives one)
    and keys it rejected, with its reason."""

    acknowledged: dict[str, str | None] = field(default_factory=dict)
    rejected: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Erasure:
    """What destinations are asked to forget of one person: what each may know them by."""

    profile_ids: list[str]
    emails: list[str]
    phones: list[str]  # E.164
    records: dict[str, list[str]]  # "source.stream" -> the person's record ids in that account
    audiences: list[str] = field(default_factory=list)  # the Meta audience ids syncs write to


class BatchRefused(Exception):
    """The destination refused the whole batch as invalid; a smaller batch may pass."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class DestinationResource(ServiceResource):
    """Base for destination connectors: base URL, secret and pacing from the environment."""

    modes: ClassVar[frozenset[str]]  # sync modes the destination supports (see cdp_assets/sync/specs.py)
    batch_size: ClassVar[int]  # most records one call may carry
    max_in_flight: ClassVar[int] = 1  # batches submitted before the first is collected (asynchronous jobs)
    pace: ClassVar[RateLimit]  # every destination paces itself
    # The source stream ("source.stream") a destination's records are pulled back through, and where a sync's field
    # shows in that stream's payload: what a write looks like when the next pull brings it back (cdp_assets/echoes.py).
    echo_stream: ClassVar[str | None] = None
    echo_path: ClassVar[str] = "{field}"

    def submit(self, operation: str, records: list[SyncRecord], options: Mapping[str, str]) -> Any:
        """Send one batch; returns a ticket for `collect` (the delivery itself, for synchronous services)."""
        raise NotImplementedError

    def collect(self, ticket: Any) -> Delivery:
        """The outcome of a submitted batch, waiting for it if the service works asynchronously."""
        return ticket

    def receipt(self, ticket: Any) -> str | None:
        """What of a ticket to keep, so that a later run can collect the batch's outcome (a job id); None when
        the answer came with the submit."""
        return None

    def recover(self, operation: str, records: list[SyncRecord], receipt: str | None) -> Delivery | None:
        """What the destination made of a batch sent by a run that was killed before recording the answer, found
        without sending it again: by its receipt, or by reading back what the destination holds for its keys.
        Keys neither acknowledged nor rejected were not taken (they are sent again). None: the destination
        cannot say (the default); the batch is logged as possibly taken and sent again, which is harmless for
        an upsert or a set operation."""
        return None

    def erase(self, erasure: Erasure) -> dict[str, int]:
        """Delete or remove the person wherever this destination holds them; counts per action. Asking twice
        is harmless: what is already gone counts as `already_gone`."""
        raise NotImplementedError

"""The request inbox: one JSON file per privacy request, filed by `cdp privacy` (or any intake form).

A file names what the person is known by, so it lives only until its request is done. Each
attempt to process it rewrites it with one more attempt counted, which is how the inbox sensor
knows to try again after a failure, and when to stop.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cdp_assets.privacy.subject import GIVEN_TYPES, Identifier, given_value

KINDS = ("deletion", "access")
MAX_ATTEMPTS = 3


@dataclass
class Request:
    request_id: str
    kind: str
    identifiers: list[Identifier]
    received_at: str  # ISO-8601
    requested_by: str = "unknown"
    attempts: int = 0
    # A deletion's destinations left to erase, with what they know the person by, kept from an attempt that
    # could not reach them: by then the warehouse no longer says.
    pending: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "identifiers": [asdict(i) for i in self.identifiers]}, indent=2)


@dataclass(frozen=True)
class Filed:
    request: Request
    path: Path
    version: int  # the file's mtime in ns: changes with each attempt


def file_request(inbox: Path, kind: str, identifiers: list[Identifier], requested_by: str) -> Request:
    """Put a new request in the inbox (written whole, then renamed, so no reader sees half a file)."""
    if kind not in KINDS:
        raise ValueError(f"a request is one of {KINDS}")
    if not identifiers:
        raise ValueError("a request names at least one identifier")
    unknown = {i.type for i in identifiers} - set(GIVEN_TYPES)
    if unknown:
        raise ValueError(f"unknown identifier types {sorted(unknown)}; use {GIVEN_TYPES}")
    if any(not i.value.strip() for i in identifiers):
        raise ValueError("an identifier is empty")
    for identifier in identifiers:
        given_value(identifier)  # refused now, not when processed, if it names no one identity could hold
    request = Request(f"req_{uuid.uuid4().hex[:16]}", kind, identifiers, datetime.now(UTC).isoformat(), requested_by)
    write(inbox, request)
    return request


def write(inbox: Path, request: Request) -> None:
    inbox.mkdir(parents=True, exist_ok=True)
    partial = inbox / f".{request.request_id}.json.part"
    partial.write_text(request.to_json())
    os.replace(partial, inbox / f"{request.request_id}.json")


def read(path: Path) -> Request:
    data = json.loads(path.read_text())
    data["identifiers"] = [Identifier(**i) for i in data["identifiers"]]
    return Request(**data)


def pending(inbox: Path) -> Iterator[Filed]:
    """Requests waiting in the inbox, oldest first."""
    if not inbox.exists():
        return
    for path in sorted(inbox.glob("req_*.json"), key=lambda p: p.stat().st_mtime_ns):
        yield Filed(read(path), path, path.stat().st_mtime_ns)


def find(inbox: Path, request_id: str) -> Filed | None:
    path = inbox / f"{request_id}.json"
    return Filed(read(path), path, path.stat().st_mtime_ns) if path.exists() else None


def attempt(filed: Filed, inbox: Path) -> Request:
    """Count one more attempt in the file before processing it."""
    filed.request.attempts += 1
    write(inbox, filed.request)
    return filed.request


def close(inbox: Path, request_id: str) -> None:
    (inbox / f"{request_id}.json").unlink(missing_ok=True)

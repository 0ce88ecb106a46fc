"""Privacy requests end to end: the `privacy_requests` job, the inbox sensor that starts it, and each request's path.

A deletion resolves the identifier to everything it reaches (subject.py), keeps the person's
identifiers as keyed digests (HMAC-SHA256, `suppression.digest`) first (so no pull brings them
back, whatever happens next), asks every destination to forget them, then deletes their rows
from every layer in one transaction (erasure.py). An access request writes one JSON document
with everything held, layer by layer, and what each destination received and when. Each step is
recorded in `privacy.request_actions` and each status in `privacy.request_events`; nothing
recorded names the person.
"""

import json
import os
import time
from collections.abc import Iterator
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
from dagster import (
    Config,
    DefaultSensorStatus,
    OpExecutionContext,
    RunConfig,
    RunRequest,
    SensorEvaluationContext,
    in_process_executor,
    job,
    op,
    sensor,
)
from pydantic import Field

from cdp_assets.privacy import compaction, erasure, inbox, paths, run_history, subject, suppression
from cdp_assets.privacy.inbox import Request
from cdp_assets.privacy.redact import redacted
from cdp_assets.raw import raw_table
from cdp_assets.sync.assets import resource_key
from cdp_assets.sync.specs import load as load_syncs
from resources import DESTINATIONS
from resources.destinations import DestinationResource, Erasure
from resources.privacy import PrivacyResource
from schedules.alerts import alerts_db

SQL = Path(__file__).parent / "sql"
DESTINATION_KEYS = {name: resource_key(name) for name in DESTINATIONS}
OP_NAME = "process_privacy_requests"
FINAL = ("done", "not_found")  # a request in one of these leaves the inbox: trying again would find the same


class RequestsConfig(Config):
    request_ids: list[str] = Field(
        default_factory=list, description="Requests of the inbox to process; by default every one waiting."
    )


def setup(conn: duckdb.DuckDBPyConnection) -> None:
    conn.execute((SQL / "requests.sql").read_text())
    suppression.setup(conn)


def digest(key: str, identifier: subject.Identifier) -> str:
    """An identifier a request names, as suppressions digest it; one that names no one once normalised, or is
    malformed, is digested as given, so even its record holds it only as a digest."""
    try:
        pair = subject.given_value(identifier)
    except ValueError:
        pair = None
    return suppression.digest(key, *(pair or (identifier.type, identifier.value)))


def note(
    conn: duckdb.DuckDBPyConnection, request: Request, salt: str, status: str, detail: str = "", **counts: Any
) -> None:
    """Record a status (the request row and its history)."""
    conn.execute(
        """
        INSERT INTO privacy.requests (request_id, kind, received_at, status, identifier_types, identifier_digests,
                                      updated_at, detail)
        VALUES ($id, $kind, $received, $status, $types, $digests, now(), $detail)
        ON CONFLICT (request_id) DO UPDATE SET status = excluded.status, updated_at = now(), detail = excluded.detail
        """,
        {
            "id": request.request_id, "kind": request.kind, "received": request.received_at, "status": status,
            "types": [i.type for i in request.identifiers], "detail": detail,
            "digests": [digest(salt, i) for i in request.identifiers],
        },
    )  # fmt: skip
    for name, value in counts.items():
        conn.execute(f"UPDATE privacy.requests SET {name} = $value WHERE request_id = $id",
                     {"value": value, "id": request.request_id})  # fmt: skip
    conn.execute(
        "INSERT INTO privacy.request_events VALUES ($id, $status, now(), $detail)",
        {"id": request.request_id, "status": status, "detail": detail},
    )


def act(conn: duckdb.DuckDBPyConnection, request_id: str, target: str, action: str, items: int, status: str = "done",
        detail: str = "") -> None:  # fmt: skip
    conn.execute(
        "INSERT INTO privacy.request_actions VALUES ($id, $target, $action, $items, $status, $detail, now())",
        {"id": request_id, "target": target, "action": action, "items": items, "status": status, "detail": detail},
    )


def received(conn: duckdb.DuckDBPyConnection, request: Request, salt: str) -> None:
    known = conn.execute("SELECT 1 FROM privacy.requests WHERE request_id = $id", {"id": request.request_id})
    if known.fetchone() is None:
        note(conn, request, salt, "received", f"filed by {request.requested_by}")


def process(
    conn: duckdb.DuckDBPyConnection,
    request: Request,
    privacy: PrivacyResource,
    destinations: dict[str, DestinationResource],
) -> str:
    """Carry out one request; returns its final status. An error fails the request and is raised."""
    received(conn, request, privacy.salt)
    note(conn, request, privacy.salt, "running", f"attempt {request.attempts}")
    erased_before = conn.execute(  # by an earlier attempt: a retry then finds nothing left, and keeps its counts
        "SELECT count(*) FROM privacy.request_actions WHERE request_id = $id AND action = 'deleted'",
        {"id": request.request_id},
    ).fetchone()[0]
    try:
        subject.resolve(conn, request.identifiers, subject.existing_raw_tables(conn))
        profiles, records, found = conn.execute(
            "SELECT (SELECT count(*) FROM _subject_profiles), (SELECT count(*) FROM _subject_landings),"
            " (SELECT count(DISTINCT (raw_table, record_id)) FROM _subject_landings)"
        ).fetchone()
        held = conn.execute("SELECT DISTINCT id_type, value FROM _subject_values WHERE id_type <> 'profile'")
        conn.execute(
            "UPDATE privacy.requests SET subject_digests = $digests WHERE request_id = $id",
            {"digests": sorted(suppression.digest(privacy.salt, t, v) for t, v in held.fetchall()),
             "id": request.request_id},
        )  # fmt: skip
        if request.kind == "access":
            path = write_export(conn, request, privacy.exports_path)
            act(conn, request.request_id, "export", "written", records)
            status, detail, counts = "done", "export written", {"export_path": str(path)}
        else:
            status, detail, deleted = delete(conn, request, privacy, destinations)
            counts = {"rows_deleted": deleted}
        if not profiles and not records and status == "done" and not erased_before:
            status, detail = "not_found", "nothing found for the identifiers given"
        elif not profiles and records and status == "done":
            detail = f"{detail}; found {found} source records but no profile"
        if profiles or records or not erased_before:
            counts.update(profiles=profiles, records=records)
        else:
            counts = {}
        note(conn, request, privacy.salt, status, detail, **counts)
        return status
    except Exception as exc:
        note(conn, request, privacy.salt, "failed", f"{type(exc).__name__}: {redacted(str(exc))}")
        raise


def delete(
    conn: duckdb.DuckDBPyConnection,
    request: Request,
    privacy: PrivacyResource,
    destinations: dict[str, DestinationResource],
) -> tuple[str, str, int]:
    """Suppress, ask the destinations, then erase the warehouse; (status, detail, rows deleted).

    What each destination must forget is kept in the request's inbox file until it has: a retry after the
    warehouse is erased can no longer read it there.
    """
    kept = suppression.suppress(conn, privacy.salt, request.request_id)
    act(conn, request.request_id, "privacy.suppressions", "suppressed", kept)
    # The profiles left for review (`cdp privacy status`).
    conn.execute("UPDATE privacy.requests SET candidates = $candidates WHERE request_id = $id",
                 {"candidates": len(subject.candidates(conn)), "id": request.request_id})
    found = whom_to_forget(conn)
    waiting = request.pending or {name: {} for name in destinations}
    request.pending = {name: asdict(merged(found, earlier)) for name, earlier in waiting.items()}
    inbox.write(privacy.inbox_path, request)
    for name in list(request.pending):
        try:
            for action, items in destinations[name].erase(Erasure(**request.pending[name])).items():
                act(conn, request.request_id, name, action, items)
        except Exception as exc:  # the others go on; this one is asked again on the next attempt
            act(conn, request.request_id, name, "erase", 0, "failed", f"{type(exc).__name__}: {redacted(str(exc))}")
            continue
        del request.pending[name]
    forget_exports(conn, request.request_id)
    deleted = erasure.erase(conn)
    for table, rows in deleted.items():
        act(conn, request.request_id, table, "deleted", rows)
    inbox.write(privacy.inbox_path, request)
    if request.pending:
        return "partially_done", f"destinations still to erase: {', '.join(request.pending)}", sum(deleted.values())
    return "done", f"deleted from {len(deleted)} tables and {len(destinations)} destinations", sum(deleted.values())


def merged(found: Erasure, earlier: dict[str, Any]) -> Erasure:
    """What this attempt found, with what an earlier attempt found before the warehouse was erased."""
    if not earlier:
        return found
    before = Erasure(**earlier)
    records = {s: sorted({*found.records.get(s, []), *before.records.get(s, [])}) for s in {*found.records,
               *before.records}}  # fmt: skip
    return Erasure(
        profile_ids=sorted({*found.profile_ids, *before.profile_ids}),
        emails=sorted({*found.emails, *before.emails}),
        phones=sorted({*found.phones, *before.phones}),
        records=records,
        audiences=sorted({*found.audiences, *before.audiences}),
    )


def forget_exports(conn: duckdb.DuckDBPyConnection, request_id: str) -> None:
    """Access exports made earlier for the same person are deleted with them."""
    rows = conn.execute(
        "SELECT request_id, export_path FROM privacy.requests r WHERE kind = 'access' AND export_path IS NOT NULL"
        " AND list_has_any(r.subject_digests, (SELECT subject_digests FROM privacy.requests WHERE request_id = $id))",
        {"id": request_id},
    ).fetchall()
    for earlier, path in rows:
        Path(path).unlink(missing_ok=True)
        conn.execute("UPDATE privacy.requests SET export_path = NULL WHERE request_id = $id", {"id": earlier})
    if rows:
        act(conn, request_id, "exports", "deleted", len(rows))


def whom_to_forget(conn: duckdb.DuckDBPyConnection) -> Erasure:
    """What the destinations may know the subject by, read from the subject tables before they are erased."""
    values: dict[str, list[str]] = {}
    for id_type, value in conn.execute("SELECT DISTINCT id_type, value FROM _subject_values ORDER BY ALL").fetchall():
        values.setdefault(id_type, []).append(value)
    # An audience whose id is not configured has never been synced to; there is nothing to remove.
    audiences = sorted({os.environ[env] for spec in load_syncs().syncs.values() if spec.destination == "meta"
                        for env in spec.options_env.values() if os.getenv(env)})  # fmt: skip
    return Erasure(
        profile_ids=values.get("profile", []),
        emails=values.get("email", []),
        phones=values.get("phone", []),
        records={stream: values.get(f"record:{stream}", []) for stream in ("hubspot.contacts", "zendesk.users")},
        audiences=audiences,
    )


def write_export(conn: duckdb.DuckDBPyConnection, request: Request, folder: Path) -> Path:
    """Everything held about the subject, as one JSON document for the person."""
    layers = erasure.export(conn)
    document = {
        "request_id": request.request_id,
        "generated_at": datetime.now(UTC).isoformat(),
        "identifiers": [{"type": i.type, "value": i.value} for i in request.identifiers],
        "profiles": [p for (p,) in conn.execute("SELECT profile_id FROM _subject_profiles ORDER BY 1").fetchall()],
        "source_records": source_records(conn),
        "destinations": destinations_received(layers.get("sync", {})),
        "layers": layers,
    }
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{request.request_id}.json"
    path.write_text(json.dumps(document, indent=2, default=str))
    return path


def source_records(conn: duckdb.DuckDBPyConnection) -> list[dict[str, str]]:
    """Every source record the subject reaches, as the source names it."""
    found = set()
    present = subject.existing_raw_tables(conn)
    for stream in paths.PERSON_PATHS:
        table = raw_table(*stream.split("."))
        if table not in present:
            continue
        own = paths.json_path(paths.PERSON_PATHS[stream][f"record:{stream}"][0]) if (
            stream in paths.PERSON_STREAMS) else None  # fmt: skip
        key = "json_extract_string(payload, $own)" if own else "record_id"
        rows = conn.execute(
            f"SELECT DISTINCT {key} FROM {table} WHERE landing_id IN"
            " (SELECT landing_id FROM _subject_landings WHERE raw_table = $table)",
            {"table": table, **({"own": own} if own else {})},
        ).fetchall()
        found |= {(stream, record_id) for (record_id,) in rows}
    return [{"stream": stream, "record_id": record_id} for stream, record_id in sorted(found)]


def destinations_received(sync_layer: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Per sync: the destination, what it holds now and every delivery, from the sync log."""
    specs = load_syncs().syncs
    by_sync: dict[str, dict[str, Any]] = {}
    for row in sync_layer.get("sync.state", []):
        entry = by_sync.setdefault(row["sync"], {"sync": row["sync"], "deliveries": []})
        entry.update(holds=row["payload"], key=row["key"], last_synced_at=row["synced_at"])
    for row in sync_layer.get("sync.deliveries", []):
        entry = by_sync.setdefault(row["sync"], {"sync": row["sync"], "deliveries": []})
        entry["deliveries"].append({"operation": row["operation"], "fields": row["payload"], "at": row["delivered_at"]})
    for name, entry in by_sync.items():
        entry["destination"] = specs[name].destination if name in specs else "unknown"
    return sorted(by_sync.values(), key=lambda e: e["sync"])


# -- Dagster: the job, and the sensor that starts it for each request filed ----------------
@op(
    name=OP_NAME,
    required_resource_keys={"warehouse", "privacy", *DESTINATION_KEYS.values()},
    description="Carry out privacy requests from the inbox: deletion (with lasting suppression and every "
    "destination asked to forget) or an access export. Status history in privacy.request_events.",
)
def process_privacy_requests(context: OpExecutionContext, config: RequestsConfig) -> None:
    privacy: PrivacyResource = context.resources.privacy
    destinations = {name: getattr(context.resources, key) for name, key in DESTINATION_KEYS.items()}
    folder = privacy.inbox_path
    filed = [inbox.find(folder, i) for i in config.request_ids] if config.request_ids else list(inbox.pending(folder))
    failures = []
    deletions, named = [], set()  # deletions that may have erased, and what named their subjects
    with context.resources.warehouse.get_connection() as conn:
        setup(conn)
        for item in filed:
            if item is None:
                continue  # done by an earlier run
            request = inbox.attempt(item, folder)
            started = time.monotonic()
            try:
                status = process(conn, request, privacy, destinations)
            except Exception as exc:  # recorded as failed; the sensor tries again up to MAX_ATTEMPTS
                failures.append(f"{request.request_id}: {type(exc).__name__}: {redacted(str(exc))}")
                status = "failed"
            if request.kind == "deletion" and status != "not_found":  # a failed one may have erased already
                deletions.append(request.request_id)
                named |= erasure.subject_named(conn)
            if status in FINAL:
                inbox.close(folder, request.request_id)
            context.log.info(f"{request.request_id} ({request.kind}): {status} in {time.monotonic() - started:.1f}s")
    if deletions:  # the freed blocks still hold the people deleted: rewrite the files, under this run's turn
        failures += erase_on_disk(context, deletions, named)
    if failures:
        raise RuntimeError("privacy requests failed: " + "; ".join(failures))


def erase_on_disk(context: OpExecutionContext, deletions: list[str], named: set[str]) -> list[str]:
    """Dagster's storage scrubbed of what named the people deleted, then the warehouse and the alert store rewritten
    (compaction.py); each step recorded on every deletion as an action of its own target, a failure too. Returns the
    failures."""
    warehouse = context.resources.warehouse
    home = None if context.instance.is_ephemeral else Path(context.instance.root_directory)
    actions: list[tuple[str, str, int, str, str]] = []  # (target, action, items, status, detail)
    if home:
        try:
            actions.append(("dagster storage", "scrubbed", run_history.forget(home, named, context.run_id), "done", ""))
        except Exception as exc:
            actions.append(("dagster storage", "scrubbed", 0, "failed", f"{type(exc).__name__}: {redacted(str(exc))}"))
    try:
        for compacted in compaction.after_erasure(Path(warehouse.database), alerts_db(), named, warehouse.memory_limit):
            actions.append((compacted.path.name, "compacted", compacted.bytes_after, "done", compacted.detail))
    except Exception as exc:
        actions.append(("warehouse files", "compacted", 0, "failed", f"{type(exc).__name__}: {redacted(str(exc))}"))
    with warehouse.get_connection() as conn:
        for request_id in deletions:
            for target, action, items, status, detail in actions:
                act(conn, request_id, target, action, items, status, detail)
    context.log.info("erasure on disk: " + "; ".join(f"{t} {a} {status}: {d or i}" for t, a, i, status, d in actions))
    return [f"erasure on disk: {t} {a}: {d}" for t, a, _, status, d in actions if status == "failed"]


@job(executor_def=in_process_executor, description="Privacy requests from the inbox (started by its sensor).")
def privacy_requests() -> None:
    process_privacy_requests()


@sensor(
    job=privacy_requests,
    minimum_interval_seconds=30,
    default_status=DefaultSensorStatus.RUNNING,
    description="Starts privacy_requests for each request filed in the inbox, and again after a failed attempt.",
)
def privacy_inbox_sensor(context: SensorEvaluationContext, privacy: PrivacyResource) -> Iterator[RunRequest]:
    for filed in inbox.pending(privacy.inbox_path):
        if filed.request.attempts >= inbox.MAX_ATTEMPTS:
            continue
        config = RequestsConfig(request_ids=[filed.request.request_id])
        yield RunRequest(
            run_key=f"{filed.request.request_id}:{filed.version}",
            run_config=RunConfig(ops={OP_NAME: config}),
            tags={"privacy/request": filed.request.request_id, "privacy/kind": filed.request.kind},
        )

"""Alerts: a failed run, or a check that failed in a run that otherwise succeeded, reaches people.

Two sensors, running by default, watch every job of the code location. Each alert says what failed,
which assets and checks, and links to the run. It is always kept in the alerts table (`alerts` in
`CDP_ALERTS_DB`, beside the warehouse by default: its own file, because a run holds the warehouse's
lock while it writes and an alert must not wait for it), and posted to `CDP_ALERT_WEBHOOK_URL` when one
is set, as a Slack-compatible message (`text` plus `blocks`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import requests
from dagster import (
    AssetCheckEvaluation,
    DagsterEventType,
    DagsterInstance,
    DagsterRun,
    DagsterRunStatus,
    DefaultSensorStatus,
    RunFailureSensorContext,
    RunStatusSensorContext,
    run_failure_sensor,
    run_status_sensor,
)

from cdp_assets.privacy.erasure import SCRUBBED, names_subject
from cdp_assets.privacy.redact import redacted
from cdp_assets.warehouse_access import when_unlocked
from resources import DEFAULT_WAREHOUSE
from resources.http import ApiClient, ServiceError

WEBHOOK = "CDP_ALERT_WEBHOOK_URL"  # a secret: a Slack webhook's URL is its key

TABLE_SQL = """
CREATE TABLE IF NOT EXISTS alerts (
    raised_at TIMESTAMPTZ NOT NULL,
    kind VARCHAR NOT NULL,          -- run_failed or checks_failed
    run_id VARCHAR NOT NULL,
    job VARCHAR NOT NULL,
    summary VARCHAR NOT NULL,
    failed_steps VARCHAR[] NOT NULL,
    failed_checks VARCHAR[] NOT NULL,
    link VARCHAR NOT NULL,
    webhook VARCHAR NOT NULL        -- posted, failed: <reason>, or not configured
)
"""
LOCK_WAIT_SECONDS = 60.0  # a privacy run compacting the store holds its lock for a moment


@dataclass
class Alert:
    kind: str
    run_id: str
    job: str
    summary: str
    failed_steps: list[str] = field(default_factory=list)
    failed_checks: list[str] = field(default_factory=list)
    link: str = ""
    raised_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())


def alerts_db() -> Path:
    default = Path(os.getenv("CDP_WAREHOUSE", str(DEFAULT_WAREHOUSE))).parent / "alerts.duckdb"
    return Path(os.getenv("CDP_ALERTS_DB", str(default)))


def run_link(run_id: str) -> str:
    return f"{os.getenv('CDP_UI_URL', 'http://127.0.0.1:3000').rstrip('/')}/runs/{run_id}"


def failed_evaluations(instance: DagsterInstance, run_id: str) -> list[AssetCheckEvaluation]:
    """The check evaluations of the run that did not pass."""
    found = []
    for record in instance.all_logs(run_id, of_type=DagsterEventType.ASSET_CHECK_EVALUATION):
        evaluation = record.dagster_event.event_specific_data if record.dagster_event else None
        if evaluation is not None and not evaluation.passed:
            found.append(evaluation)
    return found


def failed_checks(instance: DagsterInstance, run_id: str) -> list[str]:
    """`asset:check (severity)` for each check evaluation of the run that did not pass."""
    return sorted({f"{evaluation.asset_key.to_user_string()}:{evaluation.check_name} "
                   f"({evaluation.severity.value.lower()})"
                   for evaluation in failed_evaluations(instance, run_id)})  # fmt: skip


def unread_sources(instance: DagsterInstance, run_id: str) -> list[str]:
    """`source (error)` for each source whose pulls failed in the run (`source_reachable`, cdp_assets/raw_checks.py):
    the run went on without it, so the alert names it first."""
    errors: dict[str, str] = {}
    for evaluation in failed_evaluations(instance, run_id):
        if evaluation.check_name == "source_reachable" and "source" in evaluation.metadata:
            error = evaluation.metadata.get("error")
            errors.setdefault(str(evaluation.metadata["source"].value), redacted(str(error.value) if error else ""))
    return [f"{source} ({error})" for source, error in sorted(errors.items())]


def _unread_note(instance: DagsterInstance, run_id: str) -> str:
    sources = unread_sources(instance, run_id)
    return f". Sources not read (the run used their last good data): {', '.join(sources)}" if sources else ""


def failed_steps(instance: DagsterInstance, run_id: str) -> list[str]:
    """`step: Error: first line` for each step that failed in the run."""
    found = []
    for record in instance.all_logs(run_id, of_type=DagsterEventType.STEP_FAILURE):
        error = record.dagster_event.event_specific_data.error if record.dagster_event else None
        cause = error.cause if error and error.cause else error
        reason = f"{cause.cls_name}: {redacted(cause.message)}" if cause else "failed"
        found.append(f"{record.step_key}: {reason}")
    return found


def run_failed(instance: DagsterInstance, run: DagsterRun) -> Alert:
    steps, checks = failed_steps(instance, run.run_id), failed_checks(instance, run.run_id)
    what = "; ".join(steps) or "the run failed before any step did"
    summary = f"{run.job_name} failed: {what}" + (f". Checks failed: {', '.join(checks)}" if checks else "")
    summary += _unread_note(instance, run.run_id)
    return Alert("run_failed", run.run_id, run.job_name, summary, steps, checks, run_link(run.run_id))


def checks_failed(instance: DagsterInstance, run: DagsterRun) -> Alert | None:
    checks = failed_checks(instance, run.run_id)
    if not checks:
        return None
    summary = f"{run.job_name} succeeded, but checks failed: {', '.join(checks)}" + _unread_note(instance, run.run_id)
    return Alert("checks_failed", run.run_id, run.job_name, summary, [], checks, run_link(run.run_id))


def post(url: str, alert: Alert) -> str:
    """Post a Slack-compatible message; what became of it, for the alerts table. Retried under the one policy every
    client keeps (`resources/http.py`), three times at most: an alert must not hold up the sensor for long."""
    icon = ":red_circle:" if alert.kind == "run_failed" else ":warning:"
    message = {
        "text": f"{icon} {alert.summary} {alert.link}",
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": f"{icon} *{alert.summary}*"}},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": f"<{alert.link}|Open the run>"}]},
        ],
    }
    try:
        webhook = ApiClient("alert webhook", base_url=url, credential_env=WEBHOOK, timeout_seconds=10, max_retries=3)
        webhook.request("POST", url, json=message)
    except ServiceError as exc:  # its text names the URL, itself a secret: only the answer's status or the error's kind
        return f"failed: answered {exc.status}" if exc.status else f"failed: {type(exc.__cause__).__name__}"
    except (requests.RequestException, ValueError) as exc:  # a URL that is not one (its text, again, the secret)
        return f"failed: {type(exc).__name__}"
    return "posted"


def deliver(alert: Alert) -> str:
    """Keep the alert in the alerts table, and post it when a webhook is configured."""
    url = os.getenv(WEBHOOK)
    webhook = post(url, alert) if url else "not configured"
    path = alerts_db()
    path.parent.mkdir(parents=True, exist_ok=True)
    with store(path) as conn:
        row = {**asdict(alert), "webhook": webhook}
        conn.execute(
            "INSERT INTO alerts VALUES ($raised_at, $kind, $run_id, $job, $summary, $failed_steps, $failed_checks,"
            " $link, $webhook)",
            row,
        )
    return webhook


@contextmanager
def store(path: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    """The alerts table, once no other process holds the file's lock (a privacy run rewrites it after a deletion)."""
    conn = when_unlocked(lambda: duckdb.connect(str(path)), LOCK_WAIT_SECONDS)
    try:
        conn.execute(TABLE_SQL)
        yield conn
    finally:
        conn.close()


def forget(path: Path, named: set[str]) -> int:
    """Scrub the alerts whose text names a person deleted on request (a profile, record or destination id survives
    redaction, as in `sync.runs`): the rows stay, they count failures; the texts go. Alerts scrubbed."""
    with store(path) as conn:
        conn.execute("CREATE TEMP TABLE _forgotten AS SELECT unnest($named::VARCHAR[]) AS value",
                     {"named": sorted(named)})  # fmt: skip
        scrubbed = conn.execute(
            f"""
            UPDATE alerts SET summary = $scrubbed, failed_steps = [$scrubbed] WHERE rowid IN (
                SELECT rowid FROM (SELECT rowid, summary || ' ' || array_to_string(failed_steps, ' ') AS message
                                   FROM alerts)
                WHERE {names_subject("_forgotten")})
            """,
            {"scrubbed": SCRUBBED},
        ).fetchone()
    return int(scrubbed[0]) if scrubbed else 0


@run_failure_sensor(
    name="run_failure_alerts",
    default_status=DefaultSensorStatus.RUNNING,
    description="Every failed run: what failed, which assets and checks, a link; to the alerts table and webhook.",
)
def run_failure_alerts(context: RunFailureSensorContext) -> None:
    alert = run_failed(context.instance, context.dagster_run)
    context.log.info(f"alert for {alert.run_id}: {deliver(alert)}")


@run_status_sensor(
    name="check_failure_alerts",
    run_status=DagsterRunStatus.SUCCESS,
    default_status=DefaultSensorStatus.RUNNING,
    description="Every run that succeeded with checks failing (warnings: quarantine rate, volume, rejected rows).",
)
def check_failure_alerts(context: RunStatusSensorContext) -> None:
    alert = checks_failed(context.instance, context.dagster_run)
    if alert is not None:
        context.log.info(f"alert for {alert.run_id}: {deliver(alert)}")


SENSORS = [run_failure_alerts, check_failure_alerts]

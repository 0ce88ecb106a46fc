"""Alerts: a failed run and a run with failing checks reach the sandbox's webhook receiver and the alerts table."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import duckdb
import pytest
from dagster import DagsterEventType, build_run_status_sensor_context

from schedules.alerts import check_failure_alerts, run_failure_alerts
from tests.conftest import Env, Pipeline, RunOutcome


@pytest.fixture
def alerting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[str], Path]:
    """Alerts go to the sandbox's webhook receiver (its secret URL) and to an alerts table in tmp_path."""

    def to(webhook_url: str) -> Path:
        monkeypatch.setenv("CDP_ALERT_WEBHOOK_URL", webhook_url)
        monkeypatch.setenv("CDP_ALERTS_DB", str(tmp_path / "alerts.duckdb"))
        monkeypatch.setenv("CDP_UI_URL", "http://dagster.example")
        return tmp_path / "alerts.duckdb"

    return to


def alerts(path: Path) -> list[dict[str, object]]:
    with duckdb.connect(str(path), read_only=True) as conn:
        cursor = conn.execute("SELECT * FROM alerts ORDER BY raised_at")
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def test_a_failed_run_is_posted_with_the_step_the_error_and_a_link(
    sandbox, alerting: Callable[[str], Path], tmp_path: Path
) -> None:
    table = alerting(sandbox.webhook_url)
    (tmp_path / "taken").write_text("")  # the warehouse's folder is a file: no pull can land
    pipeline = Pipeline(sandbox.url, tmp_path / "taken" / "warehouse.duckdb")
    outcome = pipeline.run(selection=["raw/stripe_customers"], raise_on_error=False)
    assert not outcome.success
    run = pipeline.instance.get_run_by_id(outcome.run_id)
    [failure] = pipeline.instance.all_logs(outcome.run_id, of_type=DagsterEventType.RUN_FAILURE)
    context = build_run_status_sensor_context(
        sensor_name="run_failure_alerts", dagster_event=failure.dagster_event, dagster_instance=pipeline.instance,
        dagster_run=run,
    ).for_run_failure()  # fmt: skip
    run_failure_alerts(context)

    [message] = sandbox.control("webhook")
    text = message["text"]
    assert "raw__stripe_customers" in text and "FileExistsError" in text
    assert f"http://dagster.example/runs/{outcome.run_id}" in text
    assert message["blocks"][0]["type"] == "section"
    [row] = alerts(table)
    assert (row["kind"], row["run_id"], row["webhook"]) == ("run_failed", outcome.run_id, "posted")
    assert row["failed_steps"] and row["failed_steps"][0].startswith("raw__stripe_customers: ")


def sense_failed_checks(pipeline: Pipeline, outcome: RunOutcome) -> None:
    """Evaluate the check-failure sensor for a run that succeeded, as the daemon would."""
    run = pipeline.instance.get_run_by_id(outcome.run_id)
    [success] = pipeline.instance.all_logs(outcome.run_id, of_type=DagsterEventType.RUN_SUCCESS)
    check_failure_alerts(build_run_status_sensor_context(
        sensor_name="check_failure_alerts", dagster_event=success.dagster_event, dagster_instance=pipeline.instance,
        dagster_run=run,
    ))  # fmt: skip


def test_a_source_refusing_the_credentials_is_posted_with_the_source_and_the_variable_to_fix(
    pipeline: Pipeline, sandbox, alerting: Callable[[str], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    table = alerting(sandbox.webhook_url)
    monkeypatch.setenv("STRIPE_API_KEY", "sk_test_revoked")
    outcome = pipeline.run(selection=["raw/stripe_customers"])
    assert outcome.success  # the run goes on without the source (tests/test_source_outage.py)
    sense_failed_checks(pipeline, outcome)

    [message] = sandbox.control("webhook")
    text = message["text"]
    assert "Sources not read" in text and "stripe (ServiceConfigurationError" in text and "STRIPE_API_KEY" in text
    assert f"http://dagster.example/runs/{outcome.run_id}" in text and "sk_test_revoked" not in text
    [row] = alerts(table)
    assert row["kind"] == "checks_failed"
    assert row["failed_checks"] == [  # never read: stale too
        "raw/stripe_customers:source_fresh (error)", "raw/stripe_customers:source_reachable (error)"
    ]


def test_checks_failing_in_a_successful_run_are_posted_and_kept_without_a_webhook(
    start: Callable[..., Env], alerting: Callable[[str], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    env = start({"accounts": {"hubspot_contact_properties": {"cdp_subscription_status": ["active"]}}})
    table = alerting(env.sandbox.webhook_url)
    outcome = env.sync("hubspot_contacts")  # HubSpot now refuses every status but one
    assert outcome.success and outcome.metadata["sync/hubspot_contacts"]["rejected"] > 0
    run = env.pipeline.instance.get_run_by_id(outcome.run_id)
    [success] = env.pipeline.instance.all_logs(outcome.run_id, of_type=DagsterEventType.RUN_SUCCESS)
    context = build_run_status_sensor_context(
        sensor_name="check_failure_alerts", dagster_event=success.dagster_event,
        dagster_instance=env.pipeline.instance, dagster_run=run,
    )  # fmt: skip
    check_failure_alerts(context)
    [message] = env.sandbox.control("webhook")
    assert "checks failed: sync/hubspot_contacts:no_rejections (warn)" in message["text"]

    monkeypatch.delenv("CDP_ALERT_WEBHOOK_URL")  # no chat tool: the table still has it
    check_failure_alerts(context)
    assert [row["webhook"] for row in alerts(table)] == ["posted", "not configured"]
    assert os.environ.get("CDP_ALERT_WEBHOOK_URL") is None

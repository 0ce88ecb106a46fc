"""`cdp launch`: a run started from the command line that joins the run queue.

The run is submitted to the Dagster webserver, as the UI's launch button does, so the instance queues it with
the scheduled ones and runs one at a time (DuckDB allows one writer). `dg launch` and `dagster asset
materialize` run in the calling process instead, beside whatever run holds the warehouse. Commands that write
the warehouse (`cdp profile never-link`, `cdp privacy process`) go the same way, through `write`.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
import time
import warnings
from datetime import UTC, date, datetime
from typing import Any

import requests

from cdp_assets import stack, warehouse_access

DEFAULT_UI_URL = "http://127.0.0.1:3000"
ASSET_JOB = "__ASSET_JOB"  # the implicit job of every asset, which the UI launches a selection of
FINISHED = ("SUCCESS", "FAILURE", "CANCELED")
POLL_SECONDS = 2.0
MESSAGE_CHARS = 400  # a config error lists every op's schema after its first sentence
RUN_QUERY = "query ($id: ID!) { runOrError(runId: $id) { __typename ... on Run { status } } }"


def add_queue_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ui-url", default=os.environ.get("CDP_UI_URL") or DEFAULT_UI_URL,
                        help="the Dagster webserver that queues the run (default %(default)s, from CDP_UI_URL if set)")
    parser.add_argument("--wait", action="store_true", help="wait for the run to finish; exit 1 unless it succeeds")


def add_writer_options(parser: argparse.ArgumentParser) -> None:
    """Options of a command that writes the warehouse: through the run queue, or here for a warehouse that no
    running Dagster serves."""
    add_queue_options(parser)
    parser.add_argument("--in-process", action="store_true",
                        help="run the job in this process, on --warehouse, when no Dagster serves it")
    warehouse_access.add_wait_option(parser)


def add_parser(commands: argparse._SubParsersAction) -> None:
    launch = commands.add_parser("launch", help="queue a run of assets or a job on the running Dagster (make run)")
    which = launch.add_mutually_exclusive_group(required=True)
    which.add_argument("--assets", help="an asset selection, e.g. 'group:staging', 'raw/hubspot_contacts*' or "
                                        "'sync/meta_retargeting' (commas join several)")  # fmt: skip
    which.add_argument("--job", help="a job, e.g. hourly_pipeline")
    launch.add_argument("--config-json", type=json.loads, default={}, help="run config as JSON, e.g. "
                        """'{"ops": {"raw__stripe_customers": {"config": {"full_refresh": true}}}}'""")  # fmt: skip
    launch.add_argument("--days", type=days_range, help="the days an asset partitioned by day exports "
                        "(raw/mixpanel_events, raw/klaviyo_events), FIRST..LAST or one day: a backfill, a late "
                        "window read again (default: what its cursor has not read; for a job, what its schedule "
                        "would name)")
    add_queue_options(launch)


def days_range(text: str) -> tuple[str, str]:
    """`FIRST..LAST` (or one day) as ISO days, first not after last."""
    first, _, last = text.partition("..")
    try:
        days = (date.fromisoformat(first).isoformat(), date.fromisoformat(last or first).isoformat())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give days as YYYY-MM-DD..YYYY-MM-DD or one YYYY-MM-DD") from None
    if days[0] > days[1]:
        raise argparse.ArgumentTypeError(f"{text!r}: the first day is after the last")
    return days


def run(args: argparse.Namespace) -> None:
    from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

    assets = selected_assets(args.assets) if args.assets else None
    what = f"{len(assets)} asset(s) of {args.assets!r}" if assets else args.job
    run_config, tags = args.config_json, {}
    scheduled = scheduled_run(args.job) if args.job and not args.config_json else None
    if scheduled is not None:  # the config and the days of events its schedule would give it
        run_config, tags = scheduled
    if args.days:
        tags = {**tags, ASSET_PARTITION_RANGE_START_TAG: args.days[0], ASSET_PARTITION_RANGE_END_TAG: args.days[1]}
    submit(args.ui_url, args.job or ASSET_JOB, what, args.wait, tags=tags, assets=assets, run_config=run_config)


def scheduled_run(job: str) -> tuple[dict[str, Any], dict[str, str]] | None:
    """The run config and tags `job`'s schedule would ask for now (None for a job no schedule runs): its days of
    events follow what the instance at DAGSTER_HOME (`make shell` sets it) records as landed."""
    from dagster import DagsterInstance, build_schedule_context
    from dagster._core.storage.tags import SCHEDULE_NAME_TAG

    from cdp_assets.definitions import defs

    schedule = next((schedule for schedule in defs.schedules or [] if schedule.job_name == job), None)
    if schedule is None:
        return None
    if not os.environ.get("DAGSTER_HOME"):
        raise SystemExit(f"{job} names the days it exports by the instance's record: set DAGSTER_HOME (`make shell`)")
    with DagsterInstance.get() as instance:
        context = build_schedule_context(instance=instance, scheduled_execution_time=datetime.now(UTC))
        [request] = schedule.evaluate_tick(context).run_requests
    return request.run_config, {key: value for key, value in request.tags.items() if key != SCHEDULE_NAME_TAG}


def selected_assets(selection: str) -> list[list[str]]:
    """The key paths an asset selection names in the project's definitions, in Dagster's selection syntax."""
    from dagster import AssetSelection, BetaWarning, DagsterError

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BetaWarning)  # Dagster's notes on its own API, nothing the user can act on
        from cdp_assets.definitions import defs

        try:
            keys = AssetSelection.from_coercible(selection.split(",")).resolve(defs.resolve_asset_graph())
        except DagsterError as exc:  # a selection that does not parse, or names an asset that does not exist
            raise SystemExit(f"--assets {selection!r}: {str(exc).splitlines()[0]}") from None
    if not keys:
        raise SystemExit(f"--assets {selection!r} selects no asset; `dg list defs` lists them")
    return sorted(key.path for key in keys)


def submit(ui_url: str, job: str, what: str, wait: bool, tags: dict[str, str] | None = None, **launch: Any) -> None:
    """Queue a run of `job` (with `tags`) on the webserver at `ui_url` and say where to follow it; with `wait`,
    wait for it and exit 1 unless it succeeds."""
    try:
        location, repository = stack.code_location(ui_url)
    except stack.NotReady as exc:
        raise SystemExit(f"{exc}: start the stack with `make run` (or `cdp run`), or point --ui-url or "
                         "CDP_UI_URL at it") from None  # fmt: skip
    except RuntimeError as exc:  # the code location failed to load
        raise SystemExit(str(exc)) from None
    tags = {**(tags or {}), "cdp/launched_by": f"cli:{getpass.getuser()}"}
    try:
        run_id = stack.launch_job(ui_url, location, repository, job, tags=tags, **launch)
    except RuntimeError as exc:  # refused: an unknown job, config that does not fit it
        problem = str(exc)
        raise SystemExit(problem if len(problem) <= MESSAGE_CHARS else problem[:MESSAGE_CHARS] + "...") from None
    print(f"queued run {run_id} ({what}): {ui_url}/runs/{run_id}", flush=True)
    if wait:
        status = wait_for_run(ui_url, run_id)
        if status != "SUCCESS":
            raise SystemExit(f"run {run_id} ended {status}: {ui_url}/runs/{run_id}")
        print(f"run {run_id} succeeded", flush=True)


def write(args: argparse.Namespace, job: str, what: str, run_config: dict[str, Any]) -> None:
    """Run a job that writes the warehouse: queued on the running Dagster, or with --in-process in this process on
    an ephemeral instance, once no other process holds the warehouse (`args.warehouse`)."""
    if not args.in_process:
        submit(args.ui_url, job, what, args.wait, run_config=run_config)
        return
    os.environ["CDP_WAREHOUSE"] = str(args.warehouse)  # read by the definitions' resources
    with warehouse_access.connect(args.warehouse, args.wait_seconds, read_only=False):
        pass  # wait here, with a message, rather than fail in the run
    from dagster import DagsterInstance

    from cdp_assets.definitions import defs

    result = defs.resolve_job_def(job).execute_in_process(
        run_config=run_config, instance=DagsterInstance.ephemeral(), raise_on_error=False
    )
    if not result.success:
        raise SystemExit(f"{what} failed; its log is above")


def wait_for_run(ui_url: str, run_id: str) -> str:
    """Poll the run until it finishes, saying on stderr when its status changes; its final status."""
    shown, link = None, f"{ui_url}/runs/{run_id}"
    try:
        while True:
            try:
                found = stack.graphql(ui_url, RUN_QUERY, {"id": run_id})["runOrError"]
            except requests.RequestException as exc:
                lost = f"lost the webserver at {ui_url} ({type(exc).__name__}); the run goes on: {link}"
                raise SystemExit(lost) from None
            status = found.get("status", found["__typename"])
            if status != shown:
                print(f"run {run_id}: {status.lower()}", file=sys.stderr, flush=True)
                shown = status
            if status in FINISHED or found["__typename"] != "Run":
                return status
            time.sleep(POLL_SECONDS)
    except KeyboardInterrupt:
        raise SystemExit(f"stopped waiting; the run goes on: {link}") from None

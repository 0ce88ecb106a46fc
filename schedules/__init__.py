"""The two paths the pipeline runs on by itself: hourly incremental pulls and a nightly full re-pull, and the
instance settings the runs share (schedules/dagster.yaml)."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from datetime import datetime

from dagster import (
    AssetCheckKey,
    AssetKey,
    AssetSelection,
    DagsterInstance,
    DailyPartitionsDefinition,
    DefaultScheduleStatus,
    PartitionKeyRange,
    RunConfig,
    RunRequest,
    ScheduleDefinition,
    ScheduleEvaluationContext,
    define_asset_job,
)
from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from resources import COMPACTION_DEFERRED, COMPACTION_TAG
from resources.source import LATE_DAYS

# The streams exported by day, by their raw asset: each run of the schedules names the days it exports.
EventDays = Mapping[AssetKey, DailyPartitionsDefinition]

HOURLY_CRON = "5 * * * *"
NIGHTLY_CRON = "30 2 * * *"
TIMEZONE = "UTC"


def build_jobs(
    nightly_config: RunConfig,
    nightly_only: Sequence[AssetKey] = (),
    nightly_checks: Sequence[AssetCheckKey] = (),
) -> list[UnresolvedAssetJobDefinition]:
    """The two paths. The hourly one leaves out what `nightly_only` and `nightly_checks` name: the quality
    scorecard, the executive views, the identity graph's comparison with a rebuild from scratch, the staging
    replays' comparison with the incremental builds, nightly syncs.
    The nightly one runs with `nightly_config`, which asks its pulls to read every record again, its staging
    builds to replay raw through the contracts and the identity graph to rebase its matcher; the hourly one reads
    what changed."""
    hourly = AssetSelection.all() - AssetSelection.assets(*nightly_only) - AssetSelection.checks(*nightly_checks)
    return [
        define_asset_job(
            "hourly_pipeline",
            selection=hourly,
            tags={COMPACTION_TAG: COMPACTION_DEFERRED},  # the nightly run compacts what hourly runs thinned
            description="Incremental pulls from every source, contracts on the records that changed, identity and "
            "profiles, the team views and the syncs.",
        ),
        define_asset_job(
            "nightly_pipeline",
            selection=AssetSelection.all(),
            config=nightly_config,
            description="Full re-pull of every source (repairs drift, catches deletions), staging replayed, the "
            "graph the hourly runs kept compared with a rebuild from scratch, the identity matcher rebased, "
            "everything downstream, the quality scorecard and the executive views.",
        ),
    ]


def days_to_read(
    days: DailyPartitionsDefinition, landed: Collection[str], now: datetime, every_day: bool
) -> PartitionKeyRange:
    """The days a run exports, through today: every day for the nightly run; for the hourly one, from the newest day
    landed (the first day, when none has) or the late window's first day, whichever is earlier, so a schedule
    that stopped for a while catches up on the days it missed."""
    keys = days.get_partition_keys(current_time=now)
    late = keys[max(0, len(keys) - 1 - LATE_DAYS)]
    start = keys[0] if every_day or not landed else min(late, max(landed))
    return PartitionKeyRange(start, keys[-1])


def days_tags(event_days: EventDays, now: datetime, instance: DagsterInstance | None = None) -> dict[str, str]:
    """The tags that make a run export a range of days (in one step: `BackfillPolicy.single_run`): every day
    without an `instance`, else from the earliest start any stream exported by day needs by what it records as
    landed, through today."""
    ranges = [
        days_to_read(days, instance.get_materialized_partitions(key) if instance else (), now, instance is None)
        for key, days in event_days.items()
    ]
    if not ranges:
        return {}
    start = min(chosen.start for chosen in ranges)
    return {ASSET_PARTITION_RANGE_START_TAG: start, ASSET_PARTITION_RANGE_END_TAG: ranges[0].end}


def build_schedules(jobs: list[UnresolvedAssetJobDefinition], event_days: EventDays) -> list[ScheduleDefinition]:
    by_name = {job.name: job for job in jobs}

    def schedule(name: str, cron: str, every_day: bool, description: str) -> ScheduleDefinition:
        def run_request(context: ScheduleEvaluationContext) -> RunRequest:
            now = context.scheduled_execution_time
            # The job's config spelled out: a job holding partitioned assets applies its own only to a run of
            # one partition, and these runs name a range of days.
            return RunRequest(run_config=by_name[name].config or {},
                              tags=days_tags(event_days, now, None if every_day else context.instance))

        return ScheduleDefinition(
            name=f"{name}_schedule",
            job=by_name[name],
            cron_schedule=cron,
            execution_timezone=TIMEZONE,
            default_status=DefaultScheduleStatus.RUNNING,
            description=description,
            execution_fn=run_request,
        )

    return [
        schedule("hourly_pipeline", HOURLY_CRON, False, "Every hour: incremental pulls and the layers they feed; "
                 "the events of the days since the newest one landed, with the late window before it."),
        schedule("nightly_pipeline", NIGHTLY_CRON, True, "Every night: full re-pulls and the layers they feed; "
                 "the events of every day."),
    ]

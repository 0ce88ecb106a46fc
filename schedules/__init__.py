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

from cdp_assets.raw import SOURCE_FAILED, SOURCE_STATUS
from resources import COMPACTION_DEFERRED, COMPACTION_TAG
from resources.source import LATE_DAYS

# The streams exported by day, by their raw asset: each run of the schedules names the days it exports.
EventDays = Mapping[AssetKey, DailyPartitionsDefinition]

RECENT_RUNS = 200  # materialisations read past a night's every day: a day's hourly runs, and backfills
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
    """The days a run exports, through today: every day for the nightly run; for the hourly one, from the first day
    not landed or the late window before the newest day landed (what a cursor resumes from), whichever is earlier,
    so a schedule that stopped, or a pull that failed, catches up on the days it missed."""
    keys = days.get_partition_keys(current_time=now)
    if every_day or not landed:
        return PartitionKeyRange(keys[0], keys[-1])
    newest = max((n for n, key in enumerate(keys) if key in landed), default=len(keys) - 1)
    missed = next((key for key in keys if key not in landed), keys[-1])
    return PartitionKeyRange(min(keys[max(0, newest - LATE_DAYS)], missed), keys[-1])


def landed_days(instance: DagsterInstance, key: AssetKey, recent: int) -> set[str]:
    """The days materialised whose latest materialisation among the `recent` newest read its source: a pull whose
    source failed still completes its step (the run goes on with the other sources), so Dagster records its days."""
    landed = instance.get_materialized_partitions(key)
    seen: set[str | None] = set()
    for record in instance.fetch_materializations(key, limit=recent).records:
        if record.partition_key in seen:
            continue
        seen.add(record.partition_key)
        status = record.asset_materialization.metadata.get(SOURCE_STATUS) if record.asset_materialization else None
        if status is not None and status.value == SOURCE_FAILED:
            landed.discard(record.partition_key)
    return landed


def days_tags(event_days: EventDays, now: datetime, instance: DagsterInstance | None = None) -> dict[str, str]:
    """The tags that make a run export a range of days (in one step: `BackfillPolicy.single_run`): every day
    without an `instance`, else the days `days_to_read` names by what the instance records as landed."""
    ranges = []
    for key, days in event_days.items():
        recent = len(days.get_partition_keys(current_time=now)) + RECENT_RUNS  # a night's every day, and hours
        landed = landed_days(instance, key, recent) if instance else set()
        ranges.append(days_to_read(days, landed, now, instance is None))
    return _range_tags(ranges)


def late_window_tags(event_days: EventDays, now: datetime) -> dict[str, str]:
    """The tags of the days an hourly run names once every day has landed: the late window through today."""
    return _range_tags([days_to_read(days, set(days.get_partition_keys(current_time=now)), now, False)
                        for days in event_days.values()])  # fmt: skip


def _range_tags(ranges: list[PartitionKeyRange]) -> dict[str, str]:
    """One range of days for every stream's (their partitions are the same days): from the earliest first day."""
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

"""The two paths the pipeline runs on by itself: hourly incremental pulls and a nightly full re-pull, and the
instance settings the runs share (schedules/dagster.yaml)."""

from __future__ import annotations

from collections.abc import Sequence

from dagster import (
    AssetCheckKey,
    AssetKey,
    AssetSelection,
    DefaultScheduleStatus,
    RunConfig,
    ScheduleDefinition,
    define_asset_job,
)
from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

from resources import COMPACTION_DEFERRED, COMPACTION_TAG

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


def build_schedules(jobs: list[UnresolvedAssetJobDefinition]) -> list[ScheduleDefinition]:
    by_name = {job.name: job for job in jobs}
    return [
        ScheduleDefinition(
            name="hourly_pipeline_schedule",
            job=by_name["hourly_pipeline"],
            cron_schedule=HOURLY_CRON,
            execution_timezone=TIMEZONE,
            default_status=DefaultScheduleStatus.RUNNING,
            description="Every hour: incremental pulls and the layers they feed.",
        ),
        ScheduleDefinition(
            name="nightly_pipeline_schedule",
            job=by_name["nightly_pipeline"],
            cron_schedule=NIGHTLY_CRON,
            execution_timezone=TIMEZONE,
            default_status=DefaultScheduleStatus.RUNNING,
            description="Every night: full re-pulls and the layers they feed.",
        ),
    ]

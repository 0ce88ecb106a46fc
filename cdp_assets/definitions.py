"""Everything Dagster loads: assets by layer, resources, jobs and schedules."""

from __future__ import annotations

from dagster import Definitions, in_process_executor

from cdp_assets.raw import build_raw_assets
from cdp_assets.scorecard import build_scorecard_asset
from cdp_assets.staging import build_staging_assets
from resources import build_resources
from schedules import build_jobs, build_schedules

raw_assets = build_raw_assets()
staging_assets = build_staging_assets()
scorecard = build_scorecard_asset([a.key for a in staging_assets])
jobs = build_jobs(raw_assets)

# Steps run in one process: DuckDB allows a single writer, and runs are queued one at a
# time by the instance (schedules/dagster.yaml).
defs = Definitions(
    assets=[*raw_assets, *staging_assets, scorecard],
    resources=build_resources(),
    jobs=jobs,
    schedules=build_schedules(jobs),
    executor=in_process_executor,
)

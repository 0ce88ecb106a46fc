"""Everything Dagster loads: assets by layer, resources, jobs and schedules."""

from __future__ import annotations

from collections.abc import Set

from dagster import AssetKey, Definitions, RunConfig, in_process_executor

from cdp_assets.identity.assets import (
    GRAPH_KEY,
    IDENTIFIERS_KEY,
    REBUILD_CHECK,
    build_graph_asset,
    build_identifiers_asset,
)
from cdp_assets.identity.lifecycle import build_lifecycle_asset
from cdp_assets.identity.never_link import never_link
from cdp_assets.identity.profiles import PROFILES_KEY, build_profile_assets
from cdp_assets.identity.rules import load as load_identity_rules
from cdp_assets.privacy.consent import build_consent_assets
from cdp_assets.privacy.requests import privacy_inbox_sensor, privacy_requests
from cdp_assets.raw import build_raw_assets, days_of_streams
from cdp_assets.scorecard import build_scorecard_asset
from cdp_assets.staging import build_staging_assets
from cdp_assets.staging_checks import build_replay_checks
from cdp_assets.sync.assets import build_sync_assets, sync_key
from cdp_assets.sync.specs import load as load_syncs
from cdp_assets.views.assets import build_views, view_key
from cdp_assets.views.policy import load as load_policy
from resources import build_resources
from schedules import build_jobs, build_schedules
from schedules.alerts import SENSORS as ALERT_SENSORS

raw_assets = build_raw_assets()
staging_assets = build_staging_assets()
graph_asset = build_graph_asset()


def refresh_ops(full: bool, chosen: Set[AssetKey] | None = None) -> dict[str, dict[str, object]]:
    """Run config setting `full_refresh` on every pull, staging build and the identity graph, or on those in
    `chosen`."""
    return {a.op.name: {"config": {"full_refresh": full}} for a in refreshable if chosen is None or a.key in chosen}


identity_assets = [
    build_identifiers_asset([AssetKey(s.table.split(".")) for s in load_identity_rules().sources]),
    graph_asset,
    *build_profile_assets(GRAPH_KEY, IDENTIFIERS_KEY),
    build_lifecycle_asset(PROFILES_KEY, GRAPH_KEY),
]
consent_assets = build_consent_assets(GRAPH_KEY, PROFILES_KEY, IDENTIFIERS_KEY)
view_assets = build_views()
replay_checks = build_replay_checks({a.key.path[-1]: a.key for a in staging_assets})
scorecard = build_scorecard_asset([a.key for a in staging_assets], [GRAPH_KEY, IDENTIFIERS_KEY])
upstream = [*raw_assets, *staging_assets, *identity_assets, *consent_assets, *view_assets]
sync_assets = build_sync_assets(upstream, replay_checks)
# The assets with a `full_refresh` setting: a pull reads its source from the start, a staging build replays raw, the
# identity graph counts its matcher's basis again, a sync plans from every row of its view.
refreshable = [*raw_assets, *staging_assets, graph_asset, *sync_assets]
# What the nightly path alone builds: the scorecard, the executive views, syncs scheduled nightly, the identity
# graph's comparison with a rebuild from scratch and the staging replays' with the incremental builds.
nightly_views = [view_key(v.name) for v in load_policy().views.values() if v.team.refresh == "nightly"]
nightly_syncs = [sync_key(s.name) for s in load_syncs().syncs.values() if s.schedule == "nightly"]
# The nightly run's comparisons of what the hourly runs kept: the graph with one rebuilt from scratch, staging with
# its replay of raw.
NIGHTLY_CHECKS = [REBUILD_CHECK, *(key for check in replay_checks for key in check.check_keys)]
jobs = build_jobs(RunConfig(ops=refresh_ops(True)), [scorecard.key, *nightly_views, *nightly_syncs], NIGHTLY_CHECKS)

# Steps run in one process: DuckDB allows a single writer, and runs are queued one at a
# time by the instance (schedules/dagster.yaml).
defs = Definitions(
    assets=[*raw_assets, *staging_assets, scorecard, *identity_assets, *consent_assets, *view_assets, *sync_assets],
    asset_checks=replay_checks,
    resources=build_resources(),
    jobs=[*jobs, privacy_requests, never_link],
    schedules=build_schedules(jobs, days_of_streams()),
    sensors=[privacy_inbox_sensor, *ALERT_SENSORS],
    executor=in_process_executor,
)

"""The `identity` layer's graph assets: normalised identifiers, then the resolved identity graph."""

import time
from collections.abc import Iterator

import duckdb
from dagster import (
    AssetCheckKey,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    AssetsDefinition,
    AssetSpec,
    Config,
    MaterializeResult,
    asset,
    multi_asset,
)
from pydantic import Field

from cdp_assets.identity import identifiers, increment, matching, rebuild, resolution, rules
from cdp_assets.raw import OWNER

IDENTIFIERS_KEY = AssetKey(["identity", "identifiers"])
GRAPH_KEY = AssetKey(["identity", "identity_graph"])
REBUILD_CHECK = AssetCheckKey(GRAPH_KEY, rebuild.CHECK_NAME)  # the nightly comparison, which the hourly job leaves out
LARGEST_PROFILE_RECORDS = 200  # a profile this big is a blob of people, not one person
SAMPLE_PROFILES = 5  # profiles over a limit named in the check's metadata
UNDO = (
    "Do: `cdp profile explain --profile-id ...` shows the links; block the shared value (`cdp profile never-link "
    "email:shared@...`) and rematerialise `group:identity`."
)
WITHIN_LIMITS = (
    "Passes when no profile holds more values of an identifier type than its limit in "
    "`cdp_assets/identity/rules.yaml`. Fails (blocking: profiles, views and syncs wait) when one does: a shared "
    f"identifier slipped past merge protection; the metadata names the profiles. Never warns. {UNDO}"
)
NO_GIANT = (
    f"Passes when no profile holds more than {LARGEST_PROFILE_RECORDS} person-level records. Fails (blocking) when "
    f"one does: a blob of people joined through a shared identifier. Never warns. {UNDO}"
)


def build_identifiers_asset(staging_keys: list[AssetKey]) -> AssetsDefinition:
    @asset(
        key=IDENTIFIERS_KEY,
        group_name="identity",
        kinds={"duckdb", "python"},
        owners=[OWNER],
        deps=staging_keys,
        description=(
            "For the identity graph and for engineers tracing a person: one row per identifier a person-level "
            "record carries (email, canonical email, E.164 phone, product user id, device id, the record's own "
            "id), normalised with email-validator and phonenumbers; blocked and invalid values are left out."
        ),
        required_resource_keys={"warehouse"},
    )
    def identity_identifiers(context: AssetExecutionContext) -> MaterializeResult:
        started = time.monotonic()
        with context.resources.warehouse.get_connection() as conn:
            conn.execute("CREATE SCHEMA IF NOT EXISTS identity")
            counts = identifiers.build(conn, rules.load(), follow=True)
        return MaterializeResult(metadata={**counts, "seconds": round(time.monotonic() - started, 3)})

    return identity_identifiers


class GraphConfig(Config):
    full_refresh: bool = Field(
        default=False,
        description="Resolve the whole graph and rebase the matcher: count its term frequencies and records again "
        "(basis.py) and keep them, as the nightly run does; otherwise the graph is resolved where this run's changes "
        "reach (increment.py), on the kept basis.",
    )


def build_graph_asset() -> AssetsDefinition:
    # A multi-asset so that a job can leave the nightly comparison out of the hourly path (a subset of its checks).
    @multi_asset(
        name="identity__identity_graph",
        specs=[AssetSpec(
            GRAPH_KEY, group_name="identity", kinds={"duckdb", "scipy", "splink"}, owners=[OWNER],
            # The person records' tables, and those their person fields read besides their own (increment.py).
            deps=[IDENTIFIERS_KEY, *(AssetKey(table.split(".")) for table in rules.load().person_tables),
                  *(AssetKey(["staging", entity]) for entity in rules.load().person_read_entities)],
            description=(
                "Who is who. Resolves identifiers into person profiles with stable ids: deterministic links under "
                "merge protection (rules in `cdp_assets/identity/rules.yaml`), then Splink links above the merge "
                "threshold; between nightly runs, only where the run's changes reach (`profiles_resolved`). Writes "
                "`identity.record_profiles` (each record's profile), `identity.identifier_profiles`, "
                "`identity.profile_edges` (why a profile holds what it holds), `identity.refused_links`, "
                "`identity.match_review` (probable matches for a person to decide), `identity.shared_values` (values "
                "several people use, which link no one) and appends merges and splits to `identity.merge_log`; "
                "keeps what the next run resolves from (`identity.graph_inputs`, `identity.match_records`, "
                "`identity.masked_records`). "
                "`cdp profile explain` reads these tables."
            ),
        )],
        can_subset=True,
        required_resource_keys={"warehouse"},
        check_specs=[
            AssetCheckSpec("profiles_within_limits", asset=GRAPH_KEY, blocking=True, description=WITHIN_LIMITS),
            AssetCheckSpec("no_giant_profile", asset=GRAPH_KEY, blocking=True, description=NO_GIANT),
            AssetCheckSpec(rebuild.CHECK_NAME, asset=GRAPH_KEY, description=rebuild.DESCRIPTION),
        ],
    )
    def identity_graph(context: AssetExecutionContext, config: GraphConfig) -> Iterator[MaterializeResult |
                                                                                       AssetCheckResult]:
        started = time.monotonic()
        identity_rules = rules.load()
        resolving = GRAPH_KEY in context.selected_asset_keys
        compared = REBUILD_CHECK in context.selected_asset_check_keys
        with context.resources.warehouse.get_connection() as conn:
            # The comparison judges the graph the hourly runs built: brought up to date where this run's changes
            # reach, as an hourly run does, and compared before the rebase resolves it whole. With no such graph
            # (a first build, or new identity code, rules or model) the rebuilt graph is compared after the rebase,
            # which resolves it whole once rather than twice.
            resolution.ensure_tables(conn)
            before = compared and (not config.full_refresh or increment.follows(
                conn, matching.MODEL_PATH, increment.fingerprint(conn, matching.MODEL_PATH)))
            if resolving and (before or not config.full_refresh):
                outcome = resolution.resolve(conn, identity_rules, context.run.run_id)
            if before:
                yield _compared(conn, identity_rules)
            if resolving and config.full_refresh:
                outcome = resolution.resolve(conn, identity_rules, context.run.run_id, rebase=True)
            if compared and not before:
                yield _compared(conn, identity_rules)
            if not resolving:
                return
            over_profiles = sorted({profile for profile, _, _ in resolution.over_limit(conn, identity_rules)})
        checks = [
            AssetCheckResult(
                check_name="profiles_within_limits", passed=not over_profiles, severity=AssetCheckSeverity.ERROR,
                metadata={"profiles_over_limit": len(over_profiles),
                          "sample_profiles": ", ".join(over_profiles[:SAMPLE_PROFILES])},
            ),
            AssetCheckResult(
                check_name="no_giant_profile", passed=outcome.largest_profile_records <= LARGEST_PROFILE_RECORDS,
                severity=AssetCheckSeverity.ERROR,
                metadata={"largest_profile_records": outcome.largest_profile_records},
            ),
        ]
        yield MaterializeResult(
            asset_key=GRAPH_KEY,
            metadata={
                "profiles": outcome.profiles,
                "profiles_resolved": outcome.resolved,
                "merged": outcome.merged,
                "split": outcome.split,
                "links_refused": outcome.refused,
                "probabilistic_links": outcome.probabilistic_links,
                "review_pairs": outcome.review_pairs,
                "shared_values": outcome.shared_values,
                "largest_profile_records": outcome.largest_profile_records,
                "seconds": round(time.monotonic() - started, 3),
            },
            check_results=[c for c in checks if AssetCheckKey(GRAPH_KEY, c.check_name) in
                           context.selected_asset_check_keys],
        )

    return identity_graph


def _compared(conn: duckdb.DuckDBPyConnection, identity_rules: rules.Rules) -> AssetCheckResult:
    found = rebuild.compare(conn, identity_rules)
    return AssetCheckResult(check_name=rebuild.CHECK_NAME, passed=found["drift"] == 0,
                            severity=AssetCheckSeverity.WARN, metadata=found)

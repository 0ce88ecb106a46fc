"""The three checks on every staging table, judged from the build's measures and the entity's own history.

Each is meant to fail only when something is wrong. Sources always send some bad records, so the quarantine
rate fails only past an absolute ceiling, and warns only when it rises above the entity's usual rate (a new
failure mode), as anomaly-detection tools judge a metric against its own history. Volume is judged on live rows
against the previous build, so a table that grows steadily does not warn and a mass deletion at the source
shows. Freshness is the time since the source was last read, so a stream with nothing new stays fresh.
"""

from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetChecksDefinition,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetKey,
    asset_check,
)

from cdp_assets.quality import BASELINE_DAYS, Measures

QUARANTINE_FAIL = 0.05  # more than this share of a build quarantined: the contract is broken for many rows
QUARANTINE_RISE = 0.01  # a rate this far above the entity's usual one: a new failure mode
VOLUME_WARN, VOLUME_FAIL = 0.20, 0.50  # share by which live rows may change, or shrink, since the last build

PRIMARY_KEY = (
    "Passes when the table holds one row per record id. Fails (blocking: nothing downstream of the table runs) "
    "when an id appears twice, which staging's own deduplication should rule out: a broken staging query or two "
    "source records sharing an id. Never warns. Do: read the raw rows of a repeated id "
    "(`SELECT * FROM raw.<table> WHERE record_id = ...`) and fix the query or report the source's bug."
)
QUARANTINE = (
    f"The share of the table's records in quarantine after the build, whether it read all of raw or only what "
    f"changed (they break the contract; kept in `quarantine.<table>`). Passes while it stays "
    f"under {QUARANTINE_FAIL:.0%} and near the table's usual rate: sources always send some bad records. Fails "
    f"(blocking) above {QUARANTINE_FAIL:.0%}: the contract is broken for a large share, so downstream waits. Warns "
    f"when it exceeds the usual rate (the median of the table's builds over the last {BASELINE_DAYS} days) by more "
    f"than {QUARANTINE_RISE * 100:g} percentage point: a new failure mode appeared. A first build has no usual rate "
    "and meets the ceiling only. Do: `SELECT failed_checks, count(*) FROM quarantine.<table> GROUP BY 1` (the "
    "asset's `failures_by_check` metadata shows which rose); have the source fixed, or, if the source is right, fix "
    "the contract or mapping and replay `group:staging`."
)
VOLUME = (
    f"Live rows (not deleted at the source) against the previous build. Passes within {VOLUME_WARN:.0%} either "
    f"way, and on a first build. Warns when they grew or shrank by more than {VOLUME_WARN:.0%}: a backfill, a "
    "source serving records twice under new ids, deletions at the source. Fails (blocking) when they shrank by "
    f"more than {VOLUME_FAIL:.0%}: a broken pull or a mass deletion. Do: compare the raw asset's `rows_fetched` "
    "and `rows_marked_deleted` with the source; if the change is real, the next build passes against this one."
)
REPLAY = (
    "Judged on a replay of raw (nightly, or asked for) after an incremental build under the same contract: the "
    "replay's staging and quarantine rows against those the incremental builds kept, for every record with no version "
    "landed since the last build and none held in quarantine by a check of the clock (a build's own run and time "
    "stamps left out; a changed row counts twice, as kept and as replayed, a row on one side once). Passes when they "
    "are the same row for row. Warns (never blocks: the replay has just written its own rows) when any differs: the "
    "incremental path drifted from a replay, a bug. Never fails. Nightly only; a first build, one under a new "
    "contract, or any build that was no replay has nothing to compare and passes with none compared. Do: report it "
    "with the run id and the records the metadata names; the replay has already put the tables right."
)


def check_specs(key: AssetKey) -> list[AssetCheckSpec]:
    return [
        AssetCheckSpec("primary_key_unique", asset=key, blocking=True, description=PRIMARY_KEY),
        AssetCheckSpec("quarantine_rate", asset=key, blocking=True, description=QUARANTINE),
        AssetCheckSpec("volume_change", asset=key, blocking=True, description=VOLUME),
    ]


def check_results(m: Measures) -> list[AssetCheckResult]:
    return [
        AssetCheckResult(
            check_name="primary_key_unique", passed=m.uniqueness == 1.0, metadata={"uniqueness": m.uniqueness}
        ),
        quarantine_result(m),
        volume_result(m),
    ]


def quarantine_result(m: Measures) -> AssetCheckResult:
    over_ceiling = m.quarantine_rate > QUARANTINE_FAIL
    usual = m.usual_quarantine_rate
    risen = usual is not None and m.quarantine_rate > usual + QUARANTINE_RISE
    metadata = {"quarantine_rate": m.quarantine_rate, "rows_in": m.rows_in, "rows_quarantined": m.rows_quarantined}
    if usual is not None:
        metadata["usual_quarantine_rate"] = usual
    return AssetCheckResult(
        check_name="quarantine_rate",
        passed=not (over_ceiling or risen),
        severity=AssetCheckSeverity.ERROR if over_ceiling else AssetCheckSeverity.WARN,
        metadata=metadata,
    )


def volume_result(m: Measures) -> AssetCheckResult:
    previous = m.previous_live_rows
    change = (m.live_rows - previous) / previous if previous else 0.0
    return AssetCheckResult(
        check_name="volume_change",
        passed=abs(change) <= VOLUME_WARN,
        severity=AssetCheckSeverity.ERROR if change < -VOLUME_FAIL else AssetCheckSeverity.WARN,
        metadata={"live_rows": m.live_rows, "previous_live_rows": previous or 0, "change": change},
    )


def build_replay_checks(keys: dict[str, AssetKey]) -> list[AssetChecksDefinition]:
    """Per staging entity (by its key), the nightly judgement of its last build's comparison, which the build
    makes before writing and records in `staging._builds` with its rows: a replay overwrites the rows it reads."""

    def build(entity: str, key: AssetKey) -> AssetChecksDefinition:
        @asset_check(asset=key, name="replay_matches_incremental", description=REPLAY,
                     required_resource_keys={"warehouse"})  # fmt: skip
        def replay_matches_incremental(context: AssetCheckExecutionContext) -> AssetCheckResult:
            with context.resources.warehouse.get_connection() as conn:
                build = conn.execute(
                    "SELECT rows_compared, rows_differing, differing_records, mode FROM staging._builds"
                    " WHERE entity = $entity", {"entity": entity}
                ).fetchone()  # fmt: skip
            # No row: no build yet, or an erasure made the entity replay (nothing to compare either way).
            compared, differing, sample, mode = build or (None, None, None, "none since the last erasure")
            return AssetCheckResult(
                passed=not differing,
                severity=AssetCheckSeverity.WARN,
                metadata={
                    "build": mode,
                    "rows_compared": compared or 0,
                    "rows_differing": differing or 0,
                    "sample_records": ", ".join(sample or []),
                },
            )

        return replay_matches_incremental

    return [build(entity, key) for entity, key in keys.items()]

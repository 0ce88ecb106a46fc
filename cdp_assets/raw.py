"""The `raw` layer: one append-only table per source stream, landed by its connector."""

from collections.abc import Iterator
from contextlib import closing
from datetime import UTC, datetime, timedelta

import duckdb
import requests
from dagster import (
    AssetExecutionContext,
    AssetKey,
    AssetsDefinition,
    BackfillPolicy,
    Config,
    DailyPartitionsDefinition,
    MaterializeResult,
    asset,
)
from pydantic import Field

from cdp_assets import echoes, landing, raw_checks
from cdp_assets.privacy import suppression
from resources import SOURCES
from resources.http import ServiceError
from resources.hubspot import ASSOCIATION_BATCH, HubSpotResource
from resources.source import Cursor, Page, SourceResource, StreamSpec, read_ahead

OWNER = "team:data-platform"
# A pull's materialisation says whether it read its source (what the schedules' days of events go by).
SOURCE_STATUS, SOURCE_FAILED = "source_status", "failed"

# A source failing while it is read: its API down past the client's retries, refusing the credentials, a
# connection lost mid-body. The pull stops and its step still completes, so the rest of the run goes on with the
# other sources (Dagster abandons every step downstream of a failed one, and identity depends on every source);
# the `source_reachable` check fails instead. Anything else (a bug of ours, DuckDB) fails the step.
SOURCE_FAILURES = (ServiceError, requests.exceptions.RequestException)


class PullConfig(Config):
    full_refresh: bool = Field(
        default=False,
        description="Pull every record again: repairs drift and marks records the source no longer has as deleted.",
    )


def raw_table(source: str, stream: str) -> str:
    return f"raw.{source}_{stream}"


def raw_key(source: str, stream: str) -> AssetKey:
    return AssetKey(["raw", f"{source}_{stream}"])


def event_days(stream: StreamSpec) -> DailyPartitionsDefinition | None:
    """The days of a stream exported by day, through today, whose events are still arriving; None for the others."""
    return DailyPartitionsDefinition(start_date=stream.first_day, end_offset=1) if stream.first_day else None


def build_raw_asset(source: str, stream: StreamSpec) -> AssetsDefinition:
    table = raw_table(source, stream.name)
    # Associations are read for contacts already landed, so they follow the contacts.
    deps = [raw_key("hubspot", "contacts")] if (source, stream.name) == ("hubspot", "contact_companies") else []
    days = event_days(stream)

    @asset(
        key=raw_key(source, stream.name),
        group_name="raw",
        kinds={source, "duckdb"},
        owners=[OWNER],
        deps=deps,
        description=f"{stream.description} Append-only: one row per record version with the full payload.",
        required_resource_keys={source, "warehouse", "privacy"},
        pool=f"api_{source}",  # one step at a time per API account (schedules/dagster.yaml), syncs included
        # No freshness policy: Dagster's is measured from the last materialisation, which a failed pull is too;
        # the `source_fresh` check measures from the last read instead (cdp_assets/raw_checks.py).
        check_specs=raw_checks.check_specs(raw_key(source, stream.name)),
        partitions_def=days,
        # A run over many days (a backfill, the nightly's every day) exports them in one step, a window of days
        # per request, rather than a run and a request per day against an export limit counted in an hour's calls.
        backfill_policy=BackfillPolicy.single_run() if days else None,
    )
    def _raw(context: AssetExecutionContext, config: PullConfig) -> MaterializeResult:
        connector: SourceResource = getattr(context.resources, source)
        before = (connector.stats.requests, connector.stats.retries)
        with context.resources.warehouse.get_connection() as conn:
            landing.setup(conn, table)
            state = landing.read_state(conn, table)
            if days and (context.has_partition_key or context.has_partition_key_range):  # the run's days decide
                window = context.partition_time_window
                first, last = window.start.date(), window.end.date() - timedelta(days=1)
                full = first <= days.start.date() and last >= datetime.now(UTC).date()  # every day there is
                pages = read_ahead(connector.extract_days(stream, first, last, state.cursor))
            else:
                full = (
                    config.full_refresh or state.full_pull_in_progress
                    or connector.requires_full_pull(stream, state.cursor)
                )
                cursor = state.cursor
                if full and not state.full_pull_in_progress:
                    landing.begin_full_pull(conn, table, context.run.run_id)
                    cursor = None
                pages = (
                    _association_pages(conn, connector, cursor, full)
                    if isinstance(connector, HubSpotResource) and stream.name == "contact_companies"
                    else read_ahead(connector.extract(stream, cursor, full))
                )
            dropped = suppression.dropped(conn, f"{source}.{stream.name}", context.resources.privacy.salt)
            result = landing.LandingResult(full_pull=full)
            failure: Exception | None = None
            try:
                with closing(pages):  # a pull that fails stops its fetcher too
                    landing.land_stream(
                        conn,
                        table=table,
                        source=source,
                        stream=stream.name,
                        tombstone_missing=stream.tombstone_missing,
                        pages=pages,
                        full_pull=full,
                        run_id=context.run.run_id,
                        dropped=dropped,
                        result=result,
                        echo_rule=echoes.rule(source, stream),
                    )
                if stream.list_ids_each_pull and not full:  # after the pull: what it changed lands even if this fails
                    with closing(connector.list_ids(stream)) as ids:  # a full pull marks what it no longer lists itself
                        result.tombstoned = landing.tombstone_unlisted(
                            conn, table=table, source=source, stream=stream.name, ids=ids, run_id=context.run.run_id
                        )
            except SOURCE_FAILURES as exc:
                failure = exc
            metadata = _pull_metadata(result, failure)
            if failure is None:
                context.log.info(f"{table}: {result.rows_new} new versions from {result.rows_fetched} records fetched")
            else:
                context.log.error(f"{table}: {source} failed, the run goes on without it: {metadata['error']}")
            last_read = _last_read_at(conn, table)
        calls = {"requests": connector.stats.requests - before[0], "retries": connector.stats.retries - before[1]}
        return MaterializeResult(
            metadata={**metadata, **calls, "last_read_at": last_read.isoformat() if last_read else "never"},
            check_results=raw_checks.check_results(source, failure, last_read, datetime.now(UTC)),
        )

    return _raw


def _pull_metadata(result: landing.LandingResult, failure: Exception | None) -> dict[str, object]:
    """The same keys whether the pull read its source to the end or failed part way, so the UI's plots have no gap
    exactly when a source fails. A failed pull's counts are those up to the failure: the batches it landed stay,
    and the next pull resumes after them."""
    metadata: dict[str, object] = {
        SOURCE_STATUS: "read" if failure is None else SOURCE_FAILED,
        "rows_fetched": result.rows_fetched,
        "rows_new": result.rows_new,
        "duplicates_in_pages": result.duplicates_in_pages,
        "suppressed": result.suppressed,
        "echoes": result.echoes,
        "pages": result.pages,
        "rows_marked_deleted": result.tombstoned,
        "full_pull": result.full_pull,
        "seconds": round(result.seconds, 3),
    }
    if failure is not None:
        metadata["error"] = raw_checks.error_text(failure)
    return metadata


def _last_read_at(conn: duckdb.DuckDBPyConnection, table: str) -> datetime | None:
    """When a batch read from the source last landed (a pull that found nothing new lands its cursor)."""
    row = conn.execute("SELECT updated_at FROM raw._stream_state WHERE stream = $table", {"table": table}).fetchone()
    return row[0] if row else None


def _association_pages(
    conn: duckdb.DuckDBPyConnection, hubspot: HubSpotResource, cursor: Cursor | None, full: bool
) -> Iterator[Page]:
    """Read associations for the contact versions landed after the cursor, a batch of ids at a time."""
    key = "full_after" if full else "after_landing_id"
    after = (cursor or {}).get(key, 0)
    while True:
        rows = conn.execute(
            f"SELECT record_id, landing_id FROM {raw_table('hubspot', 'contacts')}"
            " WHERE landing_id > $after AND record_id IS NOT NULL AND NOT deleted"
            " ORDER BY landing_id LIMIT $batch",
            {"after": after, "batch": ASSOCIATION_BATCH},
        ).fetchall()
        if not rows:
            yield Page([], {"after_landing_id": after})
            return
        after = rows[-1][1]
        contact_ids = list(dict.fromkeys(row[0] for row in rows))
        yield Page(hubspot.associations(contact_ids), {**(cursor or {}), key: after})


def days_of_streams() -> dict[AssetKey, DailyPartitionsDefinition]:
    """The raw assets partitioned by day, with their days: what the schedules' runs name the days of."""
    return {
        raw_key(source, stream.name): days
        for source, resource_cls in SOURCES.items()
        for stream in resource_cls.streams.values()
        if (days := event_days(stream))
    }


def build_raw_assets() -> list[AssetsDefinition]:
    return [
        build_raw_asset(source, stream)
        for source, resource_cls in SOURCES.items()
        for stream in resource_cls.streams.values()
    ]

"""The `staging` and `quarantine` layers: each record's current version, held to its entity's contract.

A build reads only the records with a version landed since the entity's last build (a watermark on raw's
landing order, `staging._builds`), recomputes their current versions and replaces their rows in staging and
quarantine, so its cost follows what changed. It replays the whole of raw on the entity's first build, when asked
(`full_refresh`, as the nightly run does) and when the contract or mapping changed (a fingerprint of both): rows
once quarantined that now pass move to staging and leave quarantine. Either way staging, quarantine, the watermark,
the change log the layers above follow (changes.py) and the quality history are written in one transaction, so a
build killed at any point leaves the last one whole. What a build decides by the clock is decided again: records
quarantined by a check of the clock are read by every build. A date of birth is judged against the UTC day its
record was last fetched (mappings.py), not the build's, so it types alike in every build.
"""

import hashlib
import inspect
import re
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import NamedTuple

import duckdb
import pandera
import phonenumbers
from dagster import AssetExecutionContext, AssetKey, AssetsDefinition, Config, MaterializeResult, MetadataValue, asset
from pydantic import Field

from cdp_assets import changes, contracts, echoes, enforcement, failpoint, mappings, quality, staging_checks
from cdp_assets.contracts import CLOCK_CHECKS, CONTRACTS, PLAUSIBLE_SINCE, PLAUSIBLE_UNTIL, Contract
from cdp_assets.enforcement import Verdict, enforce
from cdp_assets.mappings import MAPPINGS, paths_sql, select_sql
from cdp_assets.raw import OWNER, raw_key, raw_table
from cdp_assets.warehouse_access import has_tables
from resources import SOURCES
from resources.source import StreamSpec

CANDIDATES_SQL = (Path(__file__).parent / "sql" / "candidates.sql").read_text()
CANDIDATES, FAILED = "_candidates", "_failed"  # TEMP: the rows a build holds to its contract, and those failing it
# The contract's plausible range of times, which the candidates query holds every time field to.
CANDIDATES_PARAMS = {
    "plausible_since": PLAUSIBLE_SINCE,
    "plausible_until": PLAUSIBLE_UNTIL,
    "plausible_span": f"{PLAUSIBLE_SINCE.year}..{PLAUSIBLE_UNTIL.year}",
}


def staging_table(source: str, entity: str) -> str:
    return f"staging.{source}__{entity}"


def staging_key(source: str, entity: str) -> AssetKey:
    return AssetKey(["staging", f"{source}__{entity}"])


def candidates_sql(source: str, stream: StreamSpec, rows: str | None = None,
                   into: str = CANDIDATES) -> tuple[str, dict[str, object]]:
    """The query building TEMP `into` (CANDIDATES) for a stream, and its parameters (an entity without times has
    none); it reads the stream's raw table, or `rows`, a relation of some of its landed rows (privacy reads quarantined
    versions with the same reader, into a table of its own)."""
    entity = f"{source}__{stream.entity}"
    selects = select_sql(entity)
    sql = CANDIDATES_SQL.format(
        source_table=rows or raw_table(source, stream.name),
        candidates=into,
        paths=paths_sql(entity),
        kinds=selects.kinds,
        time_checks=selects.time_checks,
        columns=selects.columns,
        wrong_types=selects.wrong_types,
        time_faults=selects.time_faults,
    )
    params = {name: value for name, value in CANDIDATES_PARAMS.items() if f"${name}" in sql}
    return sql, {**params, "raw_table": raw_table(source, stream.name)}  # whose echoes it reads past


class StagingConfig(Config):
    full_refresh: bool = Field(
        default=False,
        description="Replay the whole of raw through the contract, not only the records changed since the last build.",
    )


BUILDS_SQL = """
CREATE TABLE IF NOT EXISTS staging._builds (
    entity VARCHAR PRIMARY KEY,
    landed_through BIGINT NOT NULL,  -- the newest landing in raw the build read: the next one reads past it
    fingerprint VARCHAR NOT NULL,    -- of the contract and mapping it held the rows to
    mode VARCHAR NOT NULL,
    run_id VARCHAR NOT NULL,
    built_at TIMESTAMPTZ NOT NULL,
    -- A replay after an incremental build under the same contract: the kept rows it had to reproduce, how many of
    -- them differed, and a few of their records (NULL when the build was no such replay); judged nightly.
    rows_compared BIGINT,
    rows_differing BIGINT,
    differing_records VARCHAR[]
)
"""
STAMPS = ("run_id", "quarantined_at")  # a quarantine row's columns that say which build judged it, not what it holds
# Every landed version of each record with a version landed after the last build, or held in quarantine by a check
# of the clock: its current version is decided among all of them, as a replay decides it. Versions landed after
# `through` wait for the next build.
CHANGED_SQL = """
CREATE OR REPLACE TEMP TABLE _changed_landings AS
SELECT * FROM {raw} WHERE landing_id <= $through AND coalesce(record_id, '#' || payload_hash) IN (
    SELECT coalesce(record_id, '#' || payload_hash) FROM {raw}
    WHERE (landing_id > $since AND landing_id <= $through)
       OR landing_id IN (SELECT raw_landing_id FROM {quarantine}
                         WHERE list_has_any(json_extract_string(failed_checks, '$[*].check'), $clock_checks)))
"""
# A replay's rows against those the incremental builds kept, leaving out the records with a version landed since the
# last build (in `_changed_landings`, which it had not read yet): rows in one and not the other, and a few of their
# records.
# Rows are compared by a 64-bit hash of their columns: far cheaper than whole rows (docs/benchmarks.md).
DIFFERENCES_SQL = """
WITH replay AS (SELECT {key}::VARCHAR AS k, hash({columns}) AS h FROM ({replay})
                WHERE {landing} NOT IN (SELECT landing_id FROM _changed_landings)),
     kept AS (SELECT {key}::VARCHAR AS k, hash({columns}) AS h FROM {table}
              WHERE {landing} NOT IN (SELECT landing_id FROM _changed_landings)),
     differing AS ((FROM replay EXCEPT ALL FROM kept) UNION ALL (FROM kept EXCEPT ALL FROM replay))
SELECT (SELECT count(*) FROM kept), count(*), list(DISTINCT k)[:5] FROM differing
"""
# Rows each failed check holds in quarantine, over the whole table: what the entity's data fails, not one batch.
FAILURES_SQL = """
SELECT check_name, count(DISTINCT raw_landing_id)
FROM (SELECT raw_landing_id, unnest(json_extract_string(failed_checks, '$[*].check')) AS check_name FROM {quarantine})
GROUP BY check_name ORDER BY check_name
"""


# The code that holds rows to their contracts, as this process loaded it (a file saved during a run is not what
# the run's builds checked rows with), and the libraries whose verdicts it uses.
CONTRACT_CODE = "\0".join(
    [*(inspect.getsource(m) for m in (contracts, enforcement, mappings, sys.modules[__name__])),
     *(f"{library.__name__} {library.__version__}" for library in (duckdb, pandera, phonenumbers))]
)  # fmt: skip
SETTING_TYPES = (str, int, float, tuple, frozenset, set, datetime, timedelta, re.Pattern)


def fingerprint(sql: str, contract: type[Contract]) -> str:
    """What a build held its rows to: the entity's queries (its mapping), its contract's class, the code of the
    contracts, their enforcement, the mappings and staging, and the contracts' current settings. A change to any
    replays it."""
    settings = sorted(
        (name, repr(sorted(map(repr, value)) if isinstance(value, (set, frozenset)) else value))
        for name, value in vars(contracts).items()
        if name.isupper() and isinstance(value, SETTING_TYPES)
    )  # set members are ordered by a per-process hash: sorted, so the same contract has one fingerprint
    parts = [sql, contract.__qualname__, repr(settings), CONTRACT_CODE]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


def _last_build(conn: duckdb.DuckDBPyConnection, entity: str, tables: tuple[str, str]) -> tuple[int, str] | None:
    """The entity's last committed build (its watermark and fingerprint), if its tables are still there."""
    present = conn.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema || '.' || table_name IN $tables",
        {"tables": list(tables)},
    ).fetchone()[0]
    if present < len(tables):
        return None
    row = conn.execute("SELECT landed_through, fingerprint FROM staging._builds WHERE entity = $e", {"e": entity})
    return row.fetchone()


def build_staging_asset(source: str, stream: StreamSpec) -> AssetsDefinition:
    entity = f"{source}__{stream.entity}"
    target, quarantine = staging_table(source, stream.entity), f"quarantine.{entity}"
    source_table, raw_asset = raw_table(source, stream.name), raw_key(source, stream.name)
    key = staging_key(source, stream.entity)
    (full_sql, params), contract = candidates_sql(source, stream), CONTRACTS[entity]
    changed_sql, _ = candidates_sql(source, stream, rows="_changed_landings")
    typed = ", ".join(column.name for column in MAPPINGS[entity])
    staged_select = f"""
        SELECT record_id AS {stream.primary_key}, {typed}, is_deleted, source_updated_at,
               extracted_at AS _extracted_at, landing_id AS _landing_id
        FROM _candidates WHERE _row NOT IN (SELECT _row FROM _failed)"""
    quarantined_select = """
        SELECT c.record_id, c.is_deleted, f.failed_checks, $raw_table AS raw_table,
               c.landing_id AS raw_landing_id, $run_id AS run_id, now() AS quarantined_at
        FROM _candidates c JOIN _failed f USING (_row)"""
    # The records this build recomputes and the staged rows it replaces, each with the ids its row was linked by.
    ids = ", ".join(dict.fromkeys([stream.primary_key, *stream.linked_ids]))
    changed_keys = f"""
        SELECT key, b.before
        FROM (SELECT DISTINCT record_id::VARCHAR AS key FROM _candidates WHERE record_id IS NOT NULL) k
        FULL JOIN (SELECT {stream.primary_key}::VARCHAR AS key, to_json(struct_pack({ids})) AS before FROM {target}
                   WHERE _landing_id IN (SELECT landing_id FROM _changed_landings)) b USING (key)"""

    @asset(
        key=key,
        group_name="staging",
        kinds={"duckdb", "pandera"},
        owners=[OWNER],
        deps=[raw_asset],
        description=(
            f"{stream.description} One row per record: its current version, typed, with `is_deleted`; "
            f"held to the `{contract.__name__}` contract, breaking rows go to `{quarantine}`. Each build reads "
            f"the records changed since the last one; `full_refresh` replays all of raw."
        ),
        required_resource_keys={"warehouse"},
        check_specs=staging_checks.check_specs(key),
    )
    def _staging(context: AssetExecutionContext, config: StagingConfig) -> MaterializeResult:
        started = time.monotonic()
        run_id = context.run.run_id
        with context.resources.warehouse.get_connection() as conn:
            if not has_tables(conn, "raw", source_table.removeprefix("raw.")):
                raise RuntimeError(
                    f"{source_table} has not been landed yet: materialise {raw_asset.to_user_string()} first"
                )
            conn.execute(echoes.SETUP_SQL)  # landed before echoes were marked: none are
            conn.execute(f"CREATE SCHEMA IF NOT EXISTS staging; CREATE SCHEMA IF NOT EXISTS quarantine; {BUILDS_SQL}")
            through = conn.execute(f"SELECT coalesce(max(landing_id), 0) FROM {source_table}").fetchone()[0]
            held_to = fingerprint(full_sql + staged_select + quarantined_select, contract)  # settings as they are now
            last = _last_build(conn, entity, (target, quarantine))
            comparable = last is not None and last[1] == held_to  # kept rows a replay must reproduce
            if comparable:
                conn.execute(
                    CHANGED_SQL.format(raw=source_table, quarantine=quarantine),
                    {"since": last[0], "through": through, "clock_checks": list(CLOCK_CHECKS)},
                )
            if config.full_refresh or not comparable:
                mode = "full: " + ("asked" if config.full_refresh else "no earlier build" if last is None else
                                   "the contract or mapping changed")  # fmt: skip
                conn.execute(full_sql, params)
            else:
                mode = "incremental"
                conn.execute(changed_sql, params)
            batch = enforce(conn, entity, contract, CANDIDATES, FAILED)
            drift = None
            if comparable and config.full_refresh:  # a replay asked for, of rows kept under the same contract
                replayed = (ReplayedTable(target, staged_select, "_landing_id", stream.primary_key),
                            ReplayedTable(quarantine, quarantined_select, "raw_landing_id", "record_id"))
                drift = _differences(conn, replayed, {"raw_table": source_table, "run_id": run_id})
            conn.begin()
            new_fields = quality.note_fields(conn, entity, run_id, CANDIDATES)
            # A record's rows are found by its current version, which is among _changed_landings.
            if mode == "incremental":
                changes.log(conn, entity, changed_keys)
                conn.execute(f"DELETE FROM {target} WHERE _landing_id IN (SELECT landing_id FROM _changed_landings)")
                conn.execute(f"DELETE FROM {quarantine}"
                             " WHERE raw_landing_id IN (SELECT landing_id FROM _changed_landings)")
                conn.execute(f"INSERT INTO {target} BY NAME {staged_select}")
                conn.execute(f"INSERT INTO {quarantine} BY NAME {quarantined_select}",
                             {"raw_table": source_table, "run_id": run_id})  # fmt: skip
            else:
                changes.log(conn, entity, None)
                conn.execute(f"CREATE OR REPLACE TABLE {target} AS {staged_select}")
                conn.execute(f"CREATE OR REPLACE TABLE {quarantine} AS {quarantined_select}",
                             {"raw_table": source_table, "run_id": run_id})  # fmt: skip
            passed, held, staged_rows, held_rows = conn.execute(
                f"""SELECT s.batch, q.batch, s.total, q.total
                    FROM (SELECT count(*) FILTER (_landing_id IN (SELECT landing_id FROM _candidates)) AS batch,
                                 count(*) AS total FROM {target}) s,
                         (SELECT count(*) FILTER (raw_landing_id IN (SELECT landing_id FROM _candidates)) AS batch,
                                 count(*) AS total FROM {quarantine}) q"""
            ).fetchone()
            if (passed, held) != (batch.rows_passed, batch.rows_quarantined):
                conn.rollback()
                raise RuntimeError(
                    f"{entity}: {batch.rows_in} rows in but {passed} staged and {held} quarantined; nothing written"
                )
            conn.execute(
                "INSERT OR REPLACE INTO staging._builds BY NAME SELECT $entity AS entity, $through AS landed_through,"
                " $print AS fingerprint, $mode AS mode, $run_id AS run_id, now() AS built_at,"
                " $compared AS rows_compared, $differing AS rows_differing, $sample AS differing_records",
                {"entity": entity, "through": through, "print": held_to, "mode": mode, "run_id": run_id,
                 **dict(zip(("compared", "differing", "sample"), drift or (None, None, None), strict=True))},
            )
            totals = Verdict(rows_in=staged_rows + held_rows, rows_quarantined=held_rows)
            failures = dict(conn.execute(FAILURES_SQL.format(quarantine=quarantine)).fetchall())
            measures = quality.record(conn, source, entity, source_table, target, stream.primary_key, totals, run_id)
            failpoint.reach("staging.writing")  # every write made, none committed
            conn.commit()
        return MaterializeResult(
            metadata={
                "mode": mode,
                "records_read": batch.rows_in,  # the records this build recomputed
                "records_read_quarantined": batch.rows_quarantined,  # of them, the clock-held ones read again included
                "rows_in": totals.rows_in,
                "rows_passed": totals.rows_passed,
                "rows_quarantined": totals.rows_quarantined,
                "quarantine_rate": measures.quarantine_rate,
                "completeness": measures.completeness,
                "rows_deleted_at_source": measures.deleted,
                "failures_by_check": MetadataValue.json(failures),
                "new_fields": MetadataValue.json(new_fields),
                "new_field_count": len(new_fields),
                "seconds": round(time.monotonic() - started, 3),
                **({"rows_differing": drift[1]} if drift else {}),
            },
            check_results=staging_checks.check_results(measures),
        )

    return _staging


class ReplayedTable(NamedTuple):
    """A table a replay rewrites: its name, the SELECT of the replay's rows, its landing id column and its key."""

    table: str
    replay: str
    landing: str
    key: str


def _differences(
    conn: duckdb.DuckDBPyConnection, tables: tuple[ReplayedTable, ...], params: dict[str, str]
) -> tuple[int, int, list[str]]:
    """A replay against the kept rows of the records it had to reproduce: rows compared, rows differing (in staging
    or quarantine, a build's own stamps left out) and a few of their records. Before the replay writes."""
    compared, differing, sample = 0, 0, []
    for replayed in tables:
        columns = ", ".join(
            f'"{name}"' for (name,) in conn.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_schema || '.' || table_name = $t"
                " AND NOT list_contains($stamps, column_name) ORDER BY ordinal_position",
                {"t": replayed.table, "stamps": list(STAMPS)},
            ).fetchall()
        )  # fmt: skip
        sql = DIFFERENCES_SQL.format(columns=columns, **replayed._asdict())
        kept, count, records = conn.execute(sql, params if "$" in replayed.replay else None).fetchone()
        compared, differing = compared + kept, differing + count
        sample += [record for record in records or [] if record is not None]
    return compared, differing, list(dict.fromkeys(sample))[:5]  # a record in both tables named once


def build_staging_assets() -> list[AssetsDefinition]:
    return [
        build_staging_asset(source, stream)
        for source, resource_cls in SOURCES.items()
        for stream in resource_cls.streams.values()
    ]

"""`identity.identifiers`: every identifier each person-level record carries, normalised.

Columns are read as the rules' sources say; each distinct raw value is normalised once
in Python (email-validator, phonenumbers) and joined back in DuckDB, so the work grows
with the number of distinct values, not rows. What a value normalised to is kept in
identity.normalised_values under a fingerprint of the rules and the normaliser's code, so
a later run normalises only the values it has not met (the bulk of the layer's time
otherwise); a change to either (or to email-validator's or phonenumbers' version) starts the memo
afresh. It holds only values some current record carries, so it keeps no one a record
no longer names; rejected values are not kept, and are judged again each run.

The asset follows the change log (cdp_assets/changes.py): an hourly build reads only the records the staging builds
rewrote since its last one (each as keyed now and as keyed before), replaces their rows, and forgets the memo's values
only they carried; the first build, a whole rewrite of a staging table it reads, or changed rules or code read every
record. Each build logs in turn the records it read (or, read whole, a rewrite of all), for the identity graph,
which takes again only their fingerprints (increment.py).
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
from pathlib import Path
from typing import Any

import duckdb
import email_validator
import pandas as pd
import phonenumbers

from cdp_assets import changes
from cdp_assets.identity import normalise
from cdp_assets.identity.rules import Rules
from cdp_assets.warehouse_access import has_tables
from resources import primary_key

IDENTIFIERS_TABLE = "identity.identifiers"
FOLLOWER = IDENTIFIERS_TABLE
PRODUCER = IDENTIFIERS_TABLE  # in the change log: the records a build rewrote, keyed `stream:record_id`
MEMO_TABLE = "identity.normalised_values"
CODE = changes.code_fingerprint([Path(__file__)])  # this module as the process loaded it
CHANGED = "_changed_records"  # TEMP (stream, record_id): the records a following build reads
REWRITTEN_SQL = f"SELECT DISTINCT stream || ':' || record_id AS key, NULL::JSON AS before FROM {CHANGED}"
WITHIN_CHANGED = f"{{key}}::VARCHAR IN (SELECT record_id FROM {CHANGED} WHERE stream = $stream_{{i}})"
# The values only the changed records carried before may be carried by no record now: the memo's rows to look for.
FORGETTABLE_SQL = f"""
CREATE OR REPLACE TEMP TABLE _forgettable AS
SELECT DISTINCT raw_value FROM {IDENTIFIERS_TABLE} WHERE (stream, record_id) IN (FROM {CHANGED})
"""
CARRYING_FORGETTABLE = "{column}::VARCHAR IN (SELECT raw_value FROM _forgettable)"

MEMO_SQL = f"""
CREATE TABLE IF NOT EXISTS {MEMO_TABLE} (
    fingerprint VARCHAR NOT NULL, source_type VARCHAR NOT NULL, raw_value VARCHAR NOT NULL, region VARCHAR,
    id_type VARCHAR NOT NULL, value VARCHAR NOT NULL
);
DELETE FROM {MEMO_TABLE} WHERE fingerprint <> $fingerprint;
"""
SAME_VALUE = "m.source_type = o.id_type AND m.raw_value = o.raw_value AND m.region IS NOT DISTINCT FROM o.region"
UNMET_SQL = f"""
SELECT DISTINCT id_type, raw_value, region FROM _observations o
WHERE NOT EXISTS (SELECT 1 FROM {MEMO_TABLE} m WHERE {SAME_VALUE})
ORDER BY ALL
"""
NO_OBSERVATIONS = """
SELECT NULL::VARCHAR AS stream, NULL::VARCHAR AS record_id, NULL::VARCHAR AS id_type, NULL::VARCHAR AS raw_value,
       NULL::VARCHAR AS region, NULL::TIMESTAMPTZ AS observed_at, NULL::TIMESTAMPTZ AS last_seen_at WHERE false
"""
FORGET_UNOBSERVED_SQL = f"""
DELETE FROM {MEMO_TABLE} m WHERE NOT EXISTS (SELECT 1 FROM _observations o WHERE {SAME_VALUE})
"""
FORGET_NO_LONGER_CARRIED_SQL = f"""
DELETE FROM {MEMO_TABLE} m WHERE raw_value IN (SELECT raw_value FROM _forgettable)
  AND NOT EXISTS (SELECT 1 FROM _still_carried o WHERE {SAME_VALUE})
"""


def _fingerprint(rules: Rules) -> str:
    """Of what decides a value's normal form: the rules and the normaliser's source."""
    def canonical(value: Any) -> Any:
        return sorted(value) if isinstance(value, set | frozenset) else repr(value)

    stated = json.dumps(dataclasses.asdict(rules), sort_keys=True, default=canonical)
    libraries = f"{email_validator.__version__} {phonenumbers.__version__}"
    return hashlib.sha256(f"{stated}\n{libraries}\n{inspect.getsource(normalise)}".encode()).hexdigest()[:16]


def _observations_sql(rules: Rules, params: dict[str, str], where: str = "true") -> str:
    """One row per (record, identifier column) with its raw value, from the staging tables, of the rows `where`
    holds (a condition formatted with the source's `key`, the identifier's `column` and the source's number `i`).

    Table and column names come from the rules; stream and type names go in as parameters."""
    selects = []
    for i, source in enumerate(rules.sources):
        for j, (id_type, column) in enumerate(source.identifiers.items()):
            params[f"stream_{i}"], params[f"type_{i}_{j}"] = source.stream, id_type
            region = source.phone_region if id_type == "phone" and source.phone_region else "NULL"
            selects.append(
                f"SELECT $stream_{i} AS stream, {source.key}::VARCHAR AS record_id, $type_{i}_{j} AS id_type, "
                f"{column}::VARCHAR AS raw_value, {region}::VARCHAR AS region, {source.observed_at} AS observed_at, "
                f"source_updated_at AS last_seen_at "
                f"FROM {source.table} WHERE {column} IS NOT NULL AND {where.format(key=source.key, column=column, i=i)}"
            )
    return "\nUNION ALL\n".join(selects) or NO_OBSERVATIONS  # a person file may carry no identifier


def _record_nodes_sql(rules: Rules, params: dict[str, str], where: str = "true") -> str:
    """Each record of a stream with a record type is itself an identifier (its source id), of the rows `where` holds
    (formatted with the source's `key` and number `i`)."""
    selects = []
    for i, source in enumerate(rules.sources):
        if source.record_type:
            params[f"stream_{i}"], params[f"record_type_{i}"] = source.stream, source.record_type
            selects.append(
                f"SELECT $stream_{i} AS stream, {source.key}::VARCHAR AS record_id, $record_type_{i} AS id_type, "
                f"{source.key}::VARCHAR AS value, {source.key}::VARCHAR AS raw_value, "
                f"{source.observed_at} AS observed_at, source_updated_at AS last_seen_at FROM {source.table} "
                f"WHERE {where.format(key=source.key, i=i)}"
            )
    return "\nUNION ALL\n".join(selects)


def _producers(rules: Rules) -> list[str]:
    """The staging entities (producers in the change log) of the rules' sources."""
    return [source.table.removeprefix("staging.") for source in rules.sources]


def _position(conn: duckdb.DuckDBPyConnection, rules: Rules) -> changes.Position:
    """Where a following build stands (changes.follow); whole as well when a table it writes is missing."""
    return changes.follow(conn, FOLLOWER, _producers(rules), f"{CODE} {_fingerprint(rules)}",
                          ("identity.identifiers", "identity.normalised_values"))


def _changed_records(conn: duckdb.DuckDBPyConnection, rules: Rules) -> int:
    """TEMP CHANGED from the followed changes; returns how many records it holds."""
    branches, params = [], {}
    for i, source in enumerate(rules.sources):  # its records the staging builds rewrote, as keyed now and before
        entity = source.table.removeprefix("staging.")
        sql, linked_params = changes.linked(source.table, primary_key(entity), entity, source.key, i)
        params |= {f"stream_{i}": source.stream, **linked_params}
        branches.append(f"SELECT $stream_{i} AS stream, record_id FROM ({sql})")
    conn.execute(f"CREATE OR REPLACE TEMP TABLE {CHANGED} AS SELECT * FROM (" + "\nUNION\n".join(branches)
                 + ") WHERE record_id IS NOT NULL", params)
    return conn.execute(f"SELECT count(*) FROM {CHANGED}").fetchall()[0][0]


def value_forms(id_type: str, raw: str, region: str | None, rules: Rules) -> list[tuple[str, str]]:
    """The (id_type, value) pairs one raw identifier normalises to: none if it names no one, and an address's
    provider-canonical form beside it where a provider rule applies."""
    if id_type == "email":
        value = normalise.email(raw, rules)
        canonical = normalise.canonical_email(value, rules) if value else None
        return [(id_type, value)] + ([("email_canonical", canonical)] if canonical else []) if value else []
    value = normalise.phone(raw, region, rules) if id_type == "phone" else normalise.plain(raw, rules)
    return [(id_type, value)] if value else []


def normal_forms(distinct: pd.DataFrame, rules: Rules) -> pd.DataFrame:
    """(id_type, raw_value, region) -> value, plus a canonical-email row where a provider rule applies."""
    rows = [
        (id_type, raw, region, *form)
        for id_type, raw, region in distinct.itertuples(index=False, name=None)
        for form in value_forms(id_type, raw, region, rules)
    ]
    return pd.DataFrame(rows, columns=["source_type", "raw_value", "region", "id_type", "value"])


def known_forms(conn: duckdb.DuckDBPyConnection, observed: str, rules: Rules) -> pd.DataFrame:
    """Normal forms (source_type, raw_value, region, id_type, value) of the distinct (id_type, raw_value, region) of
    the relation `observed`: read from the memo where this build of the rules met them, normalised now otherwise.

    For privacy's reads of raw payloads, which must match what identity stored; nothing is remembered, as the
    memo keeps only what current records carry."""
    has_memo = has_tables(conn, *MEMO_TABLE.split("."))
    distinct = conn.execute(f"SELECT DISTINCT id_type, raw_value, region FROM {observed}").df()
    if not has_memo or distinct.empty:
        return normal_forms(distinct, rules)
    conn.register("_distinct_observed", distinct)
    try:
        params = {"fingerprint": _fingerprint(rules)}
        known = conn.execute(
            f"SELECT source_type, raw_value, region, id_type, value FROM {MEMO_TABLE} m"
            f" WHERE fingerprint = $fingerprint AND EXISTS (SELECT 1 FROM _distinct_observed o WHERE {SAME_VALUE})",
            params,
        ).df()
        unmet = conn.execute(
            f"SELECT * FROM _distinct_observed o WHERE NOT EXISTS (SELECT 1 FROM {MEMO_TABLE} m"
            f" WHERE fingerprint = $fingerprint AND {SAME_VALUE})",
            params,
        ).df()
    finally:
        conn.unregister("_distinct_observed")
    return pd.concat([known, normal_forms(unmet, rules)], ignore_index=True)


def build(conn: duckdb.DuckDBPyConnection, rules: Rules, follow: bool = False) -> dict[str, int]:
    """Write identity.identifiers and the memo in one transaction: whole, or, when asked to `follow` the change log
    (the asset, on rules.yaml's sources), the rows of the records changed since its last build where it can; returns
    counts for the asset's metadata."""
    position = _position(conn, rules) if follow else None
    following = position is not None and position.whole is None
    within = WITHIN_CHANGED if following else "true"
    records_read = _changed_records(conn, rules) if following else None
    observation_params: dict[str, str] = {}
    conn.execute(
        f"CREATE OR REPLACE TEMP TABLE _observations AS {_observations_sql(rules, observation_params, within)}",
        observation_params,
    )
    if following:
        conn.execute(FORGETTABLE_SQL)
        still_params: dict[str, str] = {}
        conn.execute(f"CREATE OR REPLACE TEMP TABLE _still_carried AS "
                     f"{_observations_sql(rules, still_params, CARRYING_FORGETTABLE)}", still_params)
    fingerprint = _fingerprint(rules)
    conn.begin()
    try:
        conn.execute(MEMO_SQL, {"fingerprint": fingerprint})
        unmet = conn.execute(UNMET_SQL).df()
        conn.register("_normalised_view", normal_forms(unmet, rules))
        conn.execute(f"INSERT INTO {MEMO_TABLE} SELECT $fingerprint, * FROM _normalised_view",
                     {"fingerprint": fingerprint})
        conn.unregister("_normalised_view")
        conn.execute(FORGET_NO_LONGER_CARRIED_SQL if following else FORGET_UNOBSERVED_SQL)
        conn.execute(f"CREATE OR REPLACE TEMP TABLE _normalised AS SELECT * EXCLUDE (fingerprint) FROM {MEMO_TABLE}")
        node_params: dict[str, str] = {}
        record_nodes = _record_nodes_sql(rules, node_params, within)
        rows = f"""
            SELECT DISTINCT o.stream, o.record_id, n.id_type, n.value, o.raw_value, o.observed_at, o.last_seen_at
            FROM _observations o
            JOIN _normalised n ON n.source_type = o.id_type AND n.raw_value = o.raw_value
                              AND n.region IS NOT DISTINCT FROM o.region
            UNION ALL
            {record_nodes}"""
        if following:
            conn.execute(f"DELETE FROM {IDENTIFIERS_TABLE} WHERE (stream, record_id) IN (FROM {CHANGED})")
            conn.execute(f"INSERT INTO {IDENTIFIERS_TABLE} {rows}", node_params)
        else:
            conn.execute(f"CREATE OR REPLACE TABLE {IDENTIFIERS_TABLE} AS {rows}", node_params)
        # Logged whichever way it was called: a whole build the log did not hear of would leave the graph
        # fingerprinting only what an earlier build logged.
        changes.log(conn, PRODUCER, REWRITTEN_SQL if following else None)
        if position is not None:
            changes.keep(conn, position)
    except Exception:
        conn.rollback()
        raise
    conn.commit()
    rejected = conn.execute(
        """
        SELECT count(*) FROM (SELECT DISTINCT id_type, raw_value, region FROM _observations) d
        WHERE NOT EXISTS (SELECT 1 FROM _normalised n WHERE n.source_type = d.id_type
                          AND n.raw_value = d.raw_value AND n.region IS NOT DISTINCT FROM d.region
                          AND n.id_type = d.id_type)
        """
    ).fetchall()[0][0]
    counts = dict(conn.execute(f"SELECT id_type, count(DISTINCT value) FROM {IDENTIFIERS_TABLE} GROUP BY 1").fetchall())
    return {
        "rows": int(conn.execute(f"SELECT count(*) FROM {IDENTIFIERS_TABLE}").fetchall()[0][0]),
        "distinct_raw_values": int(
            conn.execute("SELECT count(*) FROM (SELECT DISTINCT id_type, raw_value, region FROM _observations)")
            .fetchall()[0][0]
        ),
        "raw_values_normalised": len(unmet),
        "values_rejected": int(rejected),
        "followed_changes": following,
        **({"records_read": records_read} if records_read is not None else {}),
        **{f"distinct_{k}": int(v) for k, v in counts.items()},
    }

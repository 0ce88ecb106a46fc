"""`privacy.consent_ledger`: every consent statement a source holds, on the profile of the person it binds
(consent_ledger.sql says how), with which of them still hold (ledger_current.sql).

The ledger follows the change log (cdp_assets/changes.py). A statement's row depends on its record, the profile
identity placed the record on, the profiles other records carrying its values are on, whether its login is a shared
value (judged on the names of the profiles holding it) and the addresses the records carrying its login hold, and, for
a product event, whether its time has come. So an hourly build makes again only the statements of the records
ledger_records.sql finds (those identifiers read again, those on a profile the graph or person profiles logged,
those carrying a value such a profile's records carry or a record read again carried before, and product events come
due), and every quarantined statement (a few, read from their payloads each build); it writes the profiles those
statements were and are on, whose other statements it keeps, and decides again which are current.
Only the profiles whose rows changed are written, and logged for consent. A first build, one whose code or rules
changed, or a whole rewrite of the graph, identifiers or person profiles makes every statement again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb

from cdp_assets import changes
from cdp_assets.identity import identifiers, profile_changes, resolution
from cdp_assets.identity import rules as identity_rules
from cdp_assets.privacy import paths, subject
from cdp_assets.raw import raw_table
from cdp_assets.staging import candidates_sql
from cdp_assets.warehouse_access import columns, has_tables, transaction
from resources import SOURCES

SQL = Path(__file__).parent / "sql"
LEDGER = "privacy.consent_ledger"
FOLLOWER = LEDGER  # its position in the change log
READS = (("klaviyo", "profiles"), ("hubspot", "contacts"), ("mixpanel", "events"))
SUBJECT_TYPES = ("user_id", "device_id")  # a product statement's subject: a login or device that may be shared
PERSON_TYPES = ("email", "email_canonical", "phone", "user_id", "device_id")  # the values attributing a statement
PROFILE_PRODUCERS = (resolution.PRODUCER, profile_changes.FOLLOWER)  # the profiles whose statements may move
FINGERPRINT = changes.code_fingerprint(
    [SQL / name for name in ("consent_ledger.sql", "ledger_current.sql", "ledger_records.sql", "shared_values.sql",
                             "shared_crossings.sql")]
    + [Path(__file__).with_name("consent.yaml"), Path(__file__), Path(subject.__file__), identity_rules.RULES_FILE],
    f"duckdb {duckdb.__version__}")
# The profiles whose rows changed (by a 64-bit hash of each row, as staging's replay compares rows) among those
# written (`{within}`), and in the log the addresses their refusals bind, before and after: a refusal denies its
# address on every profile.
CHANGES_SQL = f"""
CREATE OR REPLACE TEMP TABLE _ledger_changes AS
WITH kept AS (SELECT profile_id, hash(l) AS h FROM {LEDGER} l {{within}}),
     made AS (SELECT profile_id, hash(l) AS h FROM _consent_ledger l)
SELECT DISTINCT profile_id FROM ((FROM kept EXCEPT ALL FROM made) UNION ALL (FROM made EXCEPT ALL FROM kept))"""
WITHIN_WRITTEN = "WHERE profile_id IN (FROM _ledger_profiles)"
LOG_SQL = f"""
SELECT c.profile_id AS key,
       to_json({{'refused': coalesce(list(DISTINCT r.email) FILTER (WHERE r.email IS NOT NULL), [])}}) AS before
FROM _ledger_changes c
LEFT JOIN (SELECT profile_id, unnest(addresses) AS email FROM {LEDGER} WHERE choice = 'denied'
           UNION ALL
           SELECT profile_id, unnest(addresses) FROM _consent_ledger WHERE choice = 'denied') r USING (profile_id)
GROUP BY c.profile_id"""
# Which records' statements a build makes (TEMP MACRO `_ledger_reads`, which consent_ledger.sql asks of every staged
# statement): every one, or those of `_ledger_records`.
READS_ALL_SQL = "CREATE OR REPLACE TEMP MACRO _ledger_reads(stream_, id_) AS true"
READS_FOUND_SQL = ("CREATE OR REPLACE TEMP MACRO _ledger_reads(stream_, id_) AS"
                   " (stream_, id_::VARCHAR) IN (SELECT stream, record_id FROM _ledger_records)")
# The values the statements made carry, staged or quarantined: the only ones whose shared verdict they ask.
VALUES_SQL = """
CREATE OR REPLACE TEMP TABLE _ledger_values AS
SELECT DISTINCT id_type, value FROM identity.identifiers SEMI JOIN _ledger_records USING (stream, record_id)
WHERE list_contains($types, id_type)
UNION
SELECT id_type, value FROM _payload_identifiers WHERE list_contains($types, id_type)"""
# The profiles written: those the statements made are on now, and, when following, those the ledger has statements
# of the same records on (every quarantined one is made again); and the statements of theirs kept as they are.
PROFILES_SQL = "CREATE OR REPLACE TEMP TABLE _ledger_profiles AS SELECT DISTINCT profile_id FROM _ledger_statements"
WAS_ON_SQL = f"""
INSERT INTO _ledger_profiles
SELECT DISTINCT profile_id FROM {LEDGER}
WHERE (quarantined OR (source, record_id) IN (SELECT stream, record_id FROM _ledger_records))
  AND profile_id NOT IN (FROM _ledger_profiles)"""
KEPT_SQL = f"""
CREATE OR REPLACE TEMP VIEW _ledger_kept AS
SELECT * EXCLUDE (is_current) FROM {LEDGER}
WHERE profile_id IN (FROM _ledger_profiles) AND NOT quarantined
  AND (source, record_id) NOT IN (SELECT stream, record_id FROM _ledger_records)"""
NONE_KEPT_SQL = "CREATE OR REPLACE TEMP VIEW _ledger_kept AS FROM _ledger_statements LIMIT 0"


def statement_streams() -> list[str]:
    """The streams of READS as identity names their records. Each must be an identity source: the ledger learns of
    a statement record's change from the identifiers, which read it again."""
    tables = {f"staging.{source}__{entity}" for source, entity in READS}
    streams = {s.table: s.stream for s in identity_rules.load().sources if s.table in tables}
    if streams.keys() != tables:
        raise ValueError(f"rules.yaml: the consent ledger reads {sorted(tables - streams.keys())}, which identity"
                         " does not: their changes would not reach it")
    return sorted(streams.values())


def read_quarantined(conn: duckdb.DuckDBPyConnection) -> None:
    """What the ledger reads beside staging: `_held__<source>__<entity>`, the quarantined records of each stream it
    reads, typed by staging's own reader (a field that can be read is read; the field at fault is NULL); and
    `_payload_identifiers`, the person identifiers their payloads carry, read and normalised as privacy requests read
    them (`paths.identify`)."""
    conn.execute(subject.SETUP_SQL)
    rules = identity_rules.load()
    for source, entity in READS:
        stream = next(s for s in SOURCES[source].streams.values() if s.entity == entity)
        held = f"{source}__{entity}"
        conn.execute(
            f"CREATE OR REPLACE TEMP VIEW _held_raw__{held} AS SELECT * FROM {raw_table(source, stream.name)}"
            f" WHERE landing_id IN (SELECT raw_landing_id FROM quarantine.{held})"
        )
        sql, params = candidates_sql(source, stream, f"_held_raw__{held}")
        conn.execute(sql, params)
        conn.execute(f"CREATE OR REPLACE TEMP TABLE _held__{held} AS SELECT * FROM _candidates")
        paths.identify(conn, f"_held_raw__{held}", f"{source}.{stream.name}", rules)


def _find_records(conn: duckdb.DuckDBPyConnection, position: changes.Position, product_event: str) -> None:
    """TEMP `_ledger_records`: the staged statement records a following build makes again (ledger_records.sql)."""
    params = {"profile_producers": list(PROFILE_PRODUCERS), "person_types": list(PERSON_TYPES),
              "identifiers": identifiers.PRODUCER, "product_event": product_event, "since": position.since,
              "streams": statement_streams()}
    for statement in (SQL / "ledger_records.sql").read_text().split(";\n\n"):
        conn.execute(statement, {name: value for name, value in params.items() if f"${name}" in statement})


def _make(conn: duckdb.DuckDBPyConnection, params: dict[str, Any], position: changes.Position) -> None:
    """TEMP `_consent_ledger`: the rows of the profiles this build writes (`_ledger_profiles`), every profile's when
    the build is whole."""
    following = position.whole is None
    if following:
        _find_records(conn, position, params["product_event"])
        conn.execute(READS_FOUND_SQL)
        conn.execute(VALUES_SQL, {"types": list(SUBJECT_TYPES)})
        subject.shared_values(conn, SUBJECT_TYPES, within="_ledger_values")
    else:
        conn.execute(READS_ALL_SQL)
        subject.shared_values(conn, SUBJECT_TYPES)
    conn.execute((SQL / "consent_ledger.sql").read_text(),
                 {**params, "subject_types": list(SUBJECT_TYPES), "person_types": list(PERSON_TYPES)})
    conn.execute(PROFILES_SQL)
    if following:
        conn.execute(WAS_ON_SQL)
    conn.execute(KEPT_SQL if following else NONE_KEPT_SQL)
    conn.execute((SQL / "ledger_current.sql").read_text())


def build(conn: duckdb.DuckDBPyConnection, params: dict[str, Any]) -> dict[str, Any]:
    """Make the statements the change log reaches (or every one; `params`: the consent rules' `ledger_params`) and
    write the profiles whose rows changed, logged for consent, with the log's position, in one transaction; the
    whole ledger on its first build or when its columns changed. Returns the build's metadata."""
    conn.execute("CREATE SCHEMA IF NOT EXISTS privacy")
    position = changes.follow(conn, FOLLOWER, [identifiers.PRODUCER, *PROFILE_PRODUCERS], FINGERPRINT, (LEDGER,))
    read_quarantined(conn)
    _make(conn, params, position)
    # Written by difference onto a ledger of the same columns; whole when there is none (or its columns changed).
    kept = has_tables(conn, *LEDGER.split(".")) and columns(conn, LEDGER) == columns(conn, "_consent_ledger")
    if not kept and position.whole is None:
        position = position.rebuilt("privacy.consent_ledger has other columns")  # as an older release left it
        _make(conn, params, position)
    with transaction(conn):
        if kept:
            conn.execute(CHANGES_SQL.format(within=WITHIN_WRITTEN if position.whole is None else ""))
            changes.log(conn, LEDGER, LOG_SQL)
            conn.execute(f"DELETE FROM {LEDGER} WHERE profile_id IN (FROM _ledger_changes)")
            conn.execute(f"INSERT INTO {LEDGER} BY NAME FROM _consent_ledger"
                         " WHERE profile_id IN (FROM _ledger_changes)")
        else:
            changes.log(conn, LEDGER, None)
            conn.execute(f"CREATE OR REPLACE TABLE {LEDGER} AS FROM _consent_ledger"
                         " ORDER BY profile_id, purpose, stated_at")
        changes.keep(conn, position)
    following = position.whole is None
    counts = {"statements_made": "_ledger_statements", **({"profiles_changed": "_ledger_changes"} if kept else {}),
              **({"records_read": "_ledger_records"} if following else {})}
    return {"followed_changes": following, "written_whole": not kept,
            **{name: conn.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0] for name, table in counts.items()}}

"""Who a privacy request is about: every profile, record, landed row and identifier an identifier reaches.

Where each stream's payload names a person is data (`paths.PERSON_PATHS`); erasure, access
exports and the suppression of later pulls all read the same paths, so what one finds the
others find.

`resolve` fills four temp tables for one request:
- `_subject_profiles(profile_id)`: profiles holding a given identifier, and the retired ids merged into them;
- `_subject_records(stream, record_id)`: their records, keyed as the identity layer keys them;
- `_subject_values(id_type, value)`: every identifier of those records in identity's normal form
  (`email`, `email_canonical`, `phone` in E.164, `user_id`, `device_id`, identity's record types,
  `record:<stream>`, `profile`);
- `_subject_landings(raw_table, landing_id, record_id)`: every landed version of every record the
  subject reaches, quarantined ones and children included.

Landed payloads are matched by what `paths.identify` reads out of them, normalised by the one normaliser.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import duckdb

from cdp_assets.identity import normalise
from cdp_assets.identity import rules as identity_rules
from cdp_assets.privacy import paths
from cdp_assets.privacy.paths import PERSON_PATHS
from cdp_assets.raw import raw_table

GIVEN_TYPES = ("email", "phone", "user_id", "record", "profile")
SQL = Path(__file__).parent / "sql"

SETUP_SQL = """
CREATE OR REPLACE TEMP TABLE _subject_given (id_type VARCHAR, value VARCHAR);
CREATE OR REPLACE TEMP TABLE _subject_profiles (profile_id VARCHAR);
CREATE OR REPLACE TEMP TABLE _subject_records (stream VARCHAR, record_id VARCHAR);
CREATE OR REPLACE TEMP TABLE _subject_values (id_type VARCHAR, value VARCHAR);
CREATE OR REPLACE TEMP TABLE _subject_landings (raw_table VARCHAR, landing_id BIGINT, record_id VARCHAR);
CREATE OR REPLACE TEMP TABLE _payload_identifiers (
    raw_table VARCHAR, stream VARCHAR, landing_id BIGINT, id_type VARCHAR, value VARCHAR
);
"""
# Landed rows naming any of the subject's values.
NAMING_SQL = """
SELECT DISTINCT p.raw_table, p.landing_id FROM _payload_identifiers p JOIN _subject_values v USING (id_type, value)
"""
# The person's records the identity layer never saw (quarantined, say) are found by what their payloads name; their
# own ids join the values, so every version of them and every child is found next.
REACHED_RECORDS_SQL = f"""
INSERT INTO _subject_values
SELECT DISTINCT id_type, value FROM _payload_identifiers
WHERE id_type = 'record:' || stream AND (raw_table, landing_id) IN ({NAMING_SQL})
"""


@dataclass(frozen=True)
class Identifier:
    """One identifier a request names: `email`, `phone`, `user_id`, `record` (`stream:id`) or `profile`."""

    type: str
    value: str


def given_value(identifier: Identifier, held: Callable[[set[str]], set[str]] | None = None) -> tuple[str, str] | None:
    """The (type, value) to match for one identifier a request names, in identity's normal form; None for a
    national number that several countries read differently and no record holds a reading of.

    A phone without its country code is read in the configured countries, as identity reads one without a country
    hint; where those readings differ (`(415) 555-0199` is a US and a German number), the one reading `held` says
    the warehouse holds is the person's. A value the normaliser rejects (invalid, or blocked by the identity rules)
    raises ValueError: no record identity holds carries it, and the request would otherwise end done having
    deleted nothing."""
    rules = identity_rules.load()
    raw = identifier.value.strip()
    if identifier.type == "email":
        value = normalise.email(raw, rules)
    elif identifier.type == "phone":
        readings = normalise.phone_readings(raw, None, rules)
        if len(readings) > 1:
            readings = held(readings) if held else set()
            if len(readings) > 1:
                raise ValueError(f"the phone given is a national number several people's records hold in different "
                                 f"countries ({len(readings)}); give it with its country code")
            return ("phone", readings.pop()) if readings else None
        value = readings.pop() if readings else None
    elif identifier.type == "user_id":
        value = normalise.plain(raw, rules)
    elif identifier.type == "record":
        stream, _, record_id = raw.partition(":")
        if stream not in PERSON_PATHS or not record_id:
            raise ValueError(f"a record is given as stream:id with a stream of {sorted(PERSON_PATHS)}")
        return f"record:{stream}", record_id
    elif identifier.type == "profile":
        value = raw
    else:
        raise ValueError(f"unknown identifier type {identifier.type!r}; use one of {GIVEN_TYPES}")
    if not value:
        raise ValueError(
            f"the {identifier.type} given is invalid or blocked by the identity rules, so it names no record the "
            f"identity layer holds; records carrying such a value are quarantined: give each as --record stream:id"
        )
    return identifier.type, value


def given_values(conn: duckdb.DuckDBPyConnection, identifiers: list[Identifier]) -> list[tuple[str, str]]:
    """The (type, value) pairs to match, normalised as the identity layer normalises them."""
    def held(readings: set[str]) -> set[str]:
        if "identity.identifiers" not in _tables(conn):
            return set()
        rows = conn.execute(
            "SELECT DISTINCT value FROM identity.identifiers"
            " WHERE id_type = 'phone' AND list_contains($readings, value)",
            {"readings": sorted(readings)},
        )
        return {value for (value,) in rows.fetchall()}

    return [pair for identifier in identifiers if (pair := given_value(identifier, held))]


def resolve(conn: duckdb.DuckDBPyConnection, identifiers: list[Identifier], raw_tables: set[str]) -> None:
    """Fill the subject tables for one request (see the module's docstring)."""
    conn.execute(SETUP_SQL)
    given = given_values(conn, identifiers)
    conn.execute(
        "INSERT INTO _subject_given SELECT unnest($types::VARCHAR[]), unnest($values::VARCHAR[])",
        {"types": [t for t, _ in given], "values": [v for _, v in given]},
    )
    if {"identity.identifiers", "identity.record_profiles", "identity.profile_registry"} <= _tables(conn):
        conn.execute((SQL / "subject_profiles.sql").read_text())
        conn.execute((SQL / "subject_values.sql").read_text())
    else:  # no identity layer yet: the payloads alone say who the subject is
        conn.execute("INSERT INTO _subject_values SELECT id_type, value FROM _subject_given WHERE value <> ''")
    rules = identity_rules.load()
    present = [(stream, raw_table(*stream.split("."))) for stream in PERSON_PATHS]
    present = [(stream, table) for stream, table in present if table in raw_tables]
    for stream, table in present:
        paths.identify(conn, table, stream, rules)
    conn.execute(REACHED_RECORDS_SQL)
    for _, table in present:
        conn.execute(
            f"INSERT INTO _subject_landings SELECT $table, landing_id, record_id FROM {table}"
            f" WHERE landing_id IN (SELECT landing_id FROM ({NAMING_SQL}) WHERE raw_table = $table)",
            {"table": table},
        )


def _tables(conn: duckdb.DuckDBPyConnection) -> set[str]:
    rows = conn.execute("SELECT table_schema || '.' || table_name FROM information_schema.tables").fetchall()
    return {name for (name,) in rows}


def existing_raw_tables(conn: duckdb.DuckDBPyConnection) -> set[str]:
    return {name for name in _tables(conn) if name.startswith("raw.") and not name.startswith("raw._")}

"""Who a privacy request is about: every profile, record, landed row and identifier an identifier reaches.

Where each stream's payload names a person is data (`paths.PERSON_PATHS`); erasure, access
exports and the suppression of later pulls all read the same paths, so what one finds the
others find.

`resolve` fills four temp tables for one request:
- `_subject_profiles(profile_id)`: profiles holding a given identifier, and the retired ids merged into them;
- `_subject_records(stream, record_id)`: their records, keyed as the identity layer keys them;
- `_subject_values(id_type, value)`: every identifier of those records, normalised as matched
  (`email`, `email_canonical`, `phone`, `phone_digits`, `user_id`, `device_id`, identity's record
  types, `record:<stream>`, `profile`);
- `_subject_landings(raw_table, landing_id, record_id)`: every landed version of every record the
  subject reaches, quarantined ones and children included.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import duckdb

from cdp_assets.identity import normalise
from cdp_assets.identity import rules as identity_rules
from cdp_assets.privacy.paths import CHILD_STREAMS, PERSON_PATHS, PERSON_STREAMS, json_path, typed_values
from cdp_assets.raw import raw_table

GIVEN_TYPES = ("email", "phone", "user_id", "record", "profile")
SQL = Path(__file__).parent / "sql"

SETUP_SQL = """
CREATE OR REPLACE TEMP TABLE _subject_given (id_type VARCHAR, value VARCHAR);
CREATE OR REPLACE TEMP TABLE _subject_profiles (profile_id VARCHAR);
CREATE OR REPLACE TEMP TABLE _subject_records (stream VARCHAR, record_id VARCHAR);
CREATE OR REPLACE TEMP TABLE _subject_values (id_type VARCHAR, value VARCHAR);
CREATE OR REPLACE TEMP TABLE _subject_landings (raw_table VARCHAR, landing_id BIGINT, record_id VARCHAR);
"""
@dataclass(frozen=True)
class Identifier:
    """One identifier a request names: `email`, `phone`, `user_id`, `record` (`stream:id`) or `profile`."""

    type: str
    value: str


def given_values(identifiers: list[Identifier]) -> list[tuple[str, str]]:
    """The (type, value) pairs to match, normalised as the identity layer normalises them."""
    rules = identity_rules.load()
    found: list[tuple[str, str]] = []
    for identifier in identifiers:
        raw = identifier.value.strip()
        if identifier.type == "email":
            found.append(("email", normalise.email(raw, rules) or raw.lower()))
        elif identifier.type == "phone":
            e164 = normalise.phone(raw, None, rules)
            found += [("phone", e164)] if e164 else []
            found.append(("phone_digits", "".join(ch for ch in raw if ch.isdigit())))
        elif identifier.type == "user_id":
            found.append(("user_id", raw))
        elif identifier.type == "record":
            stream, _, record_id = raw.partition(":")
            if stream not in PERSON_PATHS or not record_id:
                raise ValueError(f"a record is given as stream:id with a stream of {sorted(PERSON_PATHS)}")
            found.append((f"record:{stream}", record_id))
        elif identifier.type == "profile":
            found.append(("profile", raw))
        else:
            raise ValueError(f"unknown identifier type {identifier.type!r}; use one of {GIVEN_TYPES}")
    empty = [t for t, value in found if not value]
    if empty:
        raise ValueError(f"an identifier names nothing once normalised ({', '.join(empty)})")
    return found


def matches_sql(stream: str, params: dict[str, str], values: str) -> str:
    """A condition true for landed rows of `stream` whose payload names any value of `values`, a relation of
    (id_type, value)."""
    return " OR ".join(
        f"{value} IN (SELECT value FROM {values} WHERE id_type = ${kind})"
        for kind, value in typed_values(stream, params)
    )


def resolve(conn: duckdb.DuckDBPyConnection, identifiers: list[Identifier], raw_tables: set[str]) -> None:
    """Fill the subject tables for one request (see the module's docstring)."""
    conn.execute(SETUP_SQL)
    given = given_values(identifiers)
    conn.execute(
        "INSERT INTO _subject_given SELECT unnest($types::VARCHAR[]), unnest($values::VARCHAR[])",
        {"types": [t for t, _ in given], "values": [v for _, v in given]},
    )
    if {"identity.identifiers", "identity.record_profiles", "identity.profile_registry"} <= _tables(conn):
        conn.execute((SQL / "subject_profiles.sql").read_text())
        conn.execute((SQL / "subject_values.sql").read_text())
    else:  # no identity layer yet: the payloads alone say who the subject is
        conn.execute("INSERT INTO _subject_values SELECT id_type, value FROM _subject_given WHERE value <> ''")
    # A person's records the identity layer never saw (quarantined, say) are found by what their payloads name;
    # their ids join the values, so every version of them and every child is found next.
    for stream in PERSON_STREAMS:
        table = raw_table(*stream.split("."))
        if table not in raw_tables:
            continue
        params: dict[str, str] = {}
        condition = matches_sql(stream, params, "_subject_values")
        self_path = f"_path_{len(params)}"
        params[self_path] = json_path(PERSON_PATHS[stream][f"record:{stream}"][0])
        conn.execute(
            f"INSERT INTO _subject_values SELECT DISTINCT $self_type, json_extract_string(payload, ${self_path})"
            f" FROM {table} WHERE {condition}",
            {**params, "self_type": f"record:{stream}"},
        )
    for stream in (*PERSON_STREAMS, *CHILD_STREAMS):
        table = raw_table(*stream.split("."))
        if table not in raw_tables:
            continue
        params = {}
        condition = matches_sql(stream, params, "_subject_values")
        conn.execute(
            f"INSERT INTO _subject_landings SELECT $table, landing_id, record_id FROM {table} WHERE {condition}",
            {**params, "table": table},
        )


def _tables(conn: duckdb.DuckDBPyConnection) -> set[str]:
    rows = conn.execute("SELECT table_schema || '.' || table_name FROM information_schema.tables").fetchall()
    return {name for (name,) in rows}


def existing_raw_tables(conn: duckdb.DuckDBPyConnection) -> set[str]:
    return {name for name in _tables(conn) if name.startswith("raw.") and not name.startswith("raw._")}

"""Who a privacy request is about: every profile, record, landed row and identifier an identifier reaches.

Where each stream's payload names a person is data (`paths.PERSON_PATHS`); erasure, access
exports and the suppression of later pulls all read the same paths, so what one finds the
others find.

`resolve` fills these temp tables for one request, from `_subject_given` (what the request names, and the records
whose landed payloads name it: `FOUND_SQL`, `UNSEEN_SQL`):
- `_subject_profiles(profile_id)`: profiles holding a given identifier, those sharing a person identifier with
  them that is not a shared value, and the retired ids merged into them (`reach_whole_person`);
- `_subject_records(stream, record_id)`: their records, keyed as the identity layer keys them;
- `_subject_values(id_type, value)`: every identifier of those records in identity's normal form
  (`email`, `email_canonical`, `phone` in E.164, `user_id`, `device_id`, identity's record types,
  `record:<stream>`, `profile`);
- `_subject_landings(raw_table, landing_id, record_id)`: every landed version of every record the
  subject reaches, quarantined ones and children included;
- `_subject_candidates(profile_id, reason)`: profiles not included that may be the same person, for review.

Landed payloads are matched by what `paths.identify` reads out of them, normalised by the one normaliser.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import duckdb

from cdp_assets.identity import matching, normalise, shared
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
CREATE OR REPLACE TEMP TABLE _subject_candidates (profile_id VARCHAR, reason VARCHAR);
CREATE OR REPLACE TEMP TABLE _subject_role_mailboxes (local_part VARCHAR);
CREATE OR REPLACE TEMP TABLE _payload_identifiers (
    raw_table VARCHAR, stream VARCHAR, landing_id BIGINT, id_type VARCHAR, value VARCHAR, region VARCHAR
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


# The records whose landed payloads name what the request names (in a version identity no longer holds, or one staging
# quarantined) are looked up by their own ids too, so the profiles they are in are found.
FOUND_SQL = """
INSERT INTO _subject_given
SELECT DISTINCT p.id_type, p.value FROM _payload_identifiers p
WHERE p.id_type = 'record:' || p.stream AND (p.raw_table, p.landing_id) IN (
    SELECT raw_table, landing_id FROM _payload_identifiers JOIN _subject_given USING (id_type, value))
EXCEPT SELECT id_type, value FROM _subject_given
"""
# A record identity never saw (staging quarantined it) is known by its payload alone: the addresses, numbers and
# logins it carries find the person's profiles, unless they are shared values (`shared_values.sql`; a role mailbox
# whoever holds it).
UNSEEN_SQL = """
INSERT INTO _subject_given
WITH unseen AS (
    SELECT raw_table, landing_id FROM _payload_identifiers p
    WHERE p.id_type = 'record:' || p.stream AND (p.id_type, p.value) IN (SELECT id_type, value FROM _subject_given)
      AND NOT EXISTS (SELECT 1 FROM identity.record_profiles rp
                      WHERE 'record:' || rp.stream = p.id_type AND rp.record_id = p.value)
)
SELECT DISTINCT id_type, value FROM _payload_identifiers
WHERE id_type IN ('email', 'phone', 'user_id') AND (raw_table, landing_id) IN (SELECT * FROM unseen)
  AND (id_type, value) NOT IN (SELECT id_type, value FROM _subject_crossings WHERE shared_by IS NOT NULL)
  AND NOT (id_type = 'email' AND split_part(value, '@', 1) IN (SELECT local_part FROM _subject_role_mailboxes))
EXCEPT SELECT id_type, value FROM _subject_given
"""


@dataclass(frozen=True)
class Identifier:
    """One identifier a request names: `email`, `phone`, `user_id`, `record` (`stream:id`) or `profile`."""

    type: str
    value: str


def given_value(
    identifier: Identifier, held: Callable[[set[str]], set[str]] | None = None, regions: Iterable[str] = ()
) -> tuple[str, str] | None:
    """The (type, value) to match for one identifier a request names, in identity's normal form; None for a
    national number that several countries read differently and no record holds a reading of.

    A phone without its country code is read in the configured countries, as identity reads one without a country
    hint, and in each of `regions` (the hints records carry: identity read each record's number with its own);
    where those readings differ (`(415) 555-0199` is a US and a German number), the one reading `held` says the
    warehouse holds is the person's. A value the normaliser rejects (invalid, or blocked by the identity rules)
    raises ValueError: no record identity holds carries it, and the request would otherwise end done having
    deleted nothing."""
    rules = identity_rules.load()
    raw = identifier.value.strip()
    if identifier.type == "email":
        value = normalise.email(raw, rules)
    elif identifier.type == "phone":
        readings = normalise.phone_readings(raw, None, rules).union(
            *(normalise.phone_readings(raw, region, rules) for region in regions))
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
    """The (type, value) pairs to match, normalised as the identity layer normalises them; a national phone is read
    with the region hints of the landed records (`_payload_identifiers`, filled first), and matched against what
    identity and the landed payloads hold."""
    phones = ["SELECT value FROM _payload_identifiers WHERE id_type = 'phone'"]
    if "identity.identifiers" in _tables(conn):
        phones.append("SELECT value FROM identity.identifiers WHERE id_type = 'phone'")

    def held(readings: set[str]) -> set[str]:
        rows = conn.execute(f"SELECT DISTINCT value FROM ({' UNION ALL '.join(phones)}) WHERE list_contains($r, value)",
                            {"r": sorted(readings)})  # fmt: skip
        return {value for (value,) in rows.fetchall()}

    regions = set()
    if any(i.type == "phone" for i in identifiers):
        hints = conn.execute("SELECT DISTINCT region FROM _payload_identifiers WHERE id_type = 'phone'"
                             " AND region IS NOT NULL").fetchall()  # fmt: skip
        regions = {code for (hint,) in hints if (code := normalise.region_hint(hint))}
    return [pair for identifier in identifiers if (pair := given_value(identifier, held, sorted(regions)))]


def resolve(conn: duckdb.DuckDBPyConnection, identifiers: list[Identifier], raw_tables: set[str]) -> None:
    """Fill the subject tables for one request (see the module's docstring)."""
    conn.execute(SETUP_SQL)
    rules = identity_rules.load()
    present = [(stream, raw_table(*stream.split("."))) for stream in PERSON_PATHS]
    present = [(stream, table) for stream, table in present if table in raw_tables]
    for stream, table in present:  # first: a national phone given is read with the hints the records carry
        paths.identify(conn, table, stream, rules)
    given = given_values(conn, identifiers)
    conn.execute(
        "INSERT INTO _subject_given SELECT unnest($types::VARCHAR[]), unnest($values::VARCHAR[])",
        {"types": [t for t, _ in given], "values": [v for _, v in given]},
    )
    conn.execute(FOUND_SQL)
    if {"identity.identifiers", "identity.record_profiles", "identity.profile_registry"} <= _tables(conn):
        shared_values(conn)
        conn.execute(UNSEEN_SQL)
        conn.execute(FOUND_SQL)  # the records that what the unseen ones carry names
        reach_whole_person(conn)
    else:  # no identity layer yet: the payloads alone say who the subject is
        conn.execute("INSERT INTO _subject_values SELECT id_type, value FROM _subject_given WHERE value <> ''")
    conn.execute(REACHED_RECORDS_SQL)
    for _, table in present:
        conn.execute(
            f"INSERT INTO _subject_landings SELECT $table, landing_id, record_id FROM {table}"
            f" WHERE landing_id IN (SELECT landing_id FROM ({NAMING_SQL}) WHERE raw_table = $table)",
            {"table": table},
        )


def shared_values(conn: duckdb.DuckDBPyConnection, types: tuple[str, ...] | None = None) -> None:
    """`_subject_crossings`: each person identifier records of several profiles carry, and whether it is a shared
    value (identity's rule, `cdp_assets/identity/shared.py`), which leads a request to no one else; and
    `_subject_role_mailboxes`, the rule's team mailboxes, which lead nowhere whoever holds them. With `types`, of
    those identifier types alone (the rule judges each value on its own holders, so the verdicts are the same)."""
    rules = identity_rules.load()
    conn.execute("INSERT INTO _subject_role_mailboxes SELECT unnest($locals::VARCHAR[])",
                 {"locals": list(rules.shared.role_mailboxes)})  # fmt: skip
    tables = _tables(conn)
    names = ("SELECT profile_id, first_name, last_name FROM identity.person_profiles"
             if "identity.person_profiles" in tables else  # the graph is built, its golden records not yet
             "SELECT NULL::VARCHAR AS profile_id, NULL::VARCHAR AS first_name, NULL::VARCHAR AS last_name LIMIT 0")
    conn.execute(f"CREATE OR REPLACE TEMP VIEW _subject_names AS {names}")
    verdicts = ("SELECT id_type, value, reason FROM identity.shared_values" if "identity.shared_values" in tables else
                "SELECT NULL::VARCHAR AS id_type, NULL::VARCHAR AS value, NULL::VARCHAR AS reason LIMIT 0")
    conn.execute(f"CREATE OR REPLACE TEMP VIEW _identity_shared AS {verdicts}")  # none before identity's first run
    conn.execute(matching.person_text_macro())
    held, holders = (SQL / "shared_values.sql").read_text().split(";\n\n")
    conn.execute(held, {"types": [t for t in rules.shared.types if types is None or t in types]})
    conn.execute(holders)
    shared.judge(conn, rules)
    conn.execute((SQL / "shared_crossings.sql").read_text())


def reach_whole_person(conn: duckdb.DuckDBPyConnection) -> None:
    """From `_subject_given`, the whole person: the profiles named, widened to those sharing a person identifier
    with them that is not a shared value (`shared_values`), their records and identifiers; and
    `_subject_candidates(profile_id, reason)`, the profiles not included that an operator may review (reached only
    through a shared value, a match under review, a link identity refused)."""
    conn.execute((SQL / "subject_profiles.sql").read_text())
    conn.execute((SQL / "subject_values.sql").read_text())


def candidates(conn: duckdb.DuckDBPyConnection) -> list[dict[str, str]]:
    """The profiles the request did not include that may be the same person, with why (see `reach_whole_person`)."""
    rows = conn.execute("SELECT profile_id, reason FROM _subject_candidates ORDER BY profile_id").fetchall()
    return [{"profile_id": profile_id, "reason": reason} for profile_id, reason in rows]


def _tables(conn: duckdb.DuckDBPyConnection) -> set[str]:
    rows = conn.execute("SELECT table_schema || '.' || table_name FROM information_schema.tables").fetchall()
    return {name for (name,) in rows}


def existing_raw_tables(conn: duckdb.DuckDBPyConnection) -> set[str]:
    return {name for name in _tables(conn) if name.startswith("raw.") and not name.startswith("raw._")}

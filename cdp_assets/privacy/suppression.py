"""Suppression that lasts: salted hashes of a deleted person's identifiers, and the pulls that drop them.

When a person is deleted, a salted SHA-256 of each of their identifiers (addresses, phone
digits, logins, anonymous devices, every source record id) goes to `privacy.suppressions`.
Every later pull drops, before it lands, any record whose payload names one of them (at the
paths of `paths.PERSON_PATHS`), so neither an hourly nor a nightly full re-pull brings the
person back. The salt (`CDP_PRIVACY_SALT`) keeps the hashes from being matched against a
list of known addresses by anyone without it.
"""

from __future__ import annotations

import duckdb

from cdp_assets.privacy.paths import PERSON_PATHS, typed_values

SUPPRESSED_TYPES = ("email", "phone_digits", "user_id", "device_id")  # and every record:<stream>
SETUP_SQL = """
CREATE SCHEMA IF NOT EXISTS privacy;
CREATE TABLE IF NOT EXISTS privacy.suppressions (
    digest VARCHAR PRIMARY KEY,   -- sha256(salt | type | value)
    id_type VARCHAR NOT NULL,
    request_id VARCHAR NOT NULL,
    created_at TIMESTAMPTZ NOT NULL
);
"""
DIGEST = "sha256($salt || '|' || {kind} || '|' || {value})"
SUPPRESS_SQL = f"""
INSERT INTO privacy.suppressions
SELECT DISTINCT {DIGEST.format(kind="id_type", value="value")}, id_type, $request_id, now()
FROM _subject_values
WHERE (list_contains($types, id_type) OR starts_with(id_type, 'record:')) AND coalesce(value, '') <> ''
ON CONFLICT DO NOTHING
"""


def setup(conn: duckdb.DuckDBPyConnection) -> None:
    conn.execute(SETUP_SQL)


def suppress(conn: duckdb.DuckDBPyConnection, salt: str, request_id: str) -> int:
    """Keep the subject's identifiers (the `_subject_values` of subject.resolve) as salted hashes."""
    setup(conn)
    before = conn.execute("SELECT count(*) FROM privacy.suppressions").fetchone()[0]
    conn.execute(SUPPRESS_SQL, {"salt": salt, "request_id": request_id, "types": list(SUPPRESSED_TYPES)})
    return conn.execute("SELECT count(*) FROM privacy.suppressions").fetchone()[0] - before


def dropped_sql(stream: str, salt: str) -> tuple[str, dict[str, str]]:
    """A condition over a page's `payload` that is true for records naming a suppressed identifier."""
    params: dict[str, str] = {"salt": salt}
    digests = [DIGEST.format(kind=f"${kind}", value=value) for kind, value in typed_values(stream, params)]
    return f"EXISTS (SELECT 1 FROM privacy.suppressions s WHERE s.digest IN ({', '.join(digests)}))", params


def dropped(conn: duckdb.DuckDBPyConnection, stream: str, salt: str) -> tuple[str, dict[str, str]] | None:
    """What a pull of `stream` must drop: a condition for land_stream, or None when no one is suppressed."""
    setup(conn)
    if stream not in PERSON_PATHS or not conn.execute("SELECT count(*) FROM privacy.suppressions").fetchone()[0]:
        return None
    return dropped_sql(stream, salt)

"""Suppression that lasts: keyed digests of a deleted person's identifiers, and the pulls that drop them.

When a person is deleted, an HMAC-SHA256 of each of their identifiers (addresses and their
provider-canonical forms, E.164 numbers, logins, anonymous devices, every source record id),
keyed by the privacy key (`CDP_PRIVACY_SALT`), goes to `privacy.suppressions`. Every later pull
drops, before it lands, any record whose payload names one of them (at the paths of
`paths.PERSON_PATHS`, each value normalised by the one normaliser, phones with the record's
country or locale), so neither an hourly nor a nightly full re-pull brings the person back, in
any spelling. Without the key no one can test a list of known addresses against the table.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from functools import cache

import duckdb

from cdp_assets.identity import rules as identity_rules
from cdp_assets.privacy import paths
from resources.source import SourceRecord

SUPPRESSED_TYPES = ("email", "email_canonical", "phone", "user_id", "device_id")  # and every record:<stream>
SETUP_SQL = """
CREATE SCHEMA IF NOT EXISTS privacy;
CREATE TABLE IF NOT EXISTS privacy.suppressions (
    digest VARCHAR PRIMARY KEY,   -- HMAC-SHA256(key, type | normalised value), hex
    id_type VARCHAR NOT NULL,
    request_id VARCHAR NOT NULL,
    created_at TIMESTAMPTZ NOT NULL
);
"""
SUBJECT_SQL = """
SELECT DISTINCT id_type, value FROM _subject_values
WHERE (list_contains($types, id_type) OR starts_with(id_type, 'record:')) AND coalesce(value, '') <> ''
"""


def digest(key: str, id_type: str, value: str) -> str:
    """The one digest of an identifier (its type and normal form), for suppressions and request records."""
    return hmac.new(key.encode(), f"{id_type}|{value}".encode(), hashlib.sha256).hexdigest()


def setup(conn: duckdb.DuckDBPyConnection) -> None:
    conn.execute(SETUP_SQL)


def suppress(conn: duckdb.DuckDBPyConnection, key: str, request_id: str) -> int:
    """Keep the subject's identifiers (the `_subject_values` of subject.resolve) as keyed digests."""
    setup(conn)
    subject = conn.execute(SUBJECT_SQL, {"types": list(SUPPRESSED_TYPES)}).fetchall()
    before = conn.execute("SELECT count(*) FROM privacy.suppressions").fetchone()[0]
    conn.execute(
        "INSERT INTO privacy.suppressions SELECT unnest($digests::VARCHAR[]), unnest($types::VARCHAR[]), $request_id,"
        " now() ON CONFLICT DO NOTHING",
        {"digests": [digest(key, t, v) for t, v in subject], "types": [t for t, _ in subject],
         "request_id": request_id},
    )  # fmt: skip
    return conn.execute("SELECT count(*) FROM privacy.suppressions").fetchone()[0] - before


def dropped(
    conn: duckdb.DuckDBPyConnection, stream: str, key: str
) -> Callable[[list[SourceRecord]], list[bool]] | None:
    """What a pull of `stream` must drop: a function saying, for each record of a page, whether it names a
    suppressed identifier; None when no one is suppressed. The digests are read once a pull; each distinct value
    the pull meets is normalised and digested once, in Python, with no query per page."""
    setup(conn)
    if stream not in paths.PERSON_PATHS:
        return None
    suppressed = {d for (d,) in conn.execute("SELECT digest FROM privacy.suppressions").fetchall()}
    if not suppressed:
        return None
    rules = identity_rules.load()
    where = paths.region_path(stream, rules)

    @cache  # lives as long as this pull's judge
    def gone(value: paths.Named) -> bool:
        return any(digest(key, *pair) in suppressed for pair in paths.forms(value, rules))

    def judge(records: list[SourceRecord]) -> list[bool]:
        return [any(gone(value) for value in paths.named(stream, record.payload, where)) for record in records]

    return judge

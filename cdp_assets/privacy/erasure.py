"""Where the warehouse keeps a person, table by table: the map that erasure and access exports both read.

Every table of every layer is either a target, with the condition that picks a subject's rows
(over the temp tables `subject.resolve` fills), or exempt, with the reason it holds no person.
A test fails when a table is neither, so a new table cannot be forgotten by deletion.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import duckdb
import phonenumbers

from cdp_assets import changes
from cdp_assets.identity import basis
from cdp_assets.identity.profiles import DOMAINS
from cdp_assets.raw import raw_table
from cdp_assets.staging import staging_table
from cdp_assets.views import policy
from resources import SOURCES

PROFILE = "profile_id IN (SELECT profile_id FROM _subject_profiles)"
RECORD = "(stream, record_id) IN (SELECT stream, record_id FROM _subject_records)"
KEYS = "key IN (SELECT value FROM _subject_values WHERE id_type IN ('email', 'profile'))"
LAYERS = ("raw", "staging", "quarantine", "identity", "privacy", "views", "sync")
SCRUBBED = "(erased: it named a person deleted on request)"


def names_subject(named: str) -> str:
    """The condition that a log's `message` names the subject: it holds one of the values of the table `named` as a
    whole token, so a short id inside a longer number or word does not count."""
    return (f"EXISTS (SELECT 1 FROM {named} WHERE length(value) >= 4 AND regexp_matches(lower(message), "
            "'(^|[^0-9a-z])' || regexp_escape(lower(value)) || '($|[^0-9a-z])'))")


def _profiles(*columns: str) -> str:
    return " OR ".join(f"{c} IN (SELECT profile_id FROM _subject_profiles)" for c in columns)


def _typed(type_column: str, value_column: str) -> str:
    return f"({type_column}, {value_column}) IN (SELECT id_type, value FROM _subject_values)"


def _landed(column: str = "landing_id") -> str:
    return f"{column} IN (SELECT landing_id FROM _subject_landings WHERE raw_table = $raw)"


@dataclass(frozen=True)
class Target:
    table: str
    where: str
    params: tuple[tuple[str, str], ...] = ()  # values the condition names, such as its raw table
    scrub: str | None = None  # a log's text column: its rows stay (they count runs), the text naming them goes

    @property
    def erase_sql(self) -> str:
        if self.scrub is None:
            return f"DELETE FROM {self.table} WHERE {self.where}"
        return f"UPDATE {self.table} SET {self.scrub} = '{SCRUBBED}' WHERE {self.where}"

    @property
    def layer(self) -> str:
        return self.table.split(".")[0]


def _source_targets() -> Iterator[Target]:
    for source, resource in SOURCES.items():
        for stream in resource.streams.values():
            raw = (("raw", raw_table(source, stream.name)),)
            yield Target(raw[0][1], _landed(), raw)
            yield Target(staging_table(source, stream.entity), _landed("_landing_id"), raw)
            yield Target(f"quarantine.{source}__{stream.entity}", _landed("raw_landing_id"), raw)


def _view_targets() -> Iterator[Target]:
    for view in policy.load().views.values():
        if "profile_id" in view.columns:
            extra = " OR email IN (SELECT value FROM _subject_values WHERE id_type = 'email')" if (
                "email" in view.columns and view.grain == "email address") else ""  # fmt: skip
            yield Target(view.table, PROFILE + extra)


IDENTITY_TARGETS = (  # the memo first: its condition reads identity.identifiers
    Target("identity.normalised_values",
           f"{_typed('id_type', 'value')} OR (raw_value, id_type, value) IN "
           f"(SELECT raw_value, id_type, value FROM identity.identifiers WHERE {RECORD})"),
    Target("identity.identifiers", RECORD),
    Target("identity.record_profiles", RECORD),
    Target("identity.graph_inputs", RECORD),  # each record's fingerprint as the graph last read it (increment.py)
    Target("identity.match_records", RECORD),  # each person record in the matcher's normal form (increment.py)
    Target("identity.masked_records", RECORD),  # the person records whose last resolution masked a value
    Target("identity.identifier_profiles", f"{PROFILE} OR {_typed('id_type', 'value')}"),
    # Any value the subject held, shared with others or not: the next identity run judges again what others hold.
    Target("identity.shared_values", _typed("id_type", "value")),
    Target("identity.profile_edges", PROFILE),
    Target("identity.person_profiles", PROFILE),
    Target("identity.person_lifecycle", PROFILE),
    Target("identity.account_people", PROFILE),
    Target("identity.email_addresses", f"{PROFILE} OR {_typed(repr('email'), 'email')}"),
    Target("identity.email_holders", f"{PROFILE} OR {RECORD} OR {_typed(repr('email'), 'email')}"),
    Target("identity.match_review", _profiles("profile_l", "profile_r")),
    Target("identity.merge_log", _profiles("profile_id", "other_profile_id")),
    Target("identity.profile_registry", _profiles("profile_id", "merged_into")),
    Target("identity.refused_links",
           f"{_profiles('profile_a', 'profile_b')} OR {_typed('type_a', 'value_a')} OR {_typed('type_b', 'value_b')}"),
    Target("identity.never_link", " OR ".join(_typed(f"split_part({c}, ':', 1)", f"substr({c}, strpos({c}, ':') + 1)")
                                             for c in ("a", "b"))),
    # The matcher's term frequencies (identity/basis.py): the subject's email and phone by value; an erasure drops
    # the rest of the basis too (`erase`), as its names and addresses are matched in no other form.
    Target("identity.match_frequencies", _typed("column_name", "value")),
)  # fmt: skip
OTHER_TARGETS = (
    Target("raw._full_pull_seen", "(stream, record_id) IN (SELECT raw_table, record_id FROM _subject_landings)"),
    Target("raw._echoes", "(raw_table, landing_id) IN (SELECT raw_table, landing_id FROM _subject_landings)"),
    Target("sync.runs", names_subject("_subject_named"), scrub="message"),
    Target("privacy.consent_ledger", PROFILE),
    Target("privacy.consent", PROFILE),
    Target("privacy.address_consent", f"{PROFILE} OR {_typed(repr('email'), 'email')}"),
    Target("privacy.purposes", PROFILE),
    Target("privacy.consented_addresses", f"{PROFILE} OR {_typed(repr('email'), 'email')}"),
    Target("sync.state", KEYS),
    Target("sync.deliveries", KEYS),
    Target("sync.intents", KEYS),
    Target("sync.rejections", KEYS),
    Target("sync.invalid_rows", KEYS),
    Target("sync.left_out_rows", KEYS),
    Target("sync.model_rows", f"{KEYS} OR {PROFILE}"),
)
EXEMPT: dict[str, str] = {
    "raw._stream_state": "each stream's cursor: a position in the source's listing",
    "quarantine._known_fields": "the payload field names seen per entity",
    "staging._builds": "each entity's last build: a position in raw's landing order, a fingerprint and, after a "
    "replay, up to five ids of records that differed (the row goes with any erasure reaching the entity)",
    changes.LOG: "the record and profile ids each build rewrote, with the ids of the records a replaced row hung "
    "from and the addresses a changed profile's refusals bind (emptied by every erasure, so the builds that follow "
    "it are whole next time)",
    changes.POSITIONS: "how far each build that follows the change log has read it, a fingerprint of its code and the "
    "moment it judged the clock by",
    "quarantine.quality_history": "counts and rates per entity and run",
    "quarantine.quality_scorecard": "counts and rates per entity and run",
    "quarantine.quality_identity_history": "identity health rates per run",
    "identity.accounts": "companies, with counts of their people",
    DOMAINS: "companies' domains, each in the form an address at it takes",
    "identity.match_basis": "the matcher's record count and model fingerprint (dropped by every erasure, with the "
    "frequencies, so the next identity run counts them again without the subject)",
    "identity.graph_state": "a fingerprint of the identity code, rules, model and never-link table",
    "privacy.requests": "requests by salted digest of their identifiers, with counts",
    "privacy.request_events": "the status history of each request",
    "privacy.request_actions": "what each request did where, in counts",
    "privacy.suppressions": "salted digests, which name no one without the salt",
    **{view.table: f"an aggregate of many people by {view.grain}" for view in policy.load().views.values()
       if "profile_id" not in view.columns},
}  # fmt: skip


def targets() -> tuple[Target, ...]:
    return (*_source_targets(), *IDENTITY_TARGETS, *OTHER_TARGETS, *_view_targets())


def _existing(conn: duckdb.DuckDBPyConnection) -> set[str]:
    rows = conn.execute(
        "SELECT table_schema || '.' || table_name FROM information_schema.tables WHERE list_contains($layers, "
        "table_schema) AND table_type = 'BASE TABLE'",
        {"layers": list(LAYERS)},
    ).fetchall()
    return {name for (name,) in rows}


def _phone_forms(e164: str) -> tuple[str, ...]:
    """How a text may write a phone without its `+`: its E.164 digits and its national digits (`4155550199`)."""
    try:
        number = phonenumbers.parse(e164)
    except phonenumbers.NumberParseException:
        return ()
    return e164.lstrip("+"), phonenumbers.national_significant_number(number)


def _name_subject(conn: duckdb.DuckDBPyConnection, present: set[str]) -> None:
    """Fill `_subject_named`, whatever names the subject in a text: redacted as it is, a run's message can still
    hold a profile id, a record id, a destination's id of the person or a phone's bare digits. Read before
    sync.state, which holds the destination ids, goes."""
    named = ["SELECT value FROM _subject_values", "SELECT profile_id FROM _subject_profiles"]
    if "sync.state" in present:
        named.append(f"SELECT destination_id FROM sync.state WHERE {KEYS}")
    conn.execute("CREATE OR REPLACE TEMP TABLE _subject_named AS " + " UNION ".join(named))
    phones = conn.execute("SELECT value FROM _subject_values WHERE id_type = 'phone'").fetchall()
    forms = sorted({form for (e164,) in phones for form in _phone_forms(e164)})
    conn.execute("INSERT INTO _subject_named SELECT unnest($forms::VARCHAR[])", {"forms": forms})


def subject_named(conn: duckdb.DuckDBPyConnection) -> set[str]:
    """What names the subject of the deletion just carried out (`_subject_named`), kept for the alert store's scrub
    after the connection, and its temp tables, are gone."""
    exists = conn.execute("SELECT count(*) FROM duckdb_tables() WHERE temporary AND table_name = '_subject_named'")
    if not exists.fetchone()[0]:
        return set()
    return {value for (value,) in conn.execute("SELECT value FROM _subject_named WHERE value IS NOT NULL").fetchall()}


def erase(conn: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """Delete the subject's rows from every target table, in one transaction; rows deleted per table."""
    present = _existing(conn)
    _name_subject(conn, present)
    deleted = {}
    conn.begin()
    try:
        for target in targets():
            if target.table in present:
                count = conn.execute(target.erase_sql, dict(target.params))
                if (rows := count.fetchone()[0]) > 0:
                    deleted[target.table] = int(rows)
        # An erased version may have been its record's newest, which no later landing replaces: the entity's next
        # staging build replays raw, so the record comes back from the versions that remain, as a replay has it.
        replayed = [f"{source}__{stream.entity}" for source, resource in SOURCES.items()
                    for stream in resource.streams.values() if raw_table(source, stream.name) in deleted]  # fmt: skip
        if replayed and "staging._builds" in present:
            conn.execute("DELETE FROM staging._builds WHERE entity IN $entities", {"entities": replayed})
        # The matcher's basis counted the subject's names and addresses among everyone's: dropped whole, the next
        # identity run counts it again from what remains (identity/basis.py).
        if deleted and {basis.KEPT, basis.KEPT_FREQUENCIES} <= present:
            conn.execute(f"DELETE FROM {basis.KEPT}")
            conn.execute(f"DELETE FROM {basis.KEPT_FREQUENCIES}")
        # The change log's keys and old ids may name the subject: emptied, with the positions of the builds that
        # follow it, whose next builds are whole (changes.py).
        if deleted and {changes.LOG, changes.POSITIONS} <= present:
            conn.execute(f"DELETE FROM {changes.LOG}")
            conn.execute(f"DELETE FROM {changes.POSITIONS}")
    except Exception:
        conn.rollback()
        raise
    conn.commit()
    return deleted


def counted(conn: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """Rows per target table that `erase` would delete or scrub and `export` would list (a dry run's counts)."""
    present = _existing(conn)
    _name_subject(conn, present)
    found = {}
    for target in targets():
        if target.table in present:
            [(rows,)] = conn.execute(f"SELECT count(*) FROM {target.table} WHERE {target.where}",
                                     dict(target.params)).fetchall()  # fmt: skip
            if rows:
                found[target.table] = int(rows)
    return found


def export(conn: duckdb.DuckDBPyConnection) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """The subject's rows of every target table, layer by layer (JSON payloads parsed)."""
    present = _existing(conn)
    _name_subject(conn, present)
    layers: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for target in targets():
        if target.table not in present:
            continue
        cursor = conn.execute(f"SELECT * FROM {target.table} WHERE {target.where}", dict(target.params))
        names = [d[0] for d in cursor.description]
        rows = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
        if rows:
            layers.setdefault(target.layer, {})[target.table] = [_readable(row) for row in rows]
    return layers


def _readable(row: dict[str, Any]) -> dict[str, Any]:
    """JSON text parsed, times in ISO-8601, so the export reads as one JSON document."""
    out = {}
    for name, value in row.items():
        if name in ("payload", "failed_checks", "properties") and isinstance(value, str):
            value = json.loads(value)
        elif isinstance(value, datetime):
            value = value.astimezone(UTC).isoformat()
        out[name] = value
    return out


def unmapped(conn: duckdb.DuckDBPyConnection) -> list[str]:
    """Tables of the warehouse that are neither a target nor exempt (must be none)."""
    mapped = {t.table for t in targets()} | set(EXEMPT)
    return sorted(_existing(conn) - mapped)

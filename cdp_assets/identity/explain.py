"""Explain and undo: why a profile holds what it holds, and "never link" rules that split it.

Reads the tables the identity graph writes; `cdp profile explain|never-link` is the
command-line face of these functions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import duckdb

from cdp_assets.identity import normalise
from cdp_assets.identity.profiles import PROVENANCE, TRAITS
from cdp_assets.identity.resolution import NEVER_LINK_TABLE, ensure_tables
from cdp_assets.identity.rules import Rules


@dataclass(frozen=True)
class Explanation:
    profile_id: str
    identifiers: list[dict[str, Any]]  # every identifier and record id the profile holds
    edges: list[dict[str, Any]]  # the links that built it
    refused: list[dict[str, Any]]  # links a limit, the chain check, a never-link rule or a shared value turned away
    shared: list[dict[str, Any]]  # the shared values it holds: why shared, and the other profiles holding each
    history: list[dict[str, Any]]  # merges and splits from the merge log
    traits: list[dict[str, Any]]  # the golden record: each trait's value, source record, change time and rule


def lookup_value(id_type: str, raw: str, rules: Rules) -> str | None:
    """A value as the graph stores it: emails and phones normalised, ids as given."""
    if id_type == "email":
        return normalise.email(raw, rules)
    if id_type == "phone":
        return normalise.phone(raw, None, rules)
    return raw.strip()


def find_profile(conn: duckdb.DuckDBPyConnection, id_type: str, value: str) -> str | None:
    """The current profile of an identifier, or of a profile id that was merged into another."""
    if id_type == "profile_id":
        row = conn.execute(
            """
            WITH RECURSIVE chain(profile_id, merged_into) AS (
                SELECT profile_id, merged_into FROM identity.profile_registry WHERE profile_id = $value
                UNION ALL
                SELECT r.profile_id, r.merged_into FROM identity.profile_registry r
                JOIN chain c ON r.profile_id = c.merged_into
            )
            SELECT profile_id FROM chain WHERE merged_into IS NULL
            """,
            {"value": value},
        ).fetchone()
    else:
        row = conn.execute(
            "SELECT profile_id FROM identity.identifier_profiles WHERE id_type = $type AND value = $value"
            " AND NOT shared",
            {"type": id_type, "value": value},
        ).fetchone()
    return row[0] if row else None


def shared_holders(conn: duckdb.DuckDBPyConnection, id_type: str, value: str) -> list[str]:
    """The profiles holding a shared value (none if the value is not shared)."""
    rows = conn.execute(
        "SELECT profile_id FROM identity.identifier_profiles WHERE id_type = $type AND value = $value AND shared"
        " ORDER BY first_seen, profile_id",
        {"type": id_type, "value": value},
    ).fetchall()
    return [profile_id for (profile_id,) in rows]


def _rows(conn: duckdb.DuckDBPyConnection, sql: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    cursor = conn.execute(sql, params)
    names = [column[0] for column in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def golden_record(conn: duckdb.DuckDBPyConnection, profile_id: str) -> list[dict[str, Any]]:
    """Each trait the profile's golden record holds, with its provenance; none before profiles are first built."""
    built = conn.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE schema_name = 'identity' AND table_name = 'person_profiles'"
    ).fetchone()
    if not built or not built[0]:
        return []
    columns = ", ".join(f"{trait}{suffix}" for trait in TRAITS for suffix in PROVENANCE.values())
    found = _rows(
        conn, f"SELECT {columns} FROM identity.person_profiles WHERE profile_id = $profile", {"profile": profile_id}
    )
    return [
        {"trait": trait, **{field: row[f"{trait}{suffix}"] for field, suffix in PROVENANCE.items()}}
        for row in found
        for trait in TRAITS
        if row[trait] is not None
    ]


SHOWN_HOLDERS = 20  # other profiles named per shared value; `profiles` counts them all
SHARED_SQL = """
SELECT h.id_type, h.value, s.reason, s.records, s.profiles,
       coalesce((list(o.profile_id ORDER BY o.first_seen, o.profile_id) FILTER (WHERE o.profile_id IS NOT NULL))
                [1:$others], []) AS other_profiles
FROM identity.identifier_profiles h
JOIN identity.shared_values s USING (id_type, value)
LEFT JOIN identity.identifier_profiles o
       ON o.id_type = h.id_type AND o.value = h.value AND o.shared AND o.profile_id <> h.profile_id
WHERE h.profile_id = $profile AND h.shared
GROUP BY h.id_type, h.value, s.reason, s.records, s.profiles
ORDER BY h.id_type, h.value
"""


def explain(conn: duckdb.DuckDBPyConnection, profile_id: str) -> Explanation:
    params = {"profile": profile_id}
    return Explanation(
        profile_id=profile_id,
        identifiers=_rows(
            conn,
            "SELECT id_type, value, first_seen, shared FROM identity.identifier_profiles WHERE profile_id = $profile "
            "ORDER BY first_seen, id_type, value",
            params,
        ),
        edges=_rows(
            conn,
            "SELECT type_a, value_a, type_b, value_b, link_type, method, probability, records, streams, first_seen "
            "FROM identity.profile_edges WHERE profile_id = $profile ORDER BY first_seen, link_type",
            params,
        ),
        refused=_rows(
            conn,
            "SELECT refused_by, type_a, value_a, profile_a, type_b, value_b, profile_b, method, probability "
            "FROM identity.refused_links WHERE $profile IN (profile_a, profile_b) ORDER BY refused_by, first_seen",
            params,
        ),
        shared=_rows(conn, SHARED_SQL, {**params, "others": SHOWN_HOLDERS}),
        history=_rows(
            conn,
            "SELECT run_id, logged_at, action, profile_id, other_profile_id, cause FROM identity.merge_log "
            "WHERE $profile IN (profile_id, other_profile_id) ORDER BY logged_at",
            params,
        ),
        traits=golden_record(conn, profile_id),
    )


def node(side: str, rules: Rules) -> str:
    """`type:value` as the graph stores it, for a never-link rule."""
    id_type, _, raw = side.partition(":")
    if id_type not in rules.types or not raw:
        raise ValueError(f"{side!r}: give type:value with a type in {sorted(rules.types)}")
    value = lookup_value(id_type, raw, rules)
    if value is None:
        raise ValueError(f"{side!r} is not a valid {id_type}")
    return f"{id_type}:{value}"


def add_never_link(
    conn: duckdb.DuckDBPyConnection, rules: Rules, a: str, b: str | None, reason: str, added_by: str
) -> None:
    """Record that `a` and `b` (each `type:value`) must never share a profile; `b` None blocks `a` alone.

    The next identity graph run applies it: the profile splits and the split is logged."""
    a, b = node(a, rules), node(b, rules) if b else None
    ensure_tables(conn)
    conn.execute(
        f"INSERT INTO {NEVER_LINK_TABLE} (a, b, reason, added_by) VALUES ($a, $b, $reason, $by)",
        {"a": a, "b": b, "reason": reason, "by": added_by},
    )

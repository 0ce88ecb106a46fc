"""Shared values: an identifier value several people use (a team's mailbox, a household's phone, a family laptop).

The rule is data (rules.yaml `shared_values`) and one SQL (`sql/shared_values.sql`, `judge`), which identity applies
to the person records carrying each value and privacy to the profiles holding it. In the identity graph a shared
value links nothing by itself: resolution isolates its node (`shared_nodes`), its records are placed by their other
identifiers or go to its first holder (`sql/record_labels.sql`, `attribute`), and it is kept on every profile
holding it, marked shared (`identity.identifier_profiles.shared`), and reported in `identity.shared_values`.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from cdp_assets.identity.rules import Rules

SQL = Path(__file__).parent / "sql"
RULE = "shared"  # how a link refused because it goes through a shared value is logged: `shared (<reason>)`

# Identity's holders: the person records carrying each value (names as the matcher reads them, `_match_records`),
# and for a device type the logins seen with it on one record (an event).
HOLDERS_SQL = """
CREATE OR REPLACE TEMP TABLE _shared_holders AS
SELECT i.id_type, i.value, m.unique_id AS holder, m.first_name, m.last_name, m.given_name,
       m.date_of_birth::DATE AS date_of_birth
FROM _graph_identifiers i
JOIN _match_records m ON m.unique_id = i.stream || ':' || i.record_id
WHERE list_contains($types, i.id_type)
UNION ALL
SELECT DISTINCT d.id_type, d.value, l.value, NULL, NULL, NULL, NULL
FROM _graph_identifiers d
JOIN _graph_identifiers l ON l.stream = d.stream AND l.record_id = d.record_id AND l.id_type = $login
WHERE list_contains($device_types, d.id_type)
"""
# A shared value proves nothing for the matcher either: on each record carrying it, it is replaced by a value of
# that record alone (a hash: no two are a typing slip apart), so two records never agree on it (colleagues on one
# team address gain nothing from it), while a record still disagrees with another carrying a different address or
# number, as it did before (left empty, it would drop that evidence too and let a common name and city decide).
MASKS = {"email": ("email", ["email", "email_local"]), "phone": ("phone", ["phone"])}
MASK_PREFIX = "shared:"  # a masked value: no address or number read from a source begins so
MASKED_OUT = "_masked_records_out"  # TEMP (stream, record_id): the person records a resolution masked


def judge(conn: duckdb.DuckDBPyConnection, rules: Rules) -> None:
    """TEMP `_shared_verdicts(id_type, value, reason)` from TEMP `_shared_holders` (see sql/shared_values.sql)."""
    rule = rules.shared
    conn.execute((SQL / "shared_values.sql").read_text(), {
        "types": list(rule.types), "role_mailboxes": list(rule.role_mailboxes), "device_types": list(rule.device_types),
        "names_alike_at": rule.names_alike_at, "date_max_edits": rule.date_max_edits,
    })


def shared_nodes(conn: duckdb.DuckDBPyConnection, rules: Rules) -> list[int]:
    """The `_nodes` idx of this run's shared values, judged on the person records of `_match_records`
    (matching.build_records) and the events of TEMP `_graph_identifiers` (resolution.py); leaves them in TEMP
    `_shared(id_type, value, reason)` and takes them out of `_match_records`' evidence."""
    conn.execute(HOLDERS_SQL, {"types": list(rules.shared.types), "device_types": list(rules.shared.device_types),
                               "login": rules.shared.login})
    judge(conn, rules)
    conn.execute("CREATE OR REPLACE TEMP TABLE _shared AS SELECT * FROM _shared_verdicts")
    mask(conn, "_shared")
    return [idx for (idx,) in conn.execute("SELECT n.idx FROM _shared JOIN _nodes n USING (id_type, value)").fetchall()]


def mask(conn: duckdb.DuckDBPyConnection, values: str) -> None:
    """Take the values of `values` (a TEMP table or view of id_type, value) out of the matcher's evidence."""
    columns = {row[0] for row in conn.execute("DESCRIBE _match_records").fetchall()}
    for id_type, (column, masked) in MASKS.items():
        if column in columns:
            own = ", ".join(f"{name} = $prefix || md5(unique_id)" for name in masked if name in columns)
            conn.execute(f"UPDATE _match_records SET {own} WHERE {column} IN (SELECT value FROM {values} "
                         "WHERE id_type = $type)", {"type": id_type, "prefix": MASK_PREFIX})  # fmt: skip


def masked_records(conn: duckdb.DuckDBPyConnection) -> None:
    """TEMP MASKED_OUT: the records of `_match_records` with a value masked (by `mask`), as the graph keeps them for
    the next run's region (increment.py: these alone score otherwise than their normal form)."""
    columns = {row[0] for row in conn.execute("DESCRIBE _match_records").fetchall()}
    masked = " OR ".join(f"starts_with({name}, $prefix)" for _, names in MASKS.values() for name in names
                         if name in columns) or "false"
    conn.execute(f"CREATE OR REPLACE TEMP TABLE {MASKED_OUT} AS SELECT split_part(unique_id, ':', 1) AS stream,"
                 f" substr(unique_id, strpos(unique_id, ':') + 1) AS record_id FROM _match_records WHERE {masked}",
                 {"prefix": MASK_PREFIX})


def refusal(reasons: pd.Series) -> pd.Series:
    """The rule a link through a shared value is refused by, from the value's reason."""
    return RULE + " (" + reasons + ")"


def attribute(conn: duckdb.DuckDBPyConnection, labels: np.ndarray, shared: np.ndarray, person: np.ndarray) -> set[int]:
    """TEMP `_record_labels(stream, record_id, label)`: each record's component (sql/record_labels.sql says how a
    record carrying a shared value is placed), from each node's component, whether it is a shared value and whether
    it is a person record's own id (arrays by `_nodes` idx); returns the labels used."""
    frame = pd.DataFrame({"idx": np.arange(len(labels)), "label": labels, "shared": shared,
                          "personal": np.isin(labels, labels[person])})
    conn.register("_node_labels", frame)
    try:
        conn.execute((SQL / "record_labels.sql").read_text())
    finally:
        conn.unregister("_node_labels")
    return {label for (label,) in conn.execute("SELECT DISTINCT label FROM _record_labels").fetchall()}

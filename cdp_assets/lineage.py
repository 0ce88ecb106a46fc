"""Dependencies derived from the SQL an asset runs, not written beside it: sqlglot parses the statements, and each
warehouse table they read maps to the asset owning it (the asset of that name, or the one writing it, as the module
writing it declares: WRITTEN_BY). tests/test_lineage.py holds what this derives to what each step reads as it runs.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import sqlglot
from sqlglot import exp

from cdp_assets.identity import resolution
from cdp_assets.identity.assets import GRAPH_KEY
from cdp_assets.identity.profiles import ACCOUNT_PEOPLE, ACCOUNTS, EMAIL_FOLLOWER, HOLDERS
from cdp_assets.privacy import consent

SCHEMAS = ("raw", "staging", "quarantine", "identity", "views", "sync", "privacy")
WRITES = (exp.Create, exp.Insert, exp.Update, exp.Delete, exp.Merge, exp.Drop, exp.Alter, exp.TruncateTable)
GRAPH = GRAPH_KEY.to_user_string()
# Tables (and change-log producers) an asset writes beside the one of its own name, from the lists its module keeps.
WRITTEN_BY: dict[str, str] = {
    **{f"identity.{table}": GRAPH for table in resolution.GRAPH_TABLES},
    resolution.PRODUCER: GRAPH,
    **dict.fromkeys(consent.TABLES, consent.CONSENT_KEY.to_user_string()),
    ACCOUNT_PEOPLE: ACCOUNTS.replace(".", "/"),
    HOLDERS: EMAIL_FOLLOWER.replace(".", "/"),
}


def tables_read(*sql: str) -> set[str]:
    """The warehouse tables (`schema.name`) the statements of `sql` read, leaving out those they write."""
    read: set[str] = set()
    written: set[str] = set()
    for text in sql:
        # Parameters (`$name`, `?`) as NULL: sqlglot stumbles on some where a value may stand (a json key, a cast).
        for tree in sqlglot.parse(re.sub(r"\$[A-Za-z_]\w*|\?", "NULL", text), read="duckdb"):
            if tree is None:
                continue
            for node in tree.find_all(*WRITES):
                target = node.this.this if isinstance(node.this, exp.Schema) else node.this
                if isinstance(target, exp.Table) and target.name:
                    written.add(f"{target.db}.{target.name}")
            read |= {f"{table.db}.{table.name}" for table in tree.find_all(exp.Table) if table.db in SCHEMAS}
    return read - written


def assets_of(tables: Iterable[str]) -> tuple[str, ...]:
    """The assets ("layer/name") owning `tables` (or change-log producers), in order."""
    return tuple(sorted({WRITTEN_BY.get(table, table.replace(".", "/")) for table in tables}))

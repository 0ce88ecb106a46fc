"""A few rows of a view in its materialisation metadata, so its page in the UI shows what one row looks like.

Only pseudonymous views (no direct identifiers allowed) show rows, and only the columns their policy lists below
direct identifier. Quasi identifiers (profile ids, cities, exact dates) do show: the team a pseudonymous view is
for reads those in every row already, and a row without its profile id or dates would not show what it is.
"""

from datetime import date, datetime
from decimal import Decimal

import duckdb
from dagster import MetadataValue, TableMetadataValue, TableRecord, TableSchema, TextMetadataValue

from cdp_assets.views.policy import ViewPolicy, quoted

ROWS = 5
MAX_CHARS = 40  # longer values are cut, so the table stays readable beside the others
WITHHELD = "withheld: the view holds direct identifiers"

Cell = str | int | float | bool | None


def cell(value: object) -> Cell:
    """A value as the UI's table shows it: numbers and flags as they are, anything else as short text."""
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, datetime):
        text = value.isoformat(sep=" ", timespec="seconds")
    else:
        text = value.isoformat() if isinstance(value, date) else str(value)
    return text if len(text) <= MAX_CHARS else text[: MAX_CHARS - 1] + "…"


def sample(
    conn: duckdb.DuckDBPyConnection, view: ViewPolicy, schema: TableSchema
) -> TableMetadataValue | TextMetadataValue:
    """The view's first rows by its key, in the columns of `schema` (its table's) that it may share; or why not.

    A column of the table its policy does not list is left out too: nothing says it is not an identifier.
    """
    if not view.pseudonymous:
        return MetadataValue.text(WITHHELD)
    columns = [column for column in schema.columns if column.name in view.shareable_columns]
    rows = conn.execute(
        f"SELECT {', '.join(quoted(c.name) for c in columns)} FROM views.{quoted(view.name)}"
        f" ORDER BY {', '.join(quoted(k) for k in view.key)} LIMIT $rows",
        {"rows": ROWS},
    ).fetchall()
    return MetadataValue.table(
        records=[TableRecord({c.name: cell(v) for c, v in zip(columns, row, strict=True)}) for row in rows],
        schema=TableSchema(columns=columns),
    )

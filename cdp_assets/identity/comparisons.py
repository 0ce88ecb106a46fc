"""rules.yaml's `matching:` section as Splink comparisons and blocking rules, over the fields a record table holds.

A level is a field compared exactly (`exact`) or an SQL condition over `<field>_l` and `<field>_r` (`sql`), with a
chart label and optional term-frequency adjustment (`tf`). A level over a field the table lacks or holds only as
NULL is left out (it could never hold a pair, and EM cannot estimate a level it never sees); a comparison left with
no level, or whose `missing` field the table lacks, is left out; so is a blocking rule over such a field. So one
set of rules runs on any person file, whatever fields it maps.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import duckdb
import splink.comparison_level_library as cll
import splink.comparison_library as cl
from splink import block_on
from splink.blocking_rule_library import CustomRule
from splink.internals.blocking_rule_creator import BlockingRuleCreator

from cdp_assets.identity.rules import MatchingRules

WORD = re.compile(r"\b(?:[lr]\.)?([a-z][a-z0-9_]*)\b")
PAIR_COLUMN = re.compile(r"\b([a-z][a-z0-9_]*)_[lr]\b")


@dataclass(frozen=True)
class Matcher:
    """What of the rules applies to one record table: its comparisons, blocking rules and EM sessions."""

    comparisons: list[cl.CustomComparison]
    blocking: list[BlockingRuleCreator]
    training: list[BlockingRuleCreator]
    fields: list[str]  # the fields holding a value, the ones the comparisons may use


def fields_in(sql: str, columns: set[str]) -> set[str]:
    """The columns an SQL text names: bare, as `l.col`/`r.col`, or as Splink's `col_l`/`col_r`."""
    found = set()
    for word in WORD.findall(sql):
        if word in columns:
            found.add(word)
        elif word[-2:] in ("_l", "_r") and word[:-2] in columns:
            found.add(word[:-2])
    return found


def table_fields(conn: duckdb.DuckDBPyConnection, table: str) -> tuple[set[str], set[str]]:
    """(the table's columns, those holding at least one value)."""
    columns = [row[0] for row in conn.execute(f"DESCRIBE {table}").fetchall()]
    counts = conn.execute(f"SELECT {', '.join(f'count({c})' for c in columns)} FROM {table}").fetchall()[0]
    return set(columns), {column for column, count in zip(columns, counts, strict=True) if count}


def pair_fields(sql: str) -> set[str]:
    """The fields an SQL condition over a pair names (as Splink's `field_l`, `field_r`), or the one a bare name is."""
    return {sql} if sql.isidentifier() else set(PAIR_COLUMN.findall(sql))


def _level(spec: dict[str, Any]) -> cll.ComparisonLevelCreator:
    if "exact" in spec:
        level = cll.ExactMatchLevel(spec["exact"], term_frequency_adjustments=bool(spec.get("tf")))
    else:
        level = cll.CustomLevel(" ".join(spec["sql"].split()))
    return level.configure(label_for_charts=spec["label"])




def comparison(spec: dict[str, Any], columns: set[str], filled: set[str]) -> cl.CustomComparison | None:
    """One comparison of the rules with the levels the table can fill, or None when none is left."""
    null = " ".join(spec["missing"].split())
    for absent in pair_fields(null) - columns:  # a column the table lacks is missing on every record
        null = re.sub(rf"\b{absent}_[lr]\b", "NULL", null) if not null.isidentifier() else null
    if null.isidentifier() and null not in columns:
        return None
    levels = [_level(level) for level in spec["levels"] if pair_fields(level.get("exact") or level["sql"]) <= filled]
    if not levels:
        return None
    null_level = cll.NullLevel(null) if null in columns else cll.CustomLevel(null).configure(is_null_level=True)
    return cl.CustomComparison(
        output_column_name=spec["name"], comparison_levels=[null_level, *levels, cll.ElseLevel()]
    )


def blocking_rule(spec: list[str] | str, columns: set[str], filled: set[str]) -> BlockingRuleCreator | None:
    """Pairs equal on every listed field or expression, or meeting an SQL condition; None over a missing field."""
    text = spec if isinstance(spec, str) else " ".join(spec)
    named = fields_in(text, columns) | {item for item in spec if isinstance(spec, list) and item.isidentifier()}
    if not named or not named <= filled:
        return None
    return CustomRule(" ".join(spec.split())) if isinstance(spec, str) else block_on(*spec)


def build(conn: duckdb.DuckDBPyConnection, rules: MatchingRules, table: str) -> Matcher:
    columns, filled = table_fields(conn, table)
    comparisons = [c for c in (comparison(spec, columns, filled) for spec in rules.comparisons) if c]
    blocking = [r for r in (blocking_rule(spec, columns, filled) for spec in rules.blocking) if r]
    training = [r for r in (blocking_rule(spec, columns, filled) for spec in rules.training) if r]
    return Matcher(comparisons, blocking, training, sorted(filled - {"unique_id", "cluster_id"}))

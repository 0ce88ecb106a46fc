"""Row-level contract enforcement: validate candidates in chunks, keep each failure with its reasons.

pandas holds one chunk of candidate rows at a time; the verdicts go back to DuckDB as a
small table of failed rows, and staging and quarantine are then written by SQL from
the same candidates, so every candidate lands in exactly one of the two.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field

import duckdb
import pandas as pd
import pandera.pandas as pa

from cdp_assets.contracts import Contract
from cdp_assets.mappings import MAPPINGS

CHUNK_ROWS = 100_000
MAX_VALUE_CHARS = 200  # offending values are kept, cut to this length


@dataclass
class Verdict:
    rows_in: int = 0
    rows_quarantined: int = 0
    failures_by_check: Counter[str] = field(default_factory=Counter)

    @property
    def rows_passed(self) -> int:
        return self.rows_in - self.rows_quarantined


def validated_columns(entity: str) -> list[str]:
    """Columns a contract reads: every mapped column but whole JSON documents."""
    mapped = [column.name for column in MAPPINGS[entity] if column.kind != "json"]
    return ["_row", "record_id", "is_deleted", "wrong_type_count", "wrong_type_fields", *mapped]


def enforce(conn: duckdb.DuckDBPyConnection, entity: str, contract: type[Contract]) -> Verdict:
    """Validate `_candidates` chunk by chunk; failed rows and their reasons go to temp table `_failed`."""
    conn.execute("CREATE OR REPLACE TEMP TABLE _failed (_row BIGINT, failed_checks JSON)")
    verdict = Verdict(rows_in=conn.execute("SELECT count(*) FROM _candidates").fetchone()[0])
    select = ", ".join(validated_columns(entity))
    for start in range(0, verdict.rows_in, CHUNK_ROWS):
        chunk = conn.execute(
            f"SELECT {select} FROM _candidates WHERE _row > $start AND _row <= $end",
            {"start": start, "end": start + CHUNK_ROWS},
        ).df()
        failed = _failures(chunk.set_index("_row"), contract)
        if failed.empty:
            continue
        verdict.rows_quarantined += len(failed)
        for reasons in failed["failed_checks"]:
            verdict.failures_by_check.update({reason["check"] for reason in json.loads(reasons)})
        conn.register("failed_chunk", failed)
        conn.execute("INSERT INTO _failed SELECT _row, failed_checks::JSON FROM failed_chunk")
        conn.unregister("failed_chunk")
    return verdict


def _failures(chunk: pd.DataFrame, contract: type[Contract]) -> pd.DataFrame:
    """One row per failing candidate: its `_row` and a JSON list of {check, column, value}."""
    try:
        contract.validate(chunk, lazy=True)
    except pa.errors.SchemaErrors as errors:
        cases = errors.failure_cases
    else:
        return pd.DataFrame(columns=["_row", "failed_checks"])
    reasons: dict[int, list[dict[str, object]]] = {}
    for case in cases.itertuples(index=False):
        if pd.isna(case.index):  # a column-level failure (a missing column): every row fails it
            raise RuntimeError(f"contract {contract.__name__} cannot run: {case.check} on {case.column}")
        row = int(case.index)
        table_wide = case.schema_context == "DataFrameSchema"
        reason = {
            "check": str(case.check),
            "column": None if table_wide else case.column,
            "value": None if table_wide else _value(case.failure_case),
        }
        if case.column == "wrong_type_count":  # name the fields and their values instead of a count
            reason.update(column=None, value=[_value(v) for v in chunk.at[row, "wrong_type_fields"]])
        if reason not in reasons.setdefault(row, []):
            reasons[row].append(reason)
    return pd.DataFrame(
        {
            "_row": list(reasons),
            "failed_checks": [
                json.dumps(sorted(found, key=lambda r: (r["check"], r["column"] or "")), default=str)
                for found in reasons.values()
            ],
        }
    )


def _value(value: object) -> object:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return None
    text = str(value)
    return text if len(text) <= MAX_VALUE_CHARS else text[:MAX_VALUE_CHARS] + f"... ({len(text)} characters)"

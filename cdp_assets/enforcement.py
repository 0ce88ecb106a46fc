"""Row-level contract enforcement: validate candidates in chunks, keep each failure with its reasons.

pandas holds one chunk of candidate rows at a time; the verdicts go back to DuckDB as a
small table of failed rows, and staging and quarantine are then written by SQL from
the same candidates, so every candidate lands in exactly one of the two.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import duckdb
import pandas as pd
import pandera.pandas as pa

from cdp_assets.contracts import REASONS, Contract
from cdp_assets.mappings import MAPPINGS, source_fields

CHUNK_ROWS = 100_000
MAX_VALUE_CHARS = 200  # offending values are kept, cut to this length
# Counts checked by the contract -> the candidates' list of the fields at fault, each with its reason.
NAMED_FAULTS = {"wrong_type_count": "wrong_type_fields", "time_fault_count": "time_faults"}


@dataclass
class Verdict:
    rows_in: int = 0
    rows_quarantined: int = 0

    @property
    def rows_passed(self) -> int:
        return self.rows_in - self.rows_quarantined


def validated_columns(entity: str) -> list[str]:
    """Columns a contract reads: every mapped column but whole JSON documents."""
    mapped = [column.name for column in MAPPINGS[entity] if column.kind != "json"]
    return ["_row", "record_id", "is_deleted", *(name for pair in NAMED_FAULTS.items() for name in pair), *mapped]


def enforce(conn: duckdb.DuckDBPyConnection, entity: str, contract: type[Contract], candidates: str,
            failed: str) -> Verdict:
    """Validate the table `candidates` chunk by chunk; failed rows and their reasons go to TEMP `failed`, which this
    makes (both named by the staging build that reads them)."""
    conn.execute(f"CREATE OR REPLACE TEMP TABLE {failed} (_row BIGINT, failed_checks JSON)")
    verdict = Verdict(rows_in=conn.execute(f"SELECT count(*) FROM {candidates}").fetchone()[0])
    select, fields = ", ".join(validated_columns(entity)), source_fields(entity)
    for start in range(0, verdict.rows_in, CHUNK_ROWS):
        chunk = conn.execute(
            f"SELECT {select} FROM {candidates} WHERE _row > $start AND _row <= $end",
            {"start": start, "end": start + CHUNK_ROWS},
        ).df()
        failures = _failures(chunk.set_index("_row"), contract, fields)
        if failures.empty:
            continue
        verdict.rows_quarantined += len(failures)
        conn.register("failed_chunk", failures)
        conn.execute(f"INSERT INTO {failed} SELECT _row, failed_checks::JSON FROM failed_chunk")
        conn.unregister("failed_chunk")
    return verdict


def _failures(chunk: pd.DataFrame, contract: type[Contract], fields: dict[str, str]) -> pd.DataFrame:
    """One row per failing candidate: its `_row` and a JSON list of {check, column, value, reason}, the reason
    naming the source's field and what is wrong with it."""
    try:
        contract.validate(chunk, lazy=True)
    except pa.errors.SchemaErrors as errors:
        cases = errors.failure_cases
    else:
        return pd.DataFrame(columns=["_row", "failed_checks"])
    reasons: dict[int, list[dict[str, object]]] = {}
    at_fault: dict[int, set[str]] = {}  # per row: the fields named in its faults
    for case in cases.itertuples(index=False):
        if pd.isna(case.index):  # a column-level failure (a missing column): every row fails it
            raise RuntimeError(f"contract {contract.__name__} cannot run: {case.check} on {case.column}")
        row = int(case.index)
        check = str(case.check)
        table_wide = case.schema_context == "DataFrameSchema"
        described = REASONS.get(check.split("(")[0], check)
        reason = {
            "check": check,
            "column": None if table_wide else case.column,
            "value": None if table_wide else _value(case.failure_case),
            "reason": described if table_wide else f"{fields.get(case.column, case.column)}: {described}",
        }
        if case.column in NAMED_FAULTS and not table_wide:  # the fields, values and what is wrong, not a count
            faults = [_value(v) for v in chunk.at[row, NAMED_FAULTS[case.column]]]
            reason.update(column=None, value=faults, reason="; ".join(map(str, faults)))
            at_fault.setdefault(row, set()).update(str(fault).split(": ", 1)[0] for fault in faults)
        if reason not in reasons.setdefault(row, []):
            reasons[row].append(reason)
    return pd.DataFrame(
        {
            "_row": list(reasons),
            "failed_checks": [
                json.dumps(
                    sorted(_without_echoes(found, at_fault.get(row, set()), fields), key=_order), default=str
                )
                for row, found in reasons.items()
            ],
        }
    )


def _without_echoes(found: list[dict[str, object]], at_fault: set[str], fields: dict[str, str]) -> list[dict]:
    """The reasons, less "missing" for a field already named at fault (or inside one): it is missing only because
    what the source sent there could not be read."""

    def echoed(reason: dict[str, object]) -> bool:
        field = fields.get(str(reason["column"]), "")
        return reason["check"] == "not_nullable" and any(
            field == name or field.startswith(f"{name}.") or name == "record" for name in at_fault
        )

    return [reason for reason in found if not echoed(reason)]


def _order(reason: dict[str, object]) -> tuple[str, str]:
    return str(reason["check"]), str(reason["column"] or "")


def _value(value: object) -> object:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return None
    text = str(value)
    return text if len(text) <= MAX_VALUE_CHARS else text[:MAX_VALUE_CHARS] + f"... ({len(text)} characters)"

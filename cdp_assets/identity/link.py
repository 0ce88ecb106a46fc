"""`cdp identity link`: the identity engine the pipeline runs, on any person file (csv or parquet).

The file's columns are mapped onto the person fields of the matcher (first_name, date_of_birth, ...), the
deterministic identifier types of rules.yaml (email, phone, user_id, national_id, ...) and `record_id`. The file is
the rules' one source (its records a record type of their own), loaded into an in-memory DuckDB; its identifiers are
normalised by the one normaliser (identifiers.build), the model is trained on the file (--train) or the shipped one
(or --model) is used, and the pipeline's own engine, resolution.partition, does the rest as it does for the
warehouse: deterministic components under the rules' limits, shared values (shared.py: a value whose records
disagree on who they are, or a role mailbox, links nothing), the chain check, pairs scored across components and
those at `merge_at` or above joined as the weakest links. Only the never-link rules are empty: they name warehouse
values.

Writes clusters (record_id, cluster_id) and scored pairs (record_id_l, record_id_r, probability, match_weight,
decision: merge, or review for a pair under `merge_at` or one a rule refused) into the output folder.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from cdp_assets.identity import identifiers, matching, resolution
from cdp_assets.identity.rules import IdentifierSource, IdentifierType, Rules
from cdp_assets.identity.rules import load as load_rules

STREAM = "file"
RECORD_TYPE = "file_record"
INPUT_TABLE = "_link_input"
RECORD_ID = "record_id"
# A date of birth written as text is read as ISO (1984-07-02) or compact (19840702): the two orders no reader
# can take for another (03/04/1984 is April in one country and March in the next).
DATE_FORMATS = ("%Y-%m-%d", "%Y%m%d")
FORMATS = ("csv", "parquet")
PAIR_COLUMNS = ("record_id_l", "record_id_r", "probability", "match_weight", "decision")


class LinkError(ValueError):
    """A file or mapping the command cannot run on; its text says what to change."""


@dataclass(frozen=True)
class Linked:
    clusters: pd.DataFrame  # record_id, cluster_id
    pairs: pd.DataFrame  # record_id_l, record_id_r, probability, match_weight, decision
    records: int


def id_fields(rules: Rules) -> list[str]:
    """Identifier types a file may carry: the deterministic ones with a limit (a provider-canonical email is made
    from an email, never mapped)."""
    return [name for name, t in rules.types.items() if t.limit is not None and name != "email_canonical"]


def parse_map(text: str) -> dict[str, tuple[str, ...]]:
    """`column=field,...` as field -> its columns in order (several columns of one field are joined by a space,
    as a street number and a street name make an address)."""
    mapping: dict[str, tuple[str, ...]] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        column, sep, field = (side.strip() for side in item.partition("="))
        if not sep or not column or not field:
            raise LinkError(f"--map takes column=field pairs separated by commas; got {item!r}")
        mapping[field] = (*mapping.get(field, ()), column)
    return mapping


def _check_fields(mapping: dict[str, tuple[str, ...]], rules: Rules) -> None:
    known = {RECORD_ID, *matching.PERSON_FIELDS, *matching.IDENTIFIER_FIELDS, *id_fields(rules)}
    unknown = sorted(set(mapping) - known)
    if unknown:
        raise LinkError(f"unknown field {', '.join(map(repr, unknown))}; fields: {', '.join(sorted(known))}")
    if len(mapping.get(RECORD_ID, ())) > 1:
        raise LinkError("record_id takes one column")
    if not set(mapping) - {RECORD_ID}:
        raise LinkError("map at least one column to a person field or an identifier")


def read(conn: duckdb.DuckDBPyConnection, path: Path, into: str = "_link_file") -> list[str]:
    """Load the file into TEMP `into` (csv as text, so ids keep their leading zeros); returns its columns."""
    if not path.is_file():
        raise LinkError(f"no file at {path}")
    reader = "read_parquet($path)" if path.suffix.lower() == ".parquet" else "read_csv($path, all_varchar = true)"
    try:
        conn.execute(f"CREATE OR REPLACE TEMP TABLE {into} AS SELECT * FROM {reader}", {"path": str(path)})
    except duckdb.Error as exc:
        raise LinkError(f"cannot read {path} as {'parquet' if 'parquet' in reader else 'csv'}: {exc}") from None
    if not conn.execute(f"SELECT count(*) FROM {into}").fetchone()[0]:
        raise LinkError(f"{path} holds no records")
    return [row[0] for row in conn.execute(f"DESCRIBE {into}").fetchall()]


def _text(column: str) -> str:
    quoted = column.replace('"', '""')
    return f"""nullif(trim("{quoted}"::VARCHAR), '')"""


def _field_sql(field: str, columns: tuple[str, ...]) -> str:
    joined = _text(columns[0]) if len(columns) == 1 else f"nullif(concat_ws(' ', {', '.join(map(_text, columns))}), '')"
    if field == "date_of_birth":
        parsed = ", ".join(f"try_strptime({joined}, '{f}')::DATE" for f in DATE_FORMATS)
        return f"coalesce(try_cast({joined} AS DATE), {parsed})"
    return joined


def load(conn: duckdb.DuckDBPyConnection, path: Path, mapping: dict[str, tuple[str, ...]], rules: Rules) -> int:
    """TEMP _link_input: one row per record with record_id, the mapped fields and a time standing for the row's
    place in the file (the older link first where a limit must choose); returns the record count."""
    _check_fields(mapping, rules)
    columns = read(conn, path)
    missing = sorted({c for cs in mapping.values() for c in cs} - set(columns))
    if missing:
        raise LinkError(f"column {', '.join(map(repr, missing))} not in {path.name}; its columns: {', '.join(columns)}")
    record_id = _text(mapping[RECORD_ID][0]) if RECORD_ID in mapping else "row_number() OVER ()::VARCHAR"
    selects = [f'{_field_sql(field, cs)} AS "{field}"' for field, cs in mapping.items() if field != RECORD_ID]
    conn.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE {INPUT_TABLE} AS
        SELECT *, TIMESTAMPTZ '2000-01-01' + to_seconds(row_number() OVER ()) AS observed_at,
               observed_at AS source_updated_at
        FROM (SELECT {record_id} AS {RECORD_ID}, {', '.join(selects)} FROM _link_file)
        """
    )
    duplicated, blank = conn.execute(
        f"SELECT count(*) - count(DISTINCT {RECORD_ID}), count(*) - count({RECORD_ID}) FROM {INPUT_TABLE}"
    ).fetchone()
    if duplicated or blank:
        raise LinkError(f"record_id column {mapping[RECORD_ID][0]!r}: {duplicated} repeated, {blank} blank values")
    return conn.execute(f"SELECT count(*) FROM {INPUT_TABLE}").fetchone()[0]


def file_rules(rules: Rules, mapping: dict[str, tuple[str, ...]]) -> Rules:
    """The rules with the file as their one source: its records as a record type, its identifier columns."""
    ids = [field for field in mapping if field in id_fields(rules)]
    source = IdentifierSource(
        stream=STREAM, table=INPUT_TABLE, key=RECORD_ID, observed_at="observed_at", record_type=RECORD_TYPE,
        identifiers={field: f'"{field}"' for field in ids},
        phone_region="country" if "country" in mapping and "phone" in ids else None,
        person={field: f'"{field}"' for field in mapping if field in matching.PERSON_FIELDS},
    )
    types = {**rules.types, RECORD_TYPE: IdentifierType(RECORD_TYPE, 0, record_of=STREAM)}
    return dataclasses.replace(rules, types=types, sources=(source,), never_link=())


def _linked(conn: duckdb.DuckDBPyConnection, built: resolution.Partition) -> Linked:
    """Clusters from the partition's record nodes; pairs from its probabilistic links (`merge` where the graph took
    the link, `review` where a rule refused it) and its review pairs (under `merge_at`, or the pair of a chain the
    check refused). A pair to review whose records end in one cluster all the same is left out, as the pipeline
    leaves it out of identity.match_review."""
    records = resolution.record_nodes(conn, STREAM)
    labels = built.labels[records["node"]]
    accepted = built.accepted[len(built.edges) - len(built.links):]

    def named(pairs: pd.DataFrame, decision: np.ndarray | str) -> pd.DataFrame:
        prefix = STREAM + ":"
        return pairs.assign(record_id_l=pairs["unique_id_l"].str.removeprefix(prefix),
                            record_id_r=pairs["unique_id_r"].str.removeprefix(prefix), decision=decision)

    pairs = pd.concat([named(built.links, np.where(accepted, "merge", "review")), named(built.review, "review")],
                      ignore_index=True)[list(PAIR_COLUMNS)].drop_duplicates(["record_id_l", "record_id_r"])
    label_of = dict(zip(records["record_id"].tolist(), labels.tolist(), strict=True))
    pairs = pairs[(pairs["decision"] == "merge")
                  | (pairs["record_id_l"].map(label_of) != pairs["record_id_r"].map(label_of))]
    return Linked(
        clusters=pd.DataFrame({"record_id": records["record_id"], "cluster_id": pd.factorize(labels)[0] + 1}),
        pairs=pairs.sort_values(["probability", "record_id_l", "record_id_r"], ascending=[False, True, True],
                                ignore_index=True),
        records=len(labels),
    )


def run(conn: duckdb.DuckDBPyConnection, path: Path, mapping: dict[str, tuple[str, ...]], output: Path | None,
        train: bool = False, model: Path | None = None, output_format: str = "csv",
        rules: Rules | None = None) -> Linked:
    """Link the person file at `path`; write clusters and pairs into `output` when given.

    With `train`, the model is trained on the file and saved to `model` (default: the output folder's
    model.json); without, `model` (default: the shipped model) scores."""
    base = rules or load_rules()
    records = load(conn, path, mapping, base)
    linked_rules = file_rules(base, mapping)
    conn.execute("CREATE SCHEMA IF NOT EXISTS identity")
    identifiers.build(conn, linked_rules)
    if train:
        # Training reads the records' fields, never their clusters, so it comes first, on every record as its own
        # cluster, as `cdp identity train` does on the warehouse; the partition then scores with the trained model.
        model = model or (output or path.parent) / "model.json"
        model.parent.mkdir(parents=True, exist_ok=True)
        matching.train_from_warehouse(conn, model, {"source": "file", "file": path.name, "records": records,
                                                    "mapped": sorted(mapping), "date": dt.date.today().isoformat()},
                                      linked_rules)
    result = _linked(conn, resolution.partition(conn, linked_rules, model_path=model or matching.MODEL_PATH))
    if output is not None:
        write(result, output, output_format)
    return result


def write(linked: Linked, output: Path, output_format: str) -> None:
    output.mkdir(parents=True, exist_ok=True)
    for name, frame in (("clusters", linked.clusters), ("pairs", linked.pairs)):
        target = output / f"{name}.{output_format}"
        if output_format == "parquet":
            frame.to_parquet(target, index=False)
        else:
            frame.to_csv(target, index=False)

"""The identity graph updated only where it changed: the region this run's changes reach is resolved again, alone,
and its rows written in place of the region's old ones (resolution.resolve); every other profile keeps its rows.

What changed: each record's fingerprint (its identifiers with their times, and a person record's mapped person
fields) against the one the graph last read (identity.graph_inputs), taken again only for the records
identity.identifiers logged as rewritten since (the change log, cdp_assets/changes.py) and for every record of a
stream whose person fields read a staging table that changed (CANDIDATES_SQL), or for every record when the log
cannot say (a whole rewrite of the identifiers, an erasure, a first or whole run). A run with no graph before it, or
whose identity code, rules, matching model or never-link table differ from the last run's (identity.graph_state),
resolves the whole graph instead, as does the nightly rebase.

The region: the profiles holding a changed record, closed over what is judged together (CLOSURE): every profile
holding a value a record of the region (or a changed one) carries now, or a shared value the region held (a shared
value is judged on all its holders, and its events go to the first), the other end of a refused link or a review
pair (the union-find and the chain check weigh both ends together), and the profile of any record Splink scores at
`review_at` or above with a record of the region read again or masked at its last resolution (identity.masked_records),
on the kept basis (basis.py) and with no value masked (a mask only lowers a score, so this finds every pair the
region's own run could link or send to review; any other record of the region scores as it did then, and the graph
kept that outcome: REGION_SIDE_SQL), until nothing more joins. That scoring reads the records a blocking rule pairs
with the region's, in the normal form the graph keeps (identity.match_records: each person record as the matcher
reads it, made again only for the changed records).
Resolved alone, the region so meets only what a whole rebuild would have it meet (tests/test_identity.py compares
the two); the nightly run resolves the whole graph again.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import duckdb

from cdp_assets import changes
from cdp_assets.identity import basis, comparisons, identifiers, matching
from cdp_assets.identity.rules import Rules
from cdp_assets.warehouse_access import has_tables

INPUTS = "identity.graph_inputs"  # (stream, record_id, fingerprint): each record as the graph last read it
FOLLOWER = INPUTS  # its position in the change log: the changes of identifiers (and `person_reads`) taken in
STATE = "identity.graph_state"  # one row: the fingerprint of what resolved the graph last
NORMAL_FORM = "identity.match_records"  # each person record in the matcher's normal form, as the graph last read it
MASKED = "identity.masked_records"  # (stream, record_id): the person records whose last resolution masked a value
REGION = "_region_profiles"  # TEMP (profile_id): last run's profiles the region holds
RECORDS = "_region_records"  # TEMP (stream, record_id): the records the region resolves
IDENTITY_CODE = Path(__file__).parent


@dataclass(frozen=True)
class Inputs:
    """Where this run's fingerprints stand in the change log; whether the graph kept was resolved by this run's code,
    rules and model (`follows`), so that a region can be resolved; and whether the fingerprints are the candidates'
    alone."""

    position: changes.Position
    follows: bool
    candidates: bool


CANDIDATES = "_input_candidates"  # TEMP (stream, record_id): the records whose fingerprints this run takes again
# As a follower of the change log (cdp_assets/changes.py), a record can have another fingerprint only when
# identity.identifiers rewrote it (it follows every staging rewrite of the streams carrying identifiers, person streams
# included) or when a staging table its person fields read besides its own changed (`person_reads`: then every
# record of its stream is taken again).
CANDIDATES_SQL = f"""
CREATE OR REPLACE TEMP TABLE {CANDIDATES} AS
SELECT split_part(key, ':', 1) AS stream, substr(key, strpos(key, ':') + 1) AS record_id
FROM {changes.FOLLOWED} WHERE producer = $producer
UNION
SELECT stream, record_id FROM {INPUTS} WHERE list_contains($streams::VARCHAR[], stream)
"""
# Each record's fingerprint: its identifiers with their first times, and a person record's mapped fields; a sum of
# row hashes, which no order of the rows changes. Of every record, or of the candidates (`{within}`).
INPUTS_SQL = """
CREATE OR REPLACE TEMP TABLE _graph_inputs AS
WITH identifiers AS (
    SELECT stream, record_id, sum(hash(id_type, value, observed_at)::HUGEINT) AS h
    FROM identity.identifiers {within} GROUP BY stream, record_id
), person AS (
    SELECT stream, record_id, sum(hash(s)::HUGEINT) AS h FROM _person_source s GROUP BY stream, record_id
)
SELECT stream, record_id, hash(i.h, p.h) AS fingerprint FROM identifiers i LEFT JOIN person p USING (stream, record_id)
"""
WITHIN_CANDIDATES = f"SEMI JOIN {CANDIDATES} USING (stream, record_id)"
CHANGED_SQL = f"""
CREATE OR REPLACE TEMP TABLE _changed AS
SELECT coalesce(n.stream, o.stream) AS stream, coalesce(n.record_id, o.record_id) AS record_id
FROM _graph_inputs n FULL JOIN (FROM {INPUTS} {{within}}) o USING (stream, record_id)
WHERE n.fingerprint IS DISTINCT FROM o.fingerprint
"""
# The profiles holding a changed record, as last run placed it.
SEED_SQL = f"""
CREATE OR REPLACE TEMP TABLE {REGION} AS
SELECT DISTINCT profile_id FROM identity.record_profiles JOIN _changed USING (stream, record_id)
"""
# Each step: the profiles it adds to the region, from the region as it stands.
CLOSURE = {
    "values": f"""
        SELECT p.profile_id
        FROM (SELECT stream, record_id FROM identity.record_profiles WHERE profile_id IN (FROM {REGION})
              UNION SELECT stream, record_id FROM _changed) r
        JOIN identity.identifiers i USING (stream, record_id)
        JOIN identity.identifier_profiles p USING (id_type, value)""",
    "shared values": f"""
        SELECT o.profile_id FROM identity.identifier_profiles s
        JOIN {REGION} USING (profile_id)
        JOIN identity.identifier_profiles o ON o.id_type = s.id_type AND o.value = s.value
        WHERE s.shared AND o.shared""",
    "refused links": f"""
        SELECT CASE WHEN profile_a IN (FROM {REGION}) THEN profile_b ELSE profile_a END
        FROM identity.refused_links
        WHERE profile_a IN (FROM {REGION}) OR profile_b IN (FROM {REGION})""",
    "review pairs": f"""
        SELECT CASE WHEN profile_l IN (FROM {REGION}) THEN profile_r ELSE profile_l END
        FROM identity.match_review
        WHERE profile_l IN (FROM {REGION}) OR profile_r IN (FROM {REGION})""",
}
REGION_RECORDS_SQL = f"""
CREATE OR REPLACE TEMP TABLE {RECORDS} AS
SELECT stream, record_id FROM identity.record_profiles WHERE profile_id IN (FROM {REGION})
UNION
SELECT stream, record_id FROM _changed SEMI JOIN _graph_inputs USING (stream, record_id)
"""
# The person records this run read again in the matcher's normal form (every one in a whole run, the changed ones
# otherwise; match_records.sql gives their ids only within `unique_id`), and every person record's as this run reads
# it: the kept form, with the changed records' read again.
READ_NORMAL_FORM_SQL = """
CREATE OR REPLACE TEMP TABLE _normal_form_read AS
SELECT split_part(unique_id, ':', 1) AS stream, substr(unique_id, strpos(unique_id, ':') + 1) AS record_id,
       * EXCLUDE (cluster_id)
FROM _match_records
"""
NORMAL_FORM_SQL = f"""
CREATE OR REPLACE TEMP VIEW _normal_form AS
SELECT * FROM {NORMAL_FORM} ANTI JOIN _changed USING (stream, record_id)
UNION ALL BY NAME SELECT * FROM _normal_form_read
"""
# The matcher's records for the partners' scoring: the region's it scores in one cluster, and in another every record a
# blocking rule pairs with one of them (either way round), the only pairs across the two Splink can score.
# Of the region's records, only those read again (changed or new) and those the last resolution masked are scored. Any
# other scores with a record outside the region as it did at its last resolution, on the same normal forms, basis
# and prior, with no value masked then; and no more now, as the outside record's masks are those it had (a value's
# verdict changes only with a holder in the region, and then every holder is) and a mask only lowers a score. So a
# pair of theirs at `review_at` or above was one then, and the graph kept its outcome: one profile, a review pair
# or a refused link, which the closure has already followed.
# Each round scores only the region's records new since the last: a record's partners do not change within a run
# (the scoring is unmasked and on fixed normal forms), and those of the records scored before are in the region.
PARTNERED = "_partnered"  # TEMP (stream, record_id): the region's records whose partners this run scored
REGION_SIDE_SQL = f"""
CREATE OR REPLACE TEMP TABLE _region_side AS
SELECT * FROM _normal_form SEMI JOIN {RECORDS} USING (stream, record_id)
SEMI JOIN (SELECT stream, record_id FROM _normal_form_read UNION ALL SELECT stream, record_id FROM {MASKED}) s
    USING (stream, record_id)
ANTI JOIN {PARTNERED} USING (stream, record_id)
"""
BLOCKED_SQL = """
SELECT r.unique_id FROM _region_side l JOIN _normal_form r ON {rule}
UNION SELECT l.unique_id FROM _normal_form l JOIN _region_side r ON {rule}"""
SIDES_SQL = f"""
CREATE OR REPLACE TEMP TABLE _match_records AS
SELECT * EXCLUDE (stream, record_id), 0 AS cluster_id FROM _region_side
UNION ALL
SELECT * EXCLUDE (stream, record_id), 1 FROM _normal_form
WHERE unique_id IN ({{blocked}}) AND (stream, record_id) NOT IN (SELECT stream, record_id FROM {RECORDS})
"""
PARTNERS_SQL = f"""
INSERT INTO {REGION}
SELECT DISTINCT p.profile_id
FROM (SELECT unique_id_l AS unique_id FROM _partner_pairs UNION SELECT unique_id_r FROM _partner_pairs) s
JOIN identity.record_profiles p ON p.stream || ':' || p.record_id = s.unique_id
WHERE p.profile_id NOT IN (FROM {REGION})
"""


def fingerprint(conn: duckdb.DuckDBPyConnection, model_path: Path) -> str:
    """What resolves the graph besides its records: the identity code and rules, the model, the never-link table and
    the versions of Splink and DuckDB that score and join. Taken once, as a run starts, so that a file changed while
    it runs marks the graph for a whole run next time instead of vouching for it."""
    never_link = repr(sorted(conn.execute("SELECT a, b FROM identity.never_link").fetchall(), key=repr))
    return changes.code_fingerprint([IDENTITY_CODE, model_path], f"splink {version('splink')}",
                                    f"duckdb {duckdb.__version__}", never_link)


def region(conn: duckdb.DuckDBPyConnection, rules: Rules, model_path: Path, inputs: Inputs) -> int | None:
    """The region of this run's changes (against TEMP `_graph_inputs`, `inputs`): TEMP `_region_profiles` and
    `_region_records`; returns the number of last run's profiles in it, or None when the whole graph is to be
    resolved (the graph kept was not resolved by this run's code, rules and model: `Inputs.follows`)."""
    if not inputs.follows:
        return None
    conn.execute(CHANGED_SQL.format(within=WITHIN_CANDIDATES if inputs.candidates else ""))
    _read_normal_form(conn, rules)
    conn.execute(SEED_SQL)
    conn.execute(f"CREATE OR REPLACE TEMP TABLE {PARTNERED} (stream VARCHAR, record_id VARCHAR)")
    if not _count(conn, "_changed"):
        conn.execute(REGION_RECORDS_SQL)
        return 0
    while True:  # each round adds profiles or ends it, and there are only so many
        close(conn)
        conn.execute(REGION_RECORDS_SQL)
        before = _count(conn, REGION)
        _partners(conn, rules, model_path)
        if _count(conn, REGION) == before:
            return before


def follows(conn: duckdb.DuckDBPyConnection, model_path: Path, state: str) -> bool:
    """Whether a run can resolve only where its changes reach: a graph was kept, with its inputs, normal form and
    basis, by the code, rules and model of this run's `state` (its `fingerprint`)."""
    tables = (STATE, INPUTS, NORMAL_FORM, MASKED)
    if not has_tables(conn, "identity", *(t.split(".")[1] for t in tables)) or not basis.load(conn, model_path):
        return False
    return conn.execute(f"SELECT fingerprint FROM {STATE}").fetchall() == [(state,)]


def region_of(conn: duckdb.DuckDBPyConnection, changed: str) -> int:
    """The region of the records the query `changed` selects (stream, record_id), as a run that changed them would
    find it: TEMP `_region_profiles`; returns the rounds its closure took (what the benchmark's reach measures)."""
    conn.execute(f"CREATE OR REPLACE TEMP TABLE _changed AS {changed}")
    conn.execute(SEED_SQL)
    return close(conn)


def close(conn: duckdb.DuckDBPyConnection) -> int:
    """Add to `_region_profiles` every profile its CLOSURE steps join (from it and TEMP `_changed(stream,
    record_id)`), until none does; returns the rounds taken."""
    rounds = 0
    while True:
        rounds += 1
        before = _count(conn, REGION)
        for step in CLOSURE.values():
            conn.execute(f"INSERT INTO {REGION} SELECT DISTINCT p FROM ({step}) joined(p) "
                         f"WHERE p IS NOT NULL AND p NOT IN (FROM {REGION})")
        if _count(conn, REGION) == before:
            return rounds


def keep(conn: duckdb.DuckDBPyConnection, state: str, whole: bool, inputs: Inputs) -> None:
    """This run's inputs and `fingerprint` (`state`) as the graph's last, in the caller's transaction: the inputs
    rewritten `whole` (with every person record's normal form, TEMP `_normal_form_read` of `keep_normal_form`),
    or only the rows of the records whose fingerprint changed (TEMP `_changed`, `region`); and the change log's
    position they were taken at."""
    if whole and inputs.candidates:
        raise RuntimeError("a whole graph keeps every record's fingerprint, not the candidates' alone")
    if whole:
        conn.execute(f"CREATE OR REPLACE TABLE {INPUTS} AS SELECT * FROM _graph_inputs")
        conn.execute(f"CREATE OR REPLACE TABLE {NORMAL_FORM} AS SELECT * FROM _normal_form_read")
    else:
        for table, rows in ((INPUTS, "_graph_inputs"), (NORMAL_FORM, "_normal_form_read")):
            conn.execute(f"DELETE FROM {table} WHERE (stream, record_id) IN (SELECT stream, record_id FROM _changed)")
            conn.execute(f"INSERT INTO {table} BY NAME SELECT * FROM {rows}"
                         " WHERE (stream, record_id) IN (SELECT stream, record_id FROM _changed)")
    conn.execute(f"CREATE OR REPLACE TABLE {STATE} AS SELECT $fingerprint AS fingerprint", {"fingerprint": state})
    changes.keep(conn, inputs.position)


def inputs(conn: duckdb.DuckDBPyConnection, rules: Rules, model_path: Path, state: str, whole: bool) -> Inputs:
    """TEMP `_graph_inputs`: the fingerprint of each record as this run reads it: of every record when the graph is
    to be resolved `whole` or the log cannot say which records changed, else of the candidates alone."""
    read_by = rules.person_read_entities
    position = changes.follow(conn, FOLLOWER, [identifiers.PRODUCER, *read_by], state, (INPUTS,))
    kept = follows(conn, model_path, state)
    candidates = not whole and kept and position.whole is None
    if candidates:
        changed = conn.execute(f"SELECT DISTINCT producer FROM {changes.FOLLOWED} "
                               "WHERE list_contains($read::VARCHAR[], producer)", {"read": list(read_by)}).fetchall()
        conn.execute(CANDIDATES_SQL, {"producer": identifiers.PRODUCER,
                                      "streams": sorted({s for (entity,) in changed for s in read_by[entity]})})
    source_sql, params = matching.person_source_sql(rules, CANDIDATES if candidates else None)
    conn.execute(source_sql, params)
    conn.execute(INPUTS_SQL.format(within=WITHIN_CANDIDATES if candidates else ""))
    conn.execute(f"DROP TABLE {matching.SOURCE_TABLE}")
    return Inputs(position, kept, candidates)


def keep_normal_form(conn: duckdb.DuckDBPyConnection) -> None:
    """Every person record's normal form, from the `_match_records` a whole graph starts from (before any value is
    masked), for `keep` to write as the next runs' regions' partners."""
    conn.execute(READ_NORMAL_FORM_SQL)


def _read_normal_form(conn: duckdb.DuckDBPyConnection, rules: Rules) -> None:
    """TEMP `_normal_form_read`: the changed person records (TEMP `_changed`) that this run reads, in the matcher's
    normal form; and `_normal_form`, every person record's."""
    if _count(conn, "_changed"):
        conn.execute("CREATE OR REPLACE TEMP TABLE _record_clusters AS SELECT stream, record_id, 0 AS cluster_id "
                     "FROM _changed SEMI JOIN _graph_inputs USING (stream, record_id)")
        matching.build_records(conn, rules)
        conn.execute(READ_NORMAL_FORM_SQL)
    else:
        conn.execute(f"CREATE OR REPLACE TEMP TABLE _normal_form_read AS FROM {NORMAL_FORM} LIMIT 0")
    conn.execute(NORMAL_FORM_SQL)


def _partners(conn: duckdb.DuckDBPyConnection, rules: Rules, model_path: Path) -> None:
    """Add the profiles of the records Splink scores at `review_at` or above with a record of the region read again
    or masked at its last resolution (those new to it since the last round): REGION_SIDE_SQL."""
    conn.execute(REGION_SIDE_SQL)
    if not _count(conn, "_region_side"):
        return
    conn.execute(f"INSERT INTO {PARTNERED} SELECT stream, record_id FROM _region_side")
    blocking = comparisons.build(conn, rules.matcher, "_normal_form").blocking
    blocked = " UNION ".join(BLOCKED_SQL.format(rule=rule.get_blocking_rule("duckdb").blocking_rule_sql)
                             for rule in blocking) or "SELECT NULL"
    conn.execute(SIDES_SQL.format(blocked=blocked))
    conn.register("_partner_pairs", matching.score(conn, rules.review_at, model_path))
    try:
        conn.execute(PARTNERS_SQL)
    finally:
        conn.unregister("_partner_pairs")


def _count(conn: duckdb.DuckDBPyConnection, table: str) -> int:
    return conn.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0]

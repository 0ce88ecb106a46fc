"""Identity resolution, end to end: graph, probabilistic links, stable ids, and the tables explain reads.

Deterministic edges come from shared identifiers. A component whose person records are joined
through identifiers of two or more types passes the chain check (graph.py): Splink scores the
pairs inside it, and a link whose ends disagree is refused. Splink then scores records left in
different components, and links above the merge threshold join the graph as the weakest
edges, subject to the same limits and check. Everything this run writes lands in one transaction.

The graph is held as numpy arrays, one item per node (`_nodes` idx) or link (`_edges` edge, then Splink's links):
what the union-find and the stable ids read. What a node or link says (its type and value, the records behind it)
stays in DuckDB's temp tables, read back by number for the few the run describes, and joined there when it writes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from cdp_assets import changes
from cdp_assets.identity import basis, graph, increment, matching, profile_ids, shared
from cdp_assets.identity.rules import Rules

EDGES_SQL = (Path(__file__).parent / "sql" / "graph_edges.sql").read_text()
WRITE_SQL = (Path(__file__).parent / "sql" / "write_graph.sql").read_text()
NEVER_LINK_TABLE = "identity.never_link"


@dataclass(frozen=True)
class Outcome:
    profiles: int
    resolved: int  # profiles of last run this run resolved again: all of them, unless it resolved a region alone
    merged: int
    split: int
    refused: int
    probabilistic_links: int
    review_pairs: int
    shared_values: int
    largest_profile_records: int


def ensure_tables(conn: duckdb.DuckDBPyConnection) -> None:
    """The tables that carry state from run to run."""
    conn.execute(
        f"""
        CREATE SCHEMA IF NOT EXISTS identity;
        CREATE TABLE IF NOT EXISTS {NEVER_LINK_TABLE} (
            a VARCHAR NOT NULL, b VARCHAR, reason VARCHAR, added_by VARCHAR, added_at TIMESTAMPTZ DEFAULT now());
        CREATE TABLE IF NOT EXISTS identity.profile_registry (
            profile_id VARCHAR PRIMARY KEY, anchor_type VARCHAR, anchor_value VARCHAR, created_at TIMESTAMPTZ,
            created_run VARCHAR, merged_into VARCHAR, retired_run VARCHAR);
        CREATE TABLE IF NOT EXISTS identity.merge_log (
            run_id VARCHAR, logged_at TIMESTAMPTZ, action VARCHAR, profile_id VARCHAR, other_profile_id VARCHAR,
            cause VARCHAR);
        CREATE TABLE IF NOT EXISTS identity.identifier_profiles (
            id_type VARCHAR, value VARCHAR, profile_id VARCHAR, first_seen TIMESTAMPTZ, shared BOOLEAN);
        ALTER TABLE identity.identifier_profiles ADD COLUMN IF NOT EXISTS shared BOOLEAN DEFAULT false;
        """
    )


def record_nodes(conn: duckdb.DuckDBPyConnection, stream: str) -> dict[str, np.ndarray]:
    """The last partition's records of `stream` and their nodes (`record_id`, `node`), in node order."""
    return conn.execute("SELECT record_id, node FROM _record_index WHERE stream = $stream ORDER BY node",
                        {"stream": stream}).fetchnumpy()


def _never_pairs(conn: duckdb.DuckDBPyConnection, rules: Rules) -> tuple[list[tuple[int, int]], list[int]]:
    """Never-link rules (from the rules file and the table) as node pairs, and single values to isolate."""
    rows = [*rules.never_link, *conn.execute(f"SELECT a, b FROM {NEVER_LINK_TABLE}").fetchall()]
    if not rows:
        return [], []
    sides = pd.DataFrame(rows, columns=["a", "b"])
    conn.register("_never_view", sides)
    resolved = conn.execute(
        """
        SELECT na.idx, nb.idx, v.b IS NULL
        FROM _never_view v
        JOIN _nodes na ON na.id_type || ':' || na.value = v.a
        LEFT JOIN _nodes nb ON nb.id_type || ':' || nb.value = v.b
        WHERE v.b IS NULL OR nb.idx IS NOT NULL
        """
    ).fetchall()
    conn.unregister("_never_view")
    return [(a, b) for a, b, single in resolved if not single], [a for a, _, single in resolved if single]


# Person fields that say who someone is. A pair of records with none of them on both sides has nothing to
# disagree on (place and employer are shared by many people and change), so it never refuses a chain.
IDENTIFYING_FIELDS = ("first_name", "last_name", "full_name", "date_of_birth", "street_address", "email", "phone")
# The graph's nodes and links are held as arrays in the order of TEMP `_nodes` (idx) and `_edges` (edge); their
# types, values and records stay in the warehouse, read back by number where a few are needed.
NODES_SQL = """
SELECT t.code, coalesce(epoch_ns(n.first_seen), $never_seen) AS first_seen, n.priority, t.stream IS NOT NULL AS person
FROM _nodes n JOIN _types t USING (id_type) ORDER BY n.idx"""
EDGES_ARRAYS_SQL = """
SELECT a, b, priority, coalesce(epoch_ns(first_seen), $never_seen) AS first_seen FROM _edges ORDER BY edge"""
# Each person record's node, by the matcher's unique_id.
RECORD_INDEX_SQL = """
CREATE OR REPLACE TEMP TABLE _record_index AS
SELECT t.stream || ':' || n.value AS unique_id, t.stream, n.value AS record_id, n.idx AS node
FROM _nodes n JOIN _types t USING (id_type) WHERE t.stream IS NOT NULL"""
# Each node's profile last run, as an index into the ids of those profiles (in their order).
PREVIOUS_SQL = """
CREATE OR REPLACE TEMP TABLE _previous AS
SELECT n.idx, p.profile_id FROM _nodes n JOIN identity.identifier_profiles p USING (id_type, value)
WHERE NOT p.shared"""
ANCHORS_SQL = """
SELECT r.profile_id, n.idx FROM identity.profile_registry r
JOIN _nodes n ON n.id_type = r.anchor_type AND n.value = r.anchor_value"""


@dataclass(frozen=True)
class Nodes:
    """The graph's nodes, one item of each array per node (by idx of TEMP `_nodes`)."""

    types: np.ndarray  # code: the index of its type in `type_names`
    first_seen: np.ndarray  # int64 nanoseconds (graph.NEVER_SEEN for none)
    priority: np.ndarray
    person: np.ndarray  # bool: a person record's own id
    type_names: list[str]

    def __len__(self) -> int:
        return len(self.types)


def _load_graph(conn: duckdb.DuckDBPyConnection, rules: Rules) -> tuple[Nodes, graph.Edges]:
    """TEMP `_types`, `_nodes`, `_record_nodes`, `_edges` (graph_edges.sql), and the nodes and links as arrays."""
    type_names = sorted(rules.types)
    types = pd.DataFrame({
        "id_type": type_names, "code": np.arange(len(type_names)),
        "priority": [rules.types[name].priority for name in type_names],
        "stream": pd.Series([rules.types[name].record_of or None for name in type_names], dtype=object),
    })
    conn.register("_types_view", types)
    conn.execute("CREATE OR REPLACE TEMP TABLE _types AS SELECT * FROM _types_view")
    conn.unregister("_types_view")
    conn.execute(EDGES_SQL, {"record_streams": rules.person_streams})
    never = {"never_seen": graph.NEVER_SEEN}
    found = conn.execute(NODES_SQL, never).fetchnumpy()
    nodes = Nodes(types=found["code"], first_seen=found["first_seen"], priority=found["priority"],
                  person=found["person"].astype(bool), type_names=type_names)
    links = conn.execute(EDGES_ARRAYS_SQL, never).fetchnumpy()
    edges = graph.Edges(a=links["a"], b=links["b"], priority=links["priority"], first_seen=links["first_seen"],
                        probabilistic=np.zeros(len(links["a"]), dtype=bool))
    conn.execute(RECORD_INDEX_SQL)
    return nodes, edges


def _match_records(conn: duckdb.DuckDBPyConnection, rules: Rules, nodes: Nodes, clusters: np.ndarray) -> None:
    """Write `_match_records` for every person record, in cluster `clusters[node]`."""
    _register_clusters(conn, nodes, clusters)
    conn.execute("CREATE OR REPLACE TEMP TABLE _record_clusters AS SELECT x.stream, x.record_id, v.cluster_id "
                 "FROM _clusters_view v JOIN _record_index x USING (node)")
    conn.unregister("_clusters_view")
    matching.build_records(conn, rules)


def _register_clusters(conn: duckdb.DuckDBPyConnection, nodes: Nodes, clusters: np.ndarray) -> None:
    """Register `_clusters_view(node, cluster_id)`: each person record node in cluster `clusters[node]`."""
    records = np.flatnonzero(nodes.person)
    conn.register("_clusters_view", pd.DataFrame({"node": records, "cluster_id": clusters[records]}))


def _recluster(conn: duckdb.DuckDBPyConnection, nodes: Nodes, labels: np.ndarray) -> None:
    """Move the records of `_match_records` to the clusters of `labels`."""
    _register_clusters(conn, nodes, labels)
    conn.execute("UPDATE _match_records m SET cluster_id = v.cluster_id FROM _clusters_view v "
                 "JOIN _record_index x USING (node) WHERE m.unique_id = x.unique_id")
    conn.unregister("_clusters_view")


def _with_nodes(conn: duckdb.DuckDBPyConnection, scores: pd.DataFrame) -> pd.DataFrame:
    """`scores` with the nodes of its records, a and b, in its order."""
    conn.register("_scores_view", scores)
    try:
        return conn.execute(
            "SELECT s.*, l.node AS a, r.node AS b FROM _scores_view s "
            "JOIN _record_index l ON l.unique_id = s.unique_id_l JOIN _record_index r ON r.unique_id = s.unique_id_r "
            "ORDER BY s.probability DESC, s.unique_id_l, s.unique_id_r"
        ).df()
    finally:
        conn.unregister("_scores_view")


def _identifying_fields(conn: duckdb.DuckDBPyConnection) -> dict[int, int]:
    """Per person record node, a bitmask of the IDENTIFYING_FIELDS `_match_records` holds for it."""
    present = {row[0] for row in conn.execute("SELECT column_name FROM (DESCRIBE _match_records)").fetchall()}
    fields = [name for name in IDENTIFYING_FIELDS if name in present]
    bits = " + ".join(f"(m.{name} IS NOT NULL)::BIGINT * {1 << i}" for i, name in enumerate(fields)) or "0"
    return dict(conn.execute(f"SELECT x.node, {bits} FROM _match_records m JOIN _record_index x USING (unique_id)"
                             ).fetchall())


def _evidence(rules: Rules, person: np.ndarray, fields: dict[int, int], scores: pd.DataFrame) -> graph.Evidence:
    """The chain check's evidence: `scores` (with node columns a, b) and each record's identifying fields."""
    low, high = np.minimum(scores["a"], scores["b"]), np.maximum(scores["a"], scores["b"])
    return graph.Evidence(
        person=person, fields=fields, merge_at=rules.merge_at, review_at=rules.review_at,
        scores=dict(zip(zip(low.tolist(), high.tolist(), strict=True), scores["probability"].tolist(), strict=True)),
    )


def _probabilistic_edges(rules: Rules, nodes: Nodes, links: pd.DataFrame) -> graph.Edges:
    """Splink's pairs at or above the merge threshold (`links`, with node columns a, b) as the graph's weakest
    edges; a probabilistic link exists once both records do."""
    a, b = links["a"].to_numpy(), links["b"].to_numpy()
    seen_a, seen_b = nodes.first_seen[a], nodes.first_seen[b]
    seen = np.where(seen_a == graph.NEVER_SEEN, seen_b,
                    np.where(seen_b == graph.NEVER_SEEN, seen_a, np.maximum(seen_a, seen_b)))
    return graph.Edges(a=a, b=b, priority=np.full(len(a), rules.types["probabilistic"].priority), first_seen=seen,
                       probabilistic=np.ones(len(a), dtype=bool))


def _names(conn: duckdb.DuckDBPyConnection, picked: np.ndarray) -> list[tuple[str, str]]:
    """The (id_type, value) of each node of `picked`, in its order."""
    conn.register("_picked_view", pd.DataFrame({"idx": picked, "position": np.arange(len(picked))}))
    try:
        return [(t, v) for t, v in conn.execute("SELECT n.id_type, n.value FROM _picked_view p JOIN _nodes n "
                                                "USING (idx) ORDER BY p.position").fetchall()]
    finally:
        conn.unregister("_picked_view")


def _describe(conn: duckdb.DuckDBPyConnection, built: Partition, positions: np.ndarray) -> list[str]:
    """Per link of `positions`: `deterministic email: hubspot_contact:101 ~ email:ann@acme.com`, or
    `probabilistic p=0.97: ...`."""
    edges = built.edges
    a, b = _names(conn, edges.a[positions]), _names(conn, edges.b[positions])
    conn.register("_picked_edges", pd.DataFrame({"edge": positions, "position": np.arange(len(positions))}))
    try:
        link_type = dict(conn.execute("SELECT p.position, e.link_type FROM _picked_edges p JOIN _edges e USING (edge)"
                                      ).fetchall())
    finally:
        conn.unregister("_picked_edges")
    deterministic = len(edges) - len(built.links)
    how = [f"deterministic {link_type[i]}" if edge < deterministic
           else f"probabilistic p={float(np.round(built.links['probability'].iat[edge - deterministic], 4))}"
           for i, edge in enumerate(positions.tolist())]
    return [f"{h}: {ta}:{va} ~ {tb}:{vb}" for h, (ta, va), (tb, vb) in zip(how, a, b, strict=True)]


def _merge_causes(conn: duckdb.DuckDBPyConnection, built: Partition, previous: np.ndarray) -> pd.Series:
    """Per component: the strongest link joining nodes that last run held apart (what merged it), or else the rule
    that refused one of its links (what split it). `previous`: per node, last run's profile (-1 for none)."""
    edges, labels = built.edges, built.labels
    a, b = edges.a, edges.b
    held = (previous[a] >= 0) & (previous[b] >= 0)
    changed = built.accepted & (previous[a] != previous[b])
    # A link between two last-run profiles explains a merge best, then a refused link (a split),
    # then a link through an identifier new this run.
    ranked = [np.flatnonzero(chosen) for chosen in (changed & held, ~built.accepted, changed & ~held)]
    position = np.concatenate([np.concatenate([chosen, chosen]) for chosen in ranked])
    rank = np.concatenate([np.full(2 * len(chosen), r) for r, chosen in enumerate(ranked)])
    label = np.concatenate([np.concatenate([labels[a[chosen]], labels[b[chosen]]]) for chosen in ranked])
    order = np.lexsort((edges.first_seen[position], edges.priority[position], rank))  # stable: ties keep their order
    _, first = np.unique(label[order], return_index=True)
    best = order[first]
    causes = _describe(conn, built, position[best])
    for i in np.flatnonzero(rank[best] == 1).tolist():
        causes[i] = f"refused ({built.refused[position[best][i]]}): {causes[i]}"
    return pd.Series(causes, index=label[best], dtype=object)


def _refused_as_shared(conn: duckdb.DuckDBPyConnection, edges: graph.Edges, refused: list[str | None],
                       never: set[int]) -> list[str | None]:
    """Links refused because they go through a shared value (not a never-link one) logged as `shared (<reason>)`."""
    reason_of = dict(conn.execute("SELECT n.idx, s.reason FROM _shared s JOIN _nodes n USING (id_type, value)"
                                  ).fetchall())
    a, b = edges.a.tolist(), edges.b.tolist()
    logged = list(refused)
    for position, rule in enumerate(refused):
        if rule is not None and a[position] not in never and b[position] not in never:
            through = reason_of.get(a[position], reason_of.get(b[position]))
            if through is not None:
                logged[position] = shared.refusal(through)
    return logged


NO_SCORES = pd.DataFrame({"unique_id_l": pd.Series(dtype=str), "unique_id_r": pd.Series(dtype=str),
                          "probability": pd.Series(dtype=float), "match_weight": pd.Series(dtype=float),
                          "a": pd.Series(dtype="int64"), "b": pd.Series(dtype="int64")})


def _score_chains(conn: duckdb.DuckDBPyConnection, rules: Rules, nodes: Nodes, labels: np.ndarray,
                  a: np.ndarray, b: np.ndarray, model_path: Path) -> tuple[np.ndarray, pd.DataFrame]:
    """For the chain check: per node, whether its component (of `labels`, linked by edges a-b) joins person records
    through identifiers of two or more types (graph.chained), and the pairs inside those components, scored; every
    other record is in a cluster of its own for that scoring."""
    in_chain = graph.chained(labels, a, b, nodes.types, nodes.person)[labels]
    if not in_chain.any():
        return in_chain, NO_SCORES
    _recluster(conn, nodes, np.where(in_chain, labels, -1 - np.arange(len(labels))))
    return in_chain, _with_nodes(conn, matching.score(conn, rules.review_at, model_path, within_clusters=True))


def _mask_chain_refused(conn: duckdb.DuckDBPyConnection, nodes: Nodes, edges: graph.Edges,
                        checked: graph.Components) -> None:
    """A value a record's link to which the chain check refused (in the checked graph, before probabilistic links)
    is carried by records that disagree on who they are: like a shared value, it is no evidence for the matcher,
    which would otherwise join again through it (a household's phone scoring a partner's record as the same
    person) what the check kept apart. A refused link between two identifiers (an event's) masks neither: the
    records carrying each may well agree."""
    person, a, b = nodes.person, edges.a, edges.b
    refused = np.array([rule == graph.CHAIN for rule in checked.refused_rule], dtype=bool) & (person[a] ^ person[b])
    conn.register("_chain_refused_nodes", pd.DataFrame({"idx": np.unique(np.where(person[a], b, a)[refused])}))
    conn.execute("CREATE OR REPLACE TEMP TABLE _chain_refused_values AS "
                 "SELECT n.id_type, n.value FROM _chain_refused_nodes JOIN _nodes n USING (idx)")
    conn.unregister("_chain_refused_nodes")
    shared.mask(conn, "_chain_refused_values")


@dataclass(frozen=True)
class Partition:
    """Who is with whom, from the identifiers alone: per node its component and whether it is a shared value; per
    link (the deterministic ones numbered as TEMP `_edges`, then Splink's `links`) its fate. TEMP `_nodes` and
    `_edges` hold what the arrays do not."""

    nodes: Nodes
    labels: np.ndarray
    shared: np.ndarray  # bool per node
    edges: graph.Edges
    links: pd.DataFrame  # the probabilistic links: unique_id_l, unique_id_r, probability, match_weight, a, b
    accepted: np.ndarray  # bool per link
    refused: list[str | None]  # per link: the rule that refused it
    review: pd.DataFrame
    rebased: bool  # whether its pairs were scored on a basis counted now (basis.py), not a kept one


def partition(conn: duckdb.DuckDBPyConnection, rules: Rules, model_path: Path = matching.MODEL_PATH,
              rebase: bool = True, within_region: bool = False) -> Partition:
    """The graph's components from identity.identifiers (`within_region`: the records of TEMP `_region_records`
    alone, increment.py) and the never-link rules, without any earlier run's ids; `model_path` is the matching model
    scoring pairs (another than the shipped one for `cdp identity link`). Pairs are scored on the kept basis unless
    `rebase` (or there is none for the model), then on one counted now."""
    ensure_tables(conn)
    # A region's identifiers are copied once (the edges and shared values read them five times); the whole
    # graph's are read where they are.
    if within_region:
        conn.execute("CREATE OR REPLACE TEMP TABLE _region_identifiers AS SELECT * FROM identity.identifiers"
                     f" SEMI JOIN {increment.RECORDS} USING (stream, record_id)")
    conn.execute("CREATE OR REPLACE TEMP VIEW _graph_identifiers AS SELECT * FROM "
                 + ("_region_identifiers" if within_region else "identity.identifiers"))
    nodes, edges = _load_graph(conn, rules)
    never, isolated = _never_pairs(conn, rules)
    # Every person record's fields for the matcher, each in a cluster of its own until the graph says more; the
    # shared values are judged on them and link nothing by themselves (shared.py).
    _match_records(conn, rules, nodes, -1 - np.arange(len(nodes)))
    if not within_region:
        increment.keep_normal_form(conn)
    shared_values = shared.shared_nodes(conn, rules)
    type_names = nodes.type_names
    protection = graph.Protection(
        node_types=nodes.types,
        limits={type_names.index(name): limit for name, limit in rules.limits.items()},
        never=never,
        isolated=frozenset(isolated) | frozenset(shared_values),
        type_priority={type_names.index(name): t.priority for name, t in rules.types.items()},
    )
    deterministic = graph.resolve(len(nodes), edges, protection, type_names)
    rebased = rebase or not basis.load(conn, model_path)
    if rebased:  # counted over the deterministic components
        _recluster(conn, nodes, deterministic.labels)
        basis.count(conn, model_path)
    a, b = edges.a, edges.b
    kept = deterministic.accepted
    chained, within = _score_chains(conn, rules, nodes, deterministic.labels, a[kept], b[kept], model_path)
    fields = _identifying_fields(conn)
    checked = graph.resolve(len(nodes), edges, protection, type_names, _evidence(rules, nodes.person, fields, within))
    _mask_chain_refused(conn, nodes, edges, checked)
    # Splink then scores records the checked graph left apart; links above merge_at join it as the weakest edges.
    _recluster(conn, nodes, checked.labels)
    across = _with_nodes(conn, matching.score(conn, rules.review_at, model_path))
    links = across[across["probability"] >= rules.merge_at].reset_index(drop=True)
    probabilistic = _probabilistic_edges(rules, nodes, links)
    # A probabilistic link can chain a component the deterministic links did not (two emails, then a probabilistic
    # link): its pairs are scored too, so the final pass checks its links on evidence, not on none. A pair scored
    # before keeps that score, and a pair the chain check scored and the graph then left apart keeps its score
    # across (the later score stands).
    kept = checked.accepted
    joined_a = np.concatenate([a[kept], probabilistic.a])
    joined_b = np.concatenate([b[kept], probabilistic.b])
    joined = graph.label(len(nodes), joined_a, joined_b)
    later = NO_SCORES
    if (graph.chained(joined, joined_a, joined_b, nodes.types, nodes.person)[joined] & ~chained).any():
        _, later = _score_chains(conn, rules, nodes, joined, joined_a, joined_b, model_path)
    scores = pd.concat([later, within, across], ignore_index=True).drop_duplicates(["unique_id_l", "unique_id_r"],
                                                                                   keep="last")
    edges = edges + probabilistic
    final = graph.resolve(len(nodes), edges, protection, type_names, _evidence(rules, nodes.person, fields, scores))
    # Borderline pairs go to review: Splink's below merge_at, and the best pair of each chain the check refused.
    chain_review = pd.DataFrame(final.review, columns=["a", "b"]).merge(
        scores.assign(a=np.minimum(scores["a"], scores["b"]), b=np.maximum(scores["a"], scores["b"])), on=["a", "b"]
    )
    review = pd.concat([across[across["probability"] < rules.merge_at], chain_review], ignore_index=True
                       ).drop_duplicates(["unique_id_l", "unique_id_r"])
    return Partition(
        nodes=nodes, labels=final.labels, shared=np.isin(np.arange(len(nodes)), shared_values), edges=edges,
        links=links, accepted=final.accepted, refused=_refused_as_shared(conn, edges, final.refused_rule,
                                                                         set(isolated)),
        review=review, rebased=rebased,
    )


def _previous(conn: duckdb.DuckDBPyConnection, node_count: int) -> tuple[np.ndarray, np.ndarray]:
    """Per node, the index of the profile it held last run (-1 for none), and those profiles' ids."""
    conn.execute(PREVIOUS_SQL)
    ids = np.array([p for (p,) in conn.execute("SELECT DISTINCT profile_id FROM _previous ORDER BY 1").fetchall()],
                   dtype=object)
    found = conn.execute("SELECT idx, dense_rank() OVER (ORDER BY profile_id) - 1 AS code FROM _previous"
                         ).fetchnumpy()
    previous = np.full(node_count, -1, dtype=np.int64)
    previous[found["idx"]] = found["code"]
    return previous, ids


def resolve(conn: duckdb.DuckDBPyConnection, rules: Rules, run_id: str, rebase: bool = False,
            incremental: bool = True) -> Outcome:
    """Resolve the identity graph from identity.identifiers and write its tables, keeping last run's profile ids:
    the region this run's changes reach alone when it can (`incremental`; increment.py), else the whole graph; with
    `rebase`, the whole graph on a basis counted now, which it keeps (basis.py)."""
    ensure_tables(conn)
    state = increment.fingerprint(conn, matching.MODEL_PATH)
    whole = rebase or not incremental
    inputs = increment.inputs(conn, rules, matching.MODEL_PATH, state, whole)
    region = None if whole else increment.region(conn, rules, matching.MODEL_PATH, inputs)
    if region is not None and not conn.execute(f"SELECT count(*) FROM {increment.RECORDS}").fetchall()[0][0]:
        # No record to resolve (none changed, or only records that are gone and were on no profile): the inputs
        # are kept all the same, so the next run does not take the same changes again.
        conn.begin()
        increment.keep(conn, state, whole=False, inputs=inputs)
        conn.commit()
        return _outcome(conn, rules, 0, None)
    built = partition(conn, rules, rebase=rebase, within_region=region is not None)
    labels = built.labels
    used = shared.attribute(conn, labels, built.shared, built.nodes.person)
    previous, previous_ids = _previous(conn, len(labels))
    anchors = conn.execute(ANCHORS_SQL).fetchnumpy()
    causes = _merge_causes(conn, built, previous)
    # A shared value founds no profile, unless records are placed in its own component (sql/record_labels.sql).
    assignment = profile_ids.assign(
        profile_ids.Graph(
            labels=labels, eligible=~built.shared | np.isin(labels, list(used)), first_seen=built.nodes.first_seen,
            priority=built.nodes.priority, previous=previous, previous_ids=previous_ids,
            anchor_of=pd.Series(anchors["idx"], index=anchors["profile_id"]), names=lambda picked: _names(conn, picked),
        ),
        conn.execute(f"SELECT {', '.join(profile_ids.REGISTRY_COLUMNS)} FROM identity.profile_registry").df(),
        causes, run_id, pd.Timestamp.now(tz="UTC"),
    )
    _write(conn, built, assignment, run_id, state, inputs, within_region=region is not None)
    return _outcome(conn, rules, len(previous_ids) if region is None else region, assignment.log)


def _outcome(conn: duckdb.DuckDBPyConnection, rules: Rules, resolved: int, log: pd.DataFrame | None) -> Outcome:
    """The graph's figures as its tables hold them, and this run's merges and splits (`log`)."""
    figures = conn.execute(
        """
        SELECT (SELECT count(DISTINCT profile_id) FROM identity.identifier_profiles),
               (SELECT count(*) FROM identity.shared_values),
               (SELECT count(*) FROM identity.refused_links),
               (SELECT count(*) FROM identity.profile_edges WHERE method = 'probabilistic'),
               (SELECT count(*) FROM identity.match_review),
               (SELECT max(n) FROM (SELECT count(*) n FROM identity.record_profiles
                                    WHERE list_contains($streams, stream) GROUP BY profile_id))
        """,
        {"streams": rules.person_streams},
    ).fetchall()[0]
    actions = log["action"].value_counts() if log is not None else pd.Series(dtype=int)
    return Outcome(
        profiles=int(figures[0]), resolved=resolved, shared_values=int(figures[1]),
        merged=int(actions.get("merged", 0)), split=int(actions.get("split", 0)), refused=int(figures[2]),
        probabilistic_links=int(figures[3]), review_pairs=int(figures[4]), largest_profile_records=int(figures[5] or 0),
    )


def over_limit(conn: duckdb.DuckDBPyConnection, rules: Rules) -> list[tuple[str, str, int]]:
    """(profile, identifier type, count) wherever a profile holds more values of a type than its limit."""
    limits = pd.DataFrame(list(rules.limits.items()), columns=["id_type", "limit_"])
    conn.register("_limits_view", limits)
    rows = conn.execute(
        """
        SELECT p.profile_id, p.id_type, count(*) AS n
        FROM identity.identifier_profiles p JOIN _limits_view l USING (id_type)
        WHERE NOT p.shared
        GROUP BY p.profile_id, p.id_type, l.limit_ HAVING count(*) > l.limit_
        """
    ).fetchall()
    conn.unregister("_limits_view")
    return rows


# The tables the graph writes (each from TEMP `_<name>_out`, write_graph.sql) and, when it resolves a region alone,
# which of their rows are the region's: those it replaces, the rows meeting any one condition (each a DELETE of its
# own: an OR across two columns would make DuckDB compare every row with every region value).
_REGION_VALUE = "EXISTS (SELECT 1 FROM _region_values v WHERE v.id_type = t.{type} AND v.value = t.{value})"
GRAPH_TABLES = {
    "shared_values": (_REGION_VALUE.format(type="id_type", value="value"),),
    "record_profiles": (f"profile_id IN (FROM {increment.REGION})",),
    "identifier_profiles": (f"profile_id IN (FROM {increment.REGION})",),
    "profile_edges": (f"profile_id IN (FROM {increment.REGION})",),
    "refused_links": (_REGION_VALUE.format(type="type_a", value="value_a"),
                      _REGION_VALUE.format(type="type_b", value="value_b")),
    "match_review": (f"profile_l IN (FROM {increment.REGION})", f"profile_r IN (FROM {increment.REGION})"),
    "masked_records": (f"(stream, record_id) IN (SELECT stream, record_id FROM {increment.RECORDS})",),
}
# The graph as a producer of the change log (changes.py): the profiles a region write retired or wrote.
PRODUCER = "identity.graph"
REGION_PROFILES_SQL = f"SELECT profile_id AS key, NULL AS before FROM {increment.REGION} UNION " \
                      "SELECT DISTINCT profile_id, NULL FROM _record_profiles_out"
# The registry as assigned (every id ever issued): only the rows that differ are written.
REGISTRY_SQL = """
CREATE OR REPLACE TEMP TABLE _registry_changed AS FROM _registry_out EXCEPT FROM identity.profile_registry;
DELETE FROM identity.profile_registry WHERE profile_id IN (SELECT profile_id FROM _registry_changed);
DELETE FROM identity.profile_registry WHERE profile_id NOT IN (SELECT profile_id FROM _registry_out);
INSERT INTO identity.profile_registry FROM _registry_changed"""
REGION_VALUES_SQL = f"""
CREATE OR REPLACE TEMP TABLE _region_values AS
SELECT id_type, value FROM identity.identifier_profiles WHERE profile_id IN (FROM {increment.REGION})
UNION SELECT id_type, value FROM _nodes"""


def _write(conn: duckdb.DuckDBPyConnection, built: Partition, assignment: profile_ids.Assignment, run_id: str,
           state: str, inputs: increment.Inputs, within_region: bool) -> None:
    """Write the graph's tables in one transaction: replaced whole, or the region's rows alone (`within_region`)."""
    deterministic = len(built.edges) - len(built.links)
    refused = [(position, rule) for position, rule in enumerate(built.refused) if rule is not None]
    frames = {
        "_node_fates": pd.DataFrame({"idx": np.arange(len(built.labels)), "label": built.labels,
                                     "shared": built.shared}),
        "_label_profiles": pd.DataFrame({"label": assignment.profile_of_label.index.to_numpy(dtype=np.int64),
                                         "profile_id": assignment.profile_of_label.to_numpy()}),
        "_edge_refusals": pd.DataFrame(refused, columns=["edge", "rule"]).astype({"edge": "int64", "rule": object}),
        "_links_out": pd.DataFrame({"edge": deterministic + np.arange(len(built.links)), "a": built.links["a"],
                                    "b": built.links["b"], "probability": built.links["probability"]}),
        "_review_out": built.review[["unique_id_l", "unique_id_r", "probability", "match_weight"]],
        "_registry_out": assignment.registry, "_log_out": assignment.log,
    }
    for name, frame in frames.items():
        conn.register(name, frame)
    try:
        for statement in WRITE_SQL.split(";\n"):
            if statement.strip():
                conn.execute(statement, {"run_id": run_id} if "$run_id" in statement else None)
        shared.masked_records(conn)
        if within_region:
            conn.execute(REGION_VALUES_SQL)
        conn.begin()
        try:
            for table, regions in GRAPH_TABLES.items():
                if within_region:
                    for region in regions:
                        conn.execute(f"DELETE FROM identity.{table} t WHERE {region}")
                    conn.execute(f"INSERT INTO identity.{table} BY NAME SELECT * FROM _{table}_out")
                else:
                    conn.execute(f"CREATE OR REPLACE TABLE identity.{table} AS SELECT * FROM _{table}_out")
            conn.execute(REGISTRY_SQL)
            conn.execute("INSERT INTO identity.merge_log SELECT * FROM _log_out")
            changes.log(conn, PRODUCER, REGION_PROFILES_SQL if within_region else None)
            if built.rebased:
                basis.keep(conn, run_id)
            increment.keep(conn, state, whole=not within_region, inputs=inputs)
        except Exception:
            conn.rollback()
            raise
        conn.commit()
    finally:
        for name in frames:
            conn.unregister(name)

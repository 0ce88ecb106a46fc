"""Identity resolution, end to end: graph, probabilistic links, stable ids, and the tables explain reads.

Deterministic edges come from shared identifiers. A component whose person records are joined
through identifiers of two or more types passes the chain check (graph.py): Splink scores the
pairs inside it, and a link whose ends disagree is refused. Splink then scores records left in
different components, and links above the merge threshold join the graph as the weakest
edges, subject to the same limits and check. Everything this run writes lands in one transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from cdp_assets.identity import basis, graph, matching, profile_ids, shared
from cdp_assets.identity.rules import Rules

EDGES_SQL = (Path(__file__).parent / "sql" / "graph_edges.sql").read_text()
WRITE_SQL = (Path(__file__).parent / "sql" / "write_graph.sql").read_text()
NEVER_LINK_TABLE = "identity.never_link"


@dataclass(frozen=True)
class Outcome:
    profiles: int
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


def _match_records(conn: duckdb.DuckDBPyConnection, rules: Rules, nodes: pd.DataFrame, clusters: np.ndarray
                   ) -> dict[str, int]:
    """Write `_match_records` for every person record, in cluster `clusters[node]`; returns each record's node."""
    streams = {t.name: t.record_of for t in rules.types.values() if t.record_of}
    records = nodes[nodes["id_type"].isin(list(streams))]
    frame = pd.DataFrame({
        "stream": records["id_type"].map(streams), "record_id": records["value"],
        "cluster_id": clusters[records["idx"].to_numpy()],
    })
    conn.register("_clusters_view", frame)
    conn.execute("CREATE OR REPLACE TEMP TABLE _record_clusters AS SELECT * FROM _clusters_view")
    conn.unregister("_clusters_view")
    matching.build_records(conn, rules)
    return dict(zip(frame["stream"] + ":" + frame["record_id"], records["idx"], strict=True))


def _recluster(conn: duckdb.DuckDBPyConnection, node_of: dict[str, int], labels: np.ndarray) -> None:
    """Move the records of `_match_records` to the clusters of `labels`."""
    frame = pd.DataFrame({"unique_id": list(node_of), "cluster_id": labels[list(node_of.values())]})
    conn.register("_clusters_view", frame)
    conn.execute("UPDATE _match_records m SET cluster_id = v.cluster_id FROM _clusters_view v "
                 "WHERE m.unique_id = v.unique_id")
    conn.unregister("_clusters_view")


def _with_nodes(scores: pd.DataFrame, node_of: dict[str, int]) -> pd.DataFrame:
    return scores.assign(a=scores["unique_id_l"].map(node_of), b=scores["unique_id_r"].map(node_of))


def _identifying_fields(conn: duckdb.DuckDBPyConnection, node_of: dict[str, int]) -> dict[int, int]:
    """Per person record node, a bitmask of the IDENTIFYING_FIELDS `_match_records` holds for it."""
    present = {row[0] for row in conn.execute("SELECT column_name FROM (DESCRIBE _match_records)").fetchall()}
    fields = [name for name in IDENTIFYING_FIELDS if name in present]
    bits = " + ".join(f"({name} IS NOT NULL)::BIGINT * {1 << i}" for i, name in enumerate(fields)) or "0"
    masks = conn.execute(f"SELECT unique_id, {bits} FROM _match_records").fetchall()
    return {node_of[unique_id]: mask for unique_id, mask in masks}


def _evidence(rules: Rules, person: np.ndarray, fields: dict[int, int], scores: pd.DataFrame) -> graph.Evidence:
    """The chain check's evidence: `scores` (with node columns a, b) and each record's identifying fields."""
    low, high = np.minimum(scores["a"], scores["b"]), np.maximum(scores["a"], scores["b"])
    return graph.Evidence(
        person=person, fields=fields, merge_at=rules.merge_at, review_at=rules.review_at,
        scores=dict(zip(zip(low.tolist(), high.tolist(), strict=True), scores["probability"].tolist(), strict=True)),
    )


def _probabilistic_edges(rules: Rules, nodes: pd.DataFrame, scores: pd.DataFrame) -> pd.DataFrame:
    """Splink's pairs at or above the merge threshold (`scores` with node columns a, b) as the graph's weakest edges."""
    merge = scores[scores["probability"] >= rules.merge_at]
    # Kept as times with their zone: to_numpy() would make a Python object of every one, and slowly.
    seen = nodes["first_seen"].array
    ends = pd.DataFrame({"a": seen.take(merge["a"].to_numpy()), "b": seen.take(merge["b"].to_numpy())})
    return pd.DataFrame({
        "a": merge["a"].to_numpy(), "b": merge["b"].to_numpy(), "link_type": "probabilistic",
        "priority": rules.types["probabilistic"].priority, "method": "probabilistic",
        "probability": merge["probability"].to_numpy(), "match_weight": merge["match_weight"].to_numpy(),
        # A probabilistic link exists once both records do.
        "first_seen": ends.max(axis=1).array,
        "records": 2, "streams": [[]] * len(merge),
    })


def _describe(edges: pd.DataFrame, nodes: pd.DataFrame) -> pd.Series:
    """`deterministic email: hubspot_contact:101 ~ email:ann@acme.com`, or `probabilistic p=0.97: ...`."""
    a, b = edges["a"].to_numpy(), edges["b"].to_numpy()
    how = edges["method"] + " " + edges["link_type"].where(
        edges["method"] == "deterministic", "p=" + edges["probability"].round(4).astype(str)
    )
    types, values = nodes["id_type"].to_numpy(), nodes["value"].to_numpy()
    return how + ": " + types[a] + ":" + values[a] + " ~ " + types[b] + ":" + values[b]


def _merge_causes(edges: pd.DataFrame, nodes: pd.DataFrame, labels: np.ndarray, previous_of: np.ndarray
                  ) -> pd.Series:
    """Per component: the strongest edge joining nodes that last run held apart (what merged it),
    or else the rule that refused one of its links (what split it)."""
    a, b = edges["a"].to_numpy(), edges["b"].to_numpy()
    held_a, held_b = previous_of[a] != "", previous_of[b] != ""
    changed = edges["accepted"].to_numpy() & (previous_of[a] != previous_of[b])
    # A link between two last-run profiles explains a merge best, then a refused link (a split),
    # then a link through an identifier new this run.
    bridges = edges[changed & held_a & held_b]
    refusals = edges[~edges["accepted"]]
    through_new = edges[changed & ~(held_a & held_b)]
    ranked = []
    for rank, chosen in enumerate((bridges, refusals, through_new)):
        chosen = chosen.assign(rank=rank, cause=_describe(chosen, nodes))
        if rank == 1:
            chosen = chosen.assign(cause="refused (" + chosen["rule"].astype(str) + "): " + chosen["cause"])
        ranked += [chosen.assign(label=labels[chosen["a"]]), chosen.assign(label=labels[chosen["b"]])]
    causes = pd.concat(ranked).sort_values(["rank", "priority", "first_seen"], kind="stable")
    return causes.drop_duplicates("label").set_index("label")["cause"]


def _refused_as_shared(conn: duckdb.DuckDBPyConnection, edges: pd.DataFrame, never: set[int]) -> pd.DataFrame:
    """Links refused because they go through a shared value (not a never-link one) logged as `shared (<reason>)`."""
    reasons = conn.execute("SELECT n.idx, s.reason FROM _shared s JOIN _nodes n USING (id_type, value)").df()
    reason_of = pd.Series(reasons["reason"].to_numpy(), index=reasons["idx"].to_numpy(), dtype="object")
    through = edges["a"].map(reason_of).fillna(edges["b"].map(reason_of)).astype(object)  # text, even with no edge
    mask = through.notna() & ~edges["a"].isin(never) & ~edges["b"].isin(never)
    return edges.assign(rule=edges["rule"].where(~mask, shared.refusal(through.where(mask, ""))))


NO_SCORES = pd.DataFrame({"unique_id_l": pd.Series(dtype=str), "unique_id_r": pd.Series(dtype=str),
                          "probability": pd.Series(dtype=float), "match_weight": pd.Series(dtype=float),
                          "a": pd.Series(dtype="int64"), "b": pd.Series(dtype="int64")})


def _score_chains(conn: duckdb.DuckDBPyConnection, rules: Rules, node_of: dict[str, int], labels: np.ndarray,
                  a: np.ndarray, b: np.ndarray, node_types: np.ndarray, person: np.ndarray, model_path: Path
                  ) -> tuple[np.ndarray, pd.DataFrame]:
    """For the chain check: per node, whether its component (of `labels`, linked by edges a-b) joins person records
    through identifiers of two or more types (graph.chained), and the pairs inside those components, scored; every
    other record is in a cluster of its own for that scoring."""
    in_chain = graph.chained(labels, a, b, node_types, person)[labels]
    if not in_chain.any():
        return in_chain, NO_SCORES
    _recluster(conn, node_of, np.where(in_chain, labels, -1 - np.arange(len(labels))))
    return in_chain, _with_nodes(matching.score(conn, rules.review_at, model_path, within_clusters=True), node_of)


def _mask_chain_refused(conn: duckdb.DuckDBPyConnection, nodes: pd.DataFrame, edges: pd.DataFrame,
                        checked: graph.Components, person: np.ndarray) -> None:
    """A value a record's link to which the chain check refused (in the checked graph, before probabilistic links)
    is carried by records that disagree on who they are: like a shared value, it is no evidence for the matcher,
    which would otherwise join again through it (a household's phone scoring a partner's record as the same
    person) what the check kept apart. A refused link between two identifiers (an event's) masks neither: the
    records carrying each may well agree."""
    a, b = edges["a"].to_numpy(), edges["b"].to_numpy()
    refused = np.array([rule == graph.CHAIN for rule in checked.refused_rule], dtype=bool) & (person[a] ^ person[b])
    values = nodes.iloc[np.unique(np.where(person[a], b, a)[refused])][["id_type", "value"]]
    conn.register("_chain_refused_values", values)
    try:
        shared.mask(conn, "_chain_refused_values")
    finally:
        conn.unregister("_chain_refused_values")


@dataclass(frozen=True)
class Partition:
    """Who is with whom, from the identifiers alone: nodes with their component label and whether each is a shared
    value, edges with their fate."""

    nodes: pd.DataFrame
    edges: pd.DataFrame
    review: pd.DataFrame
    rebased: bool  # whether its pairs were scored on a basis counted now (basis.py), not a kept one


def partition(conn: duckdb.DuckDBPyConnection, rules: Rules, model_path: Path = matching.MODEL_PATH,
              rebase: bool = True) -> Partition:
    """The graph's components from identity.identifiers and the never-link rules, without any earlier run's ids;
    `model_path` is the matching model scoring pairs (another than the shipped one for `cdp identity link`). Pairs
    are scored on the kept basis unless `rebase` (or there is none for the model), then on one counted now."""
    ensure_tables(conn)
    types = pd.DataFrame([(t.name, t.priority) for t in rules.types.values()], columns=["id_type", "priority"])
    conn.register("_types_view", types)
    conn.execute("CREATE OR REPLACE TEMP TABLE _types AS SELECT * FROM _types_view")
    conn.unregister("_types_view")
    conn.execute(EDGES_SQL, {"record_streams": rules.person_streams})
    nodes = conn.execute("SELECT idx, id_type, value, first_seen, priority FROM _nodes ORDER BY idx").df()
    edges = conn.execute("SELECT * FROM _edges").df()
    never, isolated = _never_pairs(conn, rules)
    # Every person record's fields for the matcher, each in a cluster of its own until the graph says more; the
    # shared values are judged on them and link nothing by themselves (shared.py).
    alone = -1 - np.arange(len(nodes))
    node_of = _match_records(conn, rules, nodes, alone)
    shared_values = shared.shared_nodes(conn, rules)
    type_names = sorted(types["id_type"])
    protection = graph.Protection(
        node_types=nodes["id_type"].map({name: code for code, name in enumerate(type_names)}).to_numpy(),
        limits={type_names.index(name): limit for name, limit in rules.limits.items()},
        never=never,
        isolated=frozenset(isolated) | frozenset(shared_values),
        type_priority={type_names.index(name): t.priority for name, t in rules.types.items()},
    )
    deterministic = graph.resolve(len(nodes), edges, protection, type_names)
    rebased = rebase or not basis.load(conn, model_path)
    if rebased:  # counted over the deterministic components
        _recluster(conn, node_of, deterministic.labels)
        basis.count(conn, model_path)
    person = nodes["id_type"].isin([t.name for t in rules.types.values() if t.record_of]).to_numpy()
    a, b = edges["a"].to_numpy(), edges["b"].to_numpy()
    kept = deterministic.accepted
    chained, within = _score_chains(conn, rules, node_of, deterministic.labels, a[kept], b[kept],
                                    protection.node_types, person, model_path)
    fields = _identifying_fields(conn, node_of)
    checked = graph.resolve(len(nodes), edges, protection, type_names, _evidence(rules, person, fields, within))
    _mask_chain_refused(conn, nodes, edges, checked, person)
    # Splink then scores records the checked graph left apart; links above merge_at join it as the weakest edges.
    _recluster(conn, node_of, checked.labels)
    across = _with_nodes(matching.score(conn, rules.review_at, model_path), node_of)
    probabilistic = _probabilistic_edges(rules, nodes, across)
    # A probabilistic link can chain a component the deterministic links did not (two emails, then a probabilistic
    # link): its pairs are scored too, so the final pass checks its links on evidence, not on none. A pair scored
    # before keeps that score, and a pair the chain check scored and the graph then left apart keeps its score
    # across (the later score stands).
    kept = checked.accepted
    joined_a = np.concatenate([a[kept], probabilistic["a"].to_numpy()])
    joined_b = np.concatenate([b[kept], probabilistic["b"].to_numpy()])
    joined = graph.label(len(nodes), joined_a, joined_b)
    later = NO_SCORES
    if (graph.chained(joined, joined_a, joined_b, protection.node_types, person)[joined] & ~chained).any():
        _, later = _score_chains(conn, rules, node_of, joined, joined_a, joined_b, protection.node_types, person,
                                 model_path)
    scores = pd.concat([later, within, across], ignore_index=True).drop_duplicates(["unique_id_l", "unique_id_r"],
                                                                                   keep="last")
    edges = pd.concat([edges, probabilistic], ignore_index=True)
    final = graph.resolve(len(nodes), edges, protection, type_names, _evidence(rules, person, fields, scores))
    edges = edges.assign(accepted=final.accepted, rule=pd.Series(final.refused_rule, dtype="object"))
    nodes = nodes.assign(label=final.labels, shared=nodes["idx"].isin(shared_values))
    edges = _refused_as_shared(conn, edges, set(isolated))
    # Borderline pairs go to review: Splink's below merge_at, and the best pair of each chain the check refused.
    chain_review = pd.DataFrame(final.review, columns=["a", "b"]).merge(
        scores.assign(a=np.minimum(scores["a"], scores["b"]), b=np.maximum(scores["a"], scores["b"])), on=["a", "b"]
    )
    review = pd.concat([across[across["probability"] < rules.merge_at], chain_review], ignore_index=True
                       ).drop_duplicates(["unique_id_l", "unique_id_r"])
    return Partition(nodes, edges, review, rebased)


def resolve(conn: duckdb.DuckDBPyConnection, rules: Rules, run_id: str, rebase: bool = False) -> Outcome:
    """Rebuild the identity graph from identity.identifiers and write its tables, keeping last run's profile ids;
    with `rebase`, on a basis counted now, which it keeps (basis.py)."""
    built = partition(conn, rules, rebase=rebase)
    nodes, edges, review = built.nodes, built.edges, built.review
    used = shared.attribute(conn, nodes, [t.name for t in rules.types.values() if t.record_of])
    labels = nodes["label"].to_numpy()
    previous = conn.execute("SELECT id_type, value, profile_id FROM identity.identifier_profiles WHERE NOT shared").df()
    previous_of = nodes.merge(previous, on=["id_type", "value"], how="left")["profile_id"].fillna("").to_numpy()
    registry = conn.execute(f"SELECT {', '.join(profile_ids.REGISTRY_COLUMNS)} FROM identity.profile_registry").df()
    now = pd.Timestamp.now(tz="UTC")
    causes = _merge_causes(edges, nodes, labels, previous_of)
    # A shared value founds no profile, unless records are placed in its own component (sql/record_labels.sql).
    assignment = profile_ids.assign(nodes[~nodes["shared"] | nodes["label"].isin(used)], previous, registry, causes,
                                    run_id, now)
    nodes = nodes.assign(profile_id=nodes["label"].map(assignment.profile_of_label))
    _write(conn, nodes, edges, review, assignment, run_id, built.rebased)
    sizes = conn.execute(
        "SELECT max(n) FROM (SELECT count(*) n FROM identity.record_profiles WHERE list_contains($streams, stream)"
        " GROUP BY profile_id)",
        {"streams": rules.person_streams},
    ).fetchall()[0][0]
    return Outcome(
        profiles=int(nodes["profile_id"].nunique()),
        shared_values=int(nodes["shared"].sum()),
        merged=int((assignment.log["action"] == "merged").sum()),
        split=int((assignment.log["action"] == "split").sum()),
        refused=int((~edges["accepted"]).sum()),
        probabilistic_links=int((edges["accepted"] & (edges["method"] == "probabilistic")).sum()),
        review_pairs=int(conn.execute("SELECT count(*) FROM identity.match_review").fetchall()[0][0]),
        largest_profile_records=int(sizes or 0),
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


def _write(conn: duckdb.DuckDBPyConnection, nodes: pd.DataFrame, edges: pd.DataFrame, review: pd.DataFrame,
           assignment: profile_ids.Assignment, run_id: str, rebased: bool) -> None:
    ends = nodes[["id_type", "value", "profile_id"]]
    edge_rows = pd.DataFrame({
        "type_a": ends["id_type"].to_numpy()[edges["a"]], "value_a": ends["value"].to_numpy()[edges["a"]],
        "type_b": ends["id_type"].to_numpy()[edges["b"]], "value_b": ends["value"].to_numpy()[edges["b"]],
        "profile_a": ends["profile_id"].to_numpy()[edges["a"]], "profile_b": ends["profile_id"].to_numpy()[edges["b"]],
        "link_type": edges["link_type"].to_numpy(), "method": edges["method"].to_numpy(),
        "probability": edges["probability"].to_numpy(), "first_seen": edges["first_seen"].array,
        "records": edges["records"].to_numpy(), "streams": edges["streams"].to_numpy(),
        "accepted": edges["accepted"].to_numpy(), "refused_by": edges["rule"].to_numpy(),
    })
    frames = {"_nodes_out": nodes[["idx", "id_type", "value", "first_seen", "label", "shared", "profile_id"]],
              "_edges_out": edge_rows,
              "_review_out": review[["unique_id_l", "unique_id_r", "probability", "match_weight"]],
              "_registry_out": assignment.registry, "_log_out": assignment.log}
    for name, frame in frames.items():
        conn.register(name, frame)
    conn.begin()
    try:
        for statement in WRITE_SQL.split(";\n"):
            if statement.strip():
                conn.execute(statement, {"run_id": run_id} if "$run_id" in statement else None)
        if rebased:
            basis.keep(conn, run_id)
    except Exception:
        conn.rollback()
        raise
    conn.commit()
    for name in frames:
        conn.unregister(name)

"""Identity resolution, end to end: graph, probabilistic links, stable ids, and the tables explain reads.

Deterministic edges come from shared identifiers; Splink then scores records left in
different components, and links above the merge threshold join the graph as the weakest
edges, subject to the same limits. Everything this run writes lands in one transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from cdp_assets.identity import graph, matching, profile_ids
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
            id_type VARCHAR, value VARCHAR, profile_id VARCHAR, first_seen TIMESTAMPTZ);
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


def _probabilistic_edges(
    conn: duckdb.DuckDBPyConnection, rules: Rules, nodes: pd.DataFrame, labels: np.ndarray
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Splink's scores for records in different components: edges to merge, and pairs to review."""
    records = nodes[nodes["priority"] == 0][["idx", "id_type", "value"]]
    clusters = pd.DataFrame({
        "stream": records["id_type"].map({t.name: t.record_of for t in rules.types.values() if t.record_of}),
        "record_id": records["value"], "cluster_id": labels[records["idx"].to_numpy()],
    })
    conn.register("_clusters_view", clusters)
    conn.execute("CREATE OR REPLACE TEMP TABLE _record_clusters AS SELECT * FROM _clusters_view")
    conn.unregister("_clusters_view")
    matching.build_records(conn)
    scores = matching.score(conn, rules.review_at)
    node_of = dict(zip(records["id_type"].map(
        {t.name: t.record_of for t in rules.types.values() if t.record_of}) + ":" + records["value"],
        records["idx"], strict=True))
    scores = scores.assign(a=scores["unique_id_l"].map(node_of), b=scores["unique_id_r"].map(node_of))
    merge = scores[scores["probability"] >= rules.merge_at]
    seen = nodes["first_seen"].to_numpy()
    edges = pd.DataFrame({
        "a": merge["a"].to_numpy(), "b": merge["b"].to_numpy(), "link_type": "probabilistic",
        "priority": rules.types["probabilistic"].priority, "method": "probabilistic",
        "probability": merge["probability"].to_numpy(),
        # A probabilistic link exists once both records do.
        "first_seen": np.maximum(seen[merge["a"].to_numpy()], seen[merge["b"].to_numpy()]),
        "records": 2, "streams": [[]] * len(merge),
    })
    return edges, scores[scores["probability"] < rules.merge_at]


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


@dataclass(frozen=True)
class Partition:
    """Who is with whom, from the identifiers alone: nodes with their component label, edges with their fate."""

    nodes: pd.DataFrame
    edges: pd.DataFrame
    review: pd.DataFrame


def partition(conn: duckdb.DuckDBPyConnection, rules: Rules) -> Partition:
    """The graph's components from identity.identifiers and the never-link rules, without any earlier run's ids."""
    ensure_tables(conn)
    types = pd.DataFrame([(t.name, t.priority) for t in rules.types.values()], columns=["id_type", "priority"])
    conn.register("_types_view", types)
    conn.execute("CREATE OR REPLACE TEMP TABLE _types AS SELECT * FROM _types_view")
    conn.unregister("_types_view")
    conn.execute(EDGES_SQL, {"record_streams": rules.person_streams})
    nodes = conn.execute("SELECT idx, id_type, value, first_seen, priority FROM _nodes ORDER BY idx").df()
    edges = conn.execute("SELECT * FROM _edges").df()
    never, isolated = _never_pairs(conn, rules)
    type_names = sorted(types["id_type"])
    protection = graph.Protection(
        node_types=nodes["id_type"].map({name: code for code, name in enumerate(type_names)}).to_numpy(),
        limits={type_names.index(name): limit for name, limit in rules.limits.items()},
        never=never,
        isolated=frozenset(isolated),
    )
    deterministic = graph.resolve(len(nodes), edges, protection, type_names)
    probabilistic, review = _probabilistic_edges(conn, rules, nodes, deterministic.labels)
    edges = pd.concat([edges, probabilistic], ignore_index=True)
    final = graph.resolve(len(nodes), edges, protection, type_names)
    edges = edges.assign(accepted=final.accepted, rule=pd.Series(final.refused_rule, dtype="object"))
    return Partition(nodes.assign(label=final.labels), edges, review)


def resolve(conn: duckdb.DuckDBPyConnection, rules: Rules, run_id: str) -> Outcome:
    """Rebuild the identity graph from identity.identifiers and write its tables, keeping last run's profile ids."""
    built = partition(conn, rules)
    nodes, edges, review = built.nodes, built.edges, built.review
    labels = nodes["label"].to_numpy()
    previous = conn.execute("SELECT id_type, value, profile_id FROM identity.identifier_profiles").df()
    previous_of = nodes.merge(previous, on=["id_type", "value"], how="left")["profile_id"].fillna("").to_numpy()
    registry = conn.execute(f"SELECT {', '.join(profile_ids.REGISTRY_COLUMNS)} FROM identity.profile_registry").df()
    now = pd.Timestamp.now(tz="UTC")
    causes = _merge_causes(edges, nodes, labels, previous_of)
    assignment = profile_ids.assign(nodes, previous, registry, causes, run_id, now)
    nodes = nodes.assign(profile_id=nodes["label"].map(assignment.profile_of_label))
    _write(conn, nodes, edges, review, assignment, run_id)
    sizes = conn.execute(
        "SELECT max(n) FROM (SELECT count(*) n FROM identity.record_profiles WHERE list_contains($streams, stream)"
        " GROUP BY profile_id)",
        {"streams": rules.person_streams},
    ).fetchall()[0][0]
    return Outcome(
        profiles=int(nodes["profile_id"].nunique()),
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
        GROUP BY p.profile_id, p.id_type, l.limit_ HAVING count(*) > l.limit_
        """
    ).fetchall()
    conn.unregister("_limits_view")
    return rows


def _write(conn: duckdb.DuckDBPyConnection, nodes: pd.DataFrame, edges: pd.DataFrame, review: pd.DataFrame,
           assignment: profile_ids.Assignment, run_id: str) -> None:
    ends = nodes[["id_type", "value", "profile_id"]]
    edge_rows = pd.DataFrame({
        "type_a": ends["id_type"].to_numpy()[edges["a"]], "value_a": ends["value"].to_numpy()[edges["a"]],
        "type_b": ends["id_type"].to_numpy()[edges["b"]], "value_b": ends["value"].to_numpy()[edges["b"]],
        "profile_a": ends["profile_id"].to_numpy()[edges["a"]], "profile_b": ends["profile_id"].to_numpy()[edges["b"]],
        "link_type": edges["link_type"].to_numpy(), "method": edges["method"].to_numpy(),
        "probability": edges["probability"].to_numpy(), "first_seen": edges["first_seen"].to_numpy(),
        "records": edges["records"].to_numpy(), "streams": edges["streams"].to_numpy(),
        "accepted": edges["accepted"].to_numpy(), "refused_by": edges["rule"].to_numpy(),
    })
    frames = {"_nodes_out": nodes[["idx", "id_type", "value", "first_seen", "profile_id"]], "_edges_out": edge_rows,
              "_review_out": review[["unique_id_l", "unique_id_r", "probability", "match_weight"]],
              "_registry_out": assignment.registry, "_log_out": assignment.log}
    for name, frame in frames.items():
        conn.register(name, frame)
    conn.begin()
    try:
        for statement in WRITE_SQL.split(";\n"):
            if statement.strip():
                conn.execute(statement, {"run_id": run_id} if "$run_id" in statement else None)
    except Exception:
        conn.rollback()
        raise
    conn.commit()
    for name in frames:
        conn.unregister(name)

"""Connected components of the identity graph, with merge protection.

scipy labels the components of every edge at once. Only components that would break a
rule (more values of a type than its limit, or a "never link" pair inside) are rebuilt by
a union-find that applies their edges strongest first, then oldest first, and refuses each
edge that would break a rule: the weakest link gives way, as in Segment's merge protection.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components


@dataclass(frozen=True)
class Protection:
    """What the union-find must respect: per-type limits and pairs that may never share a component."""

    node_types: np.ndarray  # type code per node
    limits: dict[int, int]  # type code -> limit
    never: list[tuple[int, int]]  # node pairs
    isolated: frozenset[int] = frozenset()  # nodes that may link nothing

@dataclass(frozen=True)
class Components:
    labels: np.ndarray  # component per node
    accepted: np.ndarray  # per edge: kept in the graph
    refused_rule: list[str | None]  # per edge: the rule that refused it, or None


def label(node_count: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    graph = coo_matrix((np.ones(len(a), dtype=np.int8), (a, b)), shape=(node_count, node_count))
    return connected_components(graph, directed=False)[1]


def _flagged(labels: np.ndarray, protection: Protection) -> np.ndarray:
    """Components that hold more values of a type than its limit, or both ends of a never-link pair."""
    flagged = np.zeros(labels.max() + 1 if len(labels) else 0, dtype=bool)
    for code, limit in protection.limits.items():
        counts = np.bincount(labels[protection.node_types == code], minlength=len(flagged))
        flagged |= counts > limit
    for x, y in protection.never:
        if labels[x] == labels[y]:
            flagged[labels[x]] = True
    return flagged


class _ProtectedUnion:
    """A union-find whose unions respect the limits and never-link pairs."""

    def __init__(self, protection: Protection) -> None:
        self.parent: dict[int, int] = {}
        self.counts: dict[int, dict[int, int]] = {}
        self.protection = protection
        self.never: dict[int, set[int]] = {}
        for x, y in protection.never:
            self.never.setdefault(x, set()).add(y)
            self.never.setdefault(y, set()).add(x)
        self.members: dict[int, list[int]] = {}

    def find(self, x: int) -> int:
        if x not in self.parent:
            self.parent[x] = x
            code = int(self.protection.node_types[x])
            self.counts[x] = {code: 1} if code in self.protection.limits else {}
            self.members[x] = [x]
            return x
        root = x
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[x] != root:
            self.parent[x], x = root, self.parent[x]
        return root

    def union(self, x: int, y: int, type_names: list[str]) -> str | None:
        """Join the components of x and y; returns the rule that forbids it instead, if any."""
        rx, ry = self.find(x), self.find(y)
        if rx == ry:
            return None
        cx, cy = self.counts[rx], self.counts[ry]
        for code, limit in self.protection.limits.items():
            if cx.get(code, 0) + cy.get(code, 0) > limit:
                return f"limit {type_names[code]} {limit}"
        small, large = (rx, ry) if len(self.members[rx]) < len(self.members[ry]) else (ry, rx)
        if any(self.find(partner) == large for member in self.members[small] for partner in self.never.get(member, ())):
            return "never_link"
        self.parent[small] = large
        for code, count in self.counts.pop(small).items():
            self.counts[large][code] = self.counts[large].get(code, 0) + count
        self.members[large].extend(self.members.pop(small))
        return None


def resolve(node_count: int, edges: pd.DataFrame, protection: Protection, type_names: list[str]) -> Components:
    """Components of `edges` (columns a, b, priority, first_seen) under `protection`."""
    a, b = edges["a"].to_numpy(), edges["b"].to_numpy()
    isolated = np.isin(a, list(protection.isolated)) | np.isin(b, list(protection.isolated))
    labels = label(node_count, a[~isolated], b[~isolated])
    accepted = ~isolated
    refused: list[str | None] = ["never_link" if i else None for i in isolated]
    flagged = _flagged(labels, protection)
    if not flagged.any():
        return Components(labels, accepted, refused)
    inside = flagged[labels[a]] & ~isolated
    order = edges[inside].sort_values(["priority", "first_seen", "a", "b"], kind="stable").index
    union = _ProtectedUnion(protection)
    for position in order:
        rule = union.union(int(a[position]), int(b[position]), type_names)
        if rule:
            accepted[position], refused[position] = False, rule
    # Relabel every node of the flagged components by its union-find root.
    next_label = labels.max() + 1
    roots: dict[int, int] = {}
    for node in np.flatnonzero(flagged[labels]):
        root = union.find(int(node))
        if root not in roots:
            roots[root], next_label = next_label, next_label + 1
        labels[node] = roots[root]
    return Components(labels, accepted, refused)

"""Connected components of the identity graph, with merge protection and the chain check.

scipy labels the components of every edge at once. Only components that would break a
rule (more values of a type than its limit, or a "never link" pair inside) or whose person
records are joined through identifiers of two or more types (a chain) are rebuilt by a
union-find that applies their edges strongest first, then oldest first, and refuses each
edge that would break a rule: the weakest link gives way, as in Segment's merge protection.
A chain within the limits, with no never-link pair, whose person records all score at least
`merge_at` with each other is kept whole as scipy grouped it (renumbered with the rest): the
union-find would keep every one of its links (`agree_throughout`).

The chain check: a link through an identifier joining two groups of person records is accepted
only when the ends agree, that is when the best probabilistic score between a record of one
group and a record of the other that the link does not join directly (they do not both hold the
identifier it goes through) reaches `merge_at`; otherwise it is refused with the rule `chain`, and
its best pair goes to review when that score is at least `review_at`. A probabilistic link is such
a score already, so it passes. A pair with no identifying field on both sides has nothing to
disagree on: it does not refuse the link, which then rests on its identifiers as before (refusing
it would cut every sparse record, a phone-only profile say, out of its person's chain, for no
evidence of a second person).

A probabilistic link refused by a limit is applied again before the identifiers of the type whose
limit it broke: the records it joins are one person by their score, and the limit then decides,
strongest first and oldest first, which value of that type stays (the other's link is refused).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

CHAIN = "chain"
PROBABILISTIC = -1  # the joining "type" of a link between two records


@dataclass(frozen=True)
class Protection:
    """What the union-find must respect: per-type limits and pairs that may never share a component."""

    node_types: np.ndarray  # type code per node
    limits: dict[int, int]  # type code -> limit
    never: list[tuple[int, int]]  # node pairs
    isolated: frozenset[int] = frozenset()  # nodes that may link nothing
    type_priority: dict[int, int] = field(default_factory=dict)  # type code -> priority (1 is the strongest)


@dataclass(frozen=True)
class Evidence:
    """What the chain check reads: which nodes are person records, their scores and what each says."""

    person: np.ndarray  # per node: a person record
    scores: dict[tuple[int, int], float]  # (lower node, higher node) -> probability, for pairs scored >= review_at
    fields: dict[int, int]  # person record node -> bitmask of the identifying fields it carries
    merge_at: float
    review_at: float


@dataclass(frozen=True)
class Edges:
    """The graph's links, one item of each array per link: what the union-find orders them by. What a link says
    (its type, the records behind it) stays in the warehouse, where resolution reads it by the link's position."""

    a: np.ndarray  # node
    b: np.ndarray  # node
    priority: np.ndarray  # the strongest (lowest) is applied first
    first_seen: np.ndarray  # int64 nanoseconds since the epoch (NEVER_SEEN for none), then the oldest first
    probabilistic: np.ndarray  # bool: a Splink link between two person records

    def __len__(self) -> int:
        return len(self.a)

    def __add__(self, other: Edges) -> Edges:
        return Edges(*(np.concatenate([getattr(self, name), getattr(other, name)])
                       for name in ("a", "b", "priority", "first_seen", "probabilistic")))


NEVER_SEEN = np.iinfo(np.int64).max  # a link with no time is applied after every dated one of its priority


@dataclass(frozen=True)
class Components:
    labels: np.ndarray  # component per node
    accepted: np.ndarray  # per edge: kept in the graph
    refused_rule: list[str | None]  # per edge: the rule that refused it, or None
    review: list[tuple[int, int]] = field(default_factory=list)  # best pairs of chain refusals worth a look


def label(node_count: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    graph = coo_matrix((np.ones(len(a), dtype=np.int8), (a, b)), shape=(node_count, node_count))
    return connected_components(graph, directed=False)[1]


def _breaking_rules(labels: np.ndarray, protection: Protection) -> np.ndarray:
    """Components that hold more values of a type than its limit, or both ends of a never-link pair."""
    flagged = np.zeros(labels.max() + 1 if len(labels) else 0, dtype=bool)
    for code, limit in protection.limits.items():
        counts = np.bincount(labels[protection.node_types == code], minlength=len(flagged))
        flagged |= counts > limit
    for x, y in protection.never:
        if labels[x] == labels[y]:
            flagged[labels[x]] = True
    return flagged


def chained(labels: np.ndarray, a: np.ndarray, b: np.ndarray, node_types: np.ndarray, person: np.ndarray
            ) -> np.ndarray:
    """Per component: its person records are joined through links of two or more types.

    A type joins records where one of its values is held by two records, where an event links a
    value of it to another value that a record holds, or (probabilistic) where a link joins two records."""
    flagged = np.zeros(labels.max() + 1 if len(labels) else 0, dtype=bool)
    on_a, on_b = person[a], person[b]
    held = np.where(on_a, b, a)[on_a ^ on_b]  # the identifier end of each record-identifier link
    holders = np.bincount(held, minlength=len(labels))
    shared = np.flatnonzero(holders >= 2)
    bridging = ~on_a & ~on_b & (holders[a] > 0) & (holders[b] > 0)
    joins = pd.DataFrame({
        "label": np.concatenate([labels[shared], labels[a[bridging]], labels[b[bridging]], labels[a[on_a & on_b]]]),
        "type": np.concatenate([node_types[shared], node_types[a[bridging]], node_types[b[bridging]],
                                np.full((on_a & on_b).sum(), PROBABILISTIC)]),
    })
    types = joins.drop_duplicates().groupby("label").size()
    flagged[types.index[types >= 2].to_numpy()] = True
    return flagged


class _ProtectedUnion:
    """A union-find whose unions respect the limits, never-link pairs and, given evidence, the chain check."""

    def __init__(self, protection: Protection, evidence: Evidence | None, holders: dict[int, set[int]]) -> None:
        self.parent: dict[int, int] = {}
        self.counts: dict[int, dict[int, int]] = {}
        self.protection = protection
        self.evidence = evidence
        self.never: dict[int, set[int]] = {}
        for x, y in protection.never:
            self.never.setdefault(x, set()).add(y)
            self.never.setdefault(y, set()).add(x)
        self.members: dict[int, list[int]] = {}
        self.records: dict[int, list[int]] = {}  # root -> its person records
        self.holders = holders  # identifier -> the person records carrying it
        self.review: list[tuple[int, int]] = []
        # Python lists: read once per node or link, numpy's per-item access would cost more than the rest
        self.node_types: list[int] = protection.node_types.tolist()
        self.person: list[bool] = evidence.person.tolist() if evidence is not None else []

    def find(self, x: int) -> int:
        if x not in self.parent:
            self.parent[x] = x
            code = self.node_types[x]
            self.counts[x] = {code: 1} if code in self.protection.limits else {}
            self.members[x] = [x]
            self.records[x] = [x] if self.person and self.person[x] else []
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
        if self.records[rx] and self.records[ry] and not self._ends_agree(x, y, self.records[rx], self.records[ry]):
            return CHAIN
        self.parent[small] = large
        for code, count in self.counts.pop(small).items():
            self.counts[large][code] = self.counts[large].get(code, 0) + count
        self.members[large].extend(self.members.pop(small))
        self.records[large].extend(self.records.pop(small))
        return None

    def _ends_agree(self, x: int, y: int, left: list[int], right: list[int]) -> bool:
        """The chain check for a link x-y between two groups of person records (see the module's docstring).

        Each pair of records is looked at once in the union-find's life (after it, both are in one group)."""
        evidence = self.evidence
        assert evidence is not None
        ends = [n for n in (x, y) if not self.person[n]]
        if not ends:  # a probabilistic link: its own score between the two groups is the check
            return True

        def direct(r1: int, r2: int) -> bool:
            """The link joins r1 and r2 by itself: both carry its identifier (by their data, whether or not their
            links to it are applied yet or at all), so their agreement on it is the link's own evidence."""
            return any(
                r1 in self.holders.get(n, ()) and r2 in self.holders.get(n, ())
                for n in ends
            )

        best, best_pair, comparable = -1.0, (0, 0), False
        for r1 in left:
            for r2 in right:
                if direct(r1, r2):
                    continue
                pair = (r1, r2) if r1 < r2 else (r2, r1)
                score = evidence.scores.get(pair, -1.0)
                if score > best:
                    best, best_pair = score, pair
                comparable = comparable or bool(evidence.fields.get(r1, 0) & evidence.fields.get(r2, 0))
        if best >= evidence.merge_at or not comparable:
            return True
        if best >= evidence.review_at:
            self.review.append(best_pair)
        return False


def resolve(node_count: int, edges: Edges, protection: Protection, type_names: list[str],
            evidence: Evidence | None = None) -> Components:
    """Components of `edges` under `protection` and, given `evidence`, the chain check."""
    a, b = edges.a, edges.b
    isolated = np.isin(a, list(protection.isolated)) | np.isin(b, list(protection.isolated))
    labels = label(node_count, a[~isolated], b[~isolated])
    accepted = ~isolated
    refused: list[str | None] = ["never_link" if i else None for i in isolated]
    breaking = _breaking_rules(labels, protection)
    flagged = breaking.copy()
    if evidence is not None:
        flagged |= chained(labels, a[~isolated], b[~isolated], protection.node_types, evidence.person)
    if not flagged.any():
        return Components(labels, accepted, refused)
    agreeing = np.zeros_like(flagged) if evidence is None else flagged & ~breaking & agree_throughout(labels, evidence)
    rank = edges.priority.astype(float)
    limit_priority = {f"limit {type_names[code]} {limit}": protection.type_priority.get(code)
                      for code, limit in protection.limits.items()}
    review: list[tuple[int, int]] = []
    unions: list[_ProtectedUnion] = []
    rerun = flagged & ~agreeing
    # The holders of the identifiers the union-find may check a link through: those of the components it rebuilds.
    rebuilding = rerun[labels[a]] | rerun[labels[b]]
    holders = _holders(a[rebuilding], b[rebuilding], evidence.person) if evidence is not None else {}
    last_pass = np.full(len(flagged), -1)  # per component: the pass whose union-find built it
    while rerun.any():
        inside = np.flatnonzero(rerun[labels[a]] & ~isolated)
        union = _ProtectedUnion(protection, evidence, holders)
        for position in inside[np.lexsort((b[inside], a[inside], edges.first_seen[inside], rank[inside]))].tolist():
            rule = union.union(int(a[position]), int(b[position]), type_names)
            accepted[position], refused[position] = rule is None, rule
        review = [pair for pair in review if not rerun[labels[pair[0]]]] + union.review
        last_pass[rerun], unions = len(unions), [*unions, union]
        # A probabilistic link refused by a limit is applied again just before that type's links.
        rerun = np.zeros_like(flagged)
        for position in inside[edges.probabilistic[inside] & ~accepted[inside]].tolist():
            priority = limit_priority.get(refused[position] or "")
            if priority is not None and priority - 0.5 < rank[position]:
                rank[position] = priority - 0.5
                rerun[labels[a[position]]] = True
    # Renumber every node of a flagged component by its group: its union-find root, or its component where every
    # link was kept; groups are numbered in the order of their first node.
    nodes = np.flatnonzero(flagged[labels])
    group = labels[nodes].astype(np.int64)
    for i in np.flatnonzero(~agreeing[group]).tolist():
        built_by = int(last_pass[group[i]])
        group[i] = len(flagged) + built_by * node_count + unions[built_by].find(int(nodes[i]))
    _, first, position = np.unique(group, return_index=True, return_inverse=True)
    number = np.empty(len(first), dtype=np.int64)
    number[np.argsort(first)] = np.arange(len(first))
    labels[nodes] = labels.max() + 1 + number[position]
    return Components(labels, accepted, refused, review)


def agree_throughout(labels: np.ndarray, evidence: Evidence) -> np.ndarray:
    """Per component: every pair of its person records scores at least `merge_at`. Within the limits and with no
    never-link pair, the union-find would keep every one of its links (whichever two groups a link joins, the best
    pair between them reaches `merge_at`, or no pair is left to compare), so it is one component as it stands."""
    records = np.bincount(labels[evidence.person], minlength=labels.max() + 1)
    pairs = np.array(list(evidence.scores), dtype=np.int64).reshape(-1, 2)
    x, y = pairs[:, 0], pairs[:, 1]
    score = np.fromiter(evidence.scores.values(), float, len(pairs))
    # Each pair of two records once, as the scores are keyed (lower node, higher node).
    inside = (score >= evidence.merge_at) & (x < y) & evidence.person[x] & evidence.person[y] & (labels[x] == labels[y])
    return np.bincount(labels[x[inside]], minlength=len(records)) == records * (records - 1) // 2


def _holders(a: np.ndarray, b: np.ndarray, person: np.ndarray) -> dict[int, set[int]]:
    """Per identifier node, the person records linked to it by an edge (a record carrying the value)."""
    on_a, on_b = person[a], person[b]
    one = on_a ^ on_b
    holders: dict[int, set[int]] = {}
    for record, value in zip(np.where(on_a, a, b)[one].tolist(), np.where(on_a, b, a)[one].tolist(), strict=True):
        holders.setdefault(value, set()).add(record)
    return holders

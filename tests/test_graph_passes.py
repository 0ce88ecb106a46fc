"""The identity graph skips the union-find for a component whose person records all score at least `merge_at`
with each other (graph.agree_throughout), as the union-find would keep every one of its links. Checked against the
union-find itself on random graphs: it keeps every link of such a component, and resolve ends with its components.
A component with one pair under `merge_at` still goes through the union-find and its chain check."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from cdp_assets.identity import graph

SETTINGS = settings(max_examples=300, deadline=None)
# Type codes: 0 a person record, then identifiers; a link is as strong as its weaker end (the higher priority).
TYPE_NAMES = ["record", "email", "phone", "device_id"]
PRIORITY = {0: 0, 1: 2, 2: 3, 3: 5}
PROBABILISTIC_PRIORITY = 6
MERGE_AT, REVIEW_AT = 0.9, 0.5
SCORES = (0.3, 0.7, 0.97)


@dataclass(frozen=True)
class Case:
    protection: graph.Protection
    node_count: int
    edges: pd.DataFrame
    evidence: graph.Evidence


def _edges(pairs: list[tuple[int, int]], types: np.ndarray, seen: list[int], method: str) -> pd.DataFrame:
    priority = [PROBABILISTIC_PRIORITY if method == "probabilistic" else max(PRIORITY[types[a]], PRIORITY[types[b]])
                for a, b in pairs]
    return pd.DataFrame({
        "a": np.array([a for a, _ in pairs], dtype=np.int64), "b": np.array([b for _, b in pairs], dtype=np.int64),
        "priority": np.array(priority, dtype=np.int64), "first_seen": np.array(seen[: len(pairs)], dtype=np.int64),
        "method": pd.Series([method] * len(pairs), dtype=object),
    })


@st.composite
def cases(draw: st.DrawFn) -> Case:
    records = draw(st.integers(2, 6))
    identifiers = draw(st.lists(st.sampled_from([1, 2, 3]), min_size=1, max_size=5))
    types = np.array([0] * records + identifiers)
    count = len(types)
    ids = range(records, count)
    carried = draw(st.lists(st.tuples(st.integers(0, records - 1), st.sampled_from(ids)), max_size=14, unique=True))
    events = draw(st.lists(st.tuples(st.sampled_from(ids), st.sampled_from(ids)).filter(lambda p: p[0] < p[1]),
                           max_size=3, unique=True))
    pairs = [(x, y) for x in range(records) for y in range(x + 1, records)]
    drawn = draw(st.lists(st.sampled_from(SCORES), min_size=len(pairs), max_size=len(pairs)))
    scores = dict(zip(pairs, drawn, strict=True))
    # Probabilistic links between records, as the final pass has them: their pairs score at merge_at or above.
    linked = draw(st.lists(st.sampled_from(pairs), max_size=3, unique=True))
    scores |= {pair: max(scores[pair], MERGE_AT) for pair in linked}
    fields = {r: draw(st.integers(0, 3)) for r in range(records)}
    never = draw(st.lists(st.tuples(st.sampled_from(ids), st.sampled_from(ids)).filter(lambda p: p[0] != p[1]),
                          max_size=1))
    isolated = frozenset(draw(st.lists(st.sampled_from(ids), max_size=1)))
    seen = draw(st.lists(st.integers(0, 5), min_size=40, max_size=40))
    return Case(
        protection=graph.Protection(node_types=types, limits={1: 2, 2: 1, 3: 2}, never=never, isolated=isolated,
                                    type_priority={code: PRIORITY[code] for code in (1, 2, 3)}),
        node_count=count,
        edges=pd.concat([_edges(carried + events, types, seen, "deterministic"),
                         _edges(linked, types, seen[20:], "probabilistic")], ignore_index=True),
        evidence=graph.Evidence(types == 0, {p: s for p, s in scores.items() if s >= REVIEW_AT}, fields, MERGE_AT,
                                REVIEW_AT),
    )


@SETTINGS
@given(cases())
def test_the_union_find_keeps_every_link_of_a_component_whose_records_all_agree(case: Case) -> None:
    """What lets resolve skip the union-find for such a component: the union-find itself, run over its links in
    resolve's order, refuses none of them."""
    edges = case.edges
    a, b = edges["a"].to_numpy(), edges["b"].to_numpy()
    isolated = np.isin(a, list(case.protection.isolated)) | np.isin(b, list(case.protection.isolated))
    labels = graph.label(case.node_count, a[~isolated], b[~isolated])
    skipped = graph.agree_throughout(labels, case.evidence) & ~graph._flagged(labels, case.protection)
    union = graph._ProtectedUnion(case.protection, case.evidence, graph._holders(a, b, case.evidence.person))
    inside = edges[skipped[labels[a]] & ~isolated].sort_values(["priority", "first_seen", "a", "b"], kind="stable")
    for x, y in zip(inside["a"].tolist(), inside["b"].tolist(), strict=True):
        assert union.union(x, y, TYPE_NAMES) is None
    # And resolve, which skips it, ends with the union-find's components and keeps every link.
    resolved = graph.resolve(case.node_count, edges, case.protection, TYPE_NAMES, case.evidence)
    nodes = np.flatnonzero(skipped[labels])
    groups = pd.DataFrame({"root": [union.find(int(n)) for n in nodes], "label": resolved.labels[nodes]})
    assert (groups.groupby("root")["label"].nunique() == 1).all()
    assert (groups.groupby("label")["root"].nunique() == 1).all()
    assert resolved.accepted[inside.index].all()
    # Rebuilt components are numbered in the order of their first node, skipped or not, as later ties are broken by
    # the lower number (profile_ids).
    renumbered = resolved.labels[resolved.labels > labels.max()]
    _, first = np.unique(renumbered, return_index=True)
    assert (np.diff(renumbered[np.sort(first)]) > 0).all()


def test_a_chain_with_one_pair_under_merge_at_still_meets_the_chain_check() -> None:
    """Records 0 and 1 share an email, 1 and 2 a phone; 0 and 2 score under merge_at. Every other pair agrees, yet
    the component is not skipped: the phone's link to record 2 is refused by the chain check, and 2 stands alone.
    Scored at merge_at, the same pair lets the component be kept whole."""
    types = np.array([0, 0, 0, 1, 2])
    deterministic = _edges([(0, 3), (1, 3), (1, 4), (2, 4)], types, [0, 1, 2, 3], "deterministic")
    protection = graph.Protection(node_types=types, limits={1: 2, 2: 1}, never=[],
                                  type_priority={1: PRIORITY[1], 2: PRIORITY[2]})
    person, fields = types == 0, dict.fromkeys(range(3), 1)
    for score, refused, groups in ((0.7, [None, None, None, graph.CHAIN], 2), (MERGE_AT, [None] * 4, 1)):
        evidence = graph.Evidence(person, {(0, 1): 0.97, (1, 2): 0.97, (0, 2): score}, fields, MERGE_AT, REVIEW_AT)
        resolved = graph.resolve(len(types), deterministic, protection, TYPE_NAMES, evidence)
        assert resolved.refused_rule == refused
        assert len(set(resolved.labels[:3].tolist())) == groups

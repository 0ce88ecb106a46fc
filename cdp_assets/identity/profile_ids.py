"""Stable profile ids across runs, with every merge and split logged.

A component keeps the id its nodes held last run. When components of two profiles merge,
the older id survives and the other is retired into it. When a profile splits, the part
holding the node that founded it (its anchor) keeps the id and the other parts get new
ones. A new profile's id derives from its anchor node, so a rerun names it the same way.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from cdp_assets.identity.graph import NEVER_SEEN

REGISTRY_COLUMNS = ["profile_id", "anchor_type", "anchor_value", "created_at", "created_run", "merged_into",
                    "retired_run"]
LOG_COLUMNS = ["run_id", "logged_at", "action", "profile_id", "other_profile_id", "cause"]


@dataclass(frozen=True)
class Assignment:
    profile_of_label: pd.Series  # component label -> profile id
    registry: pd.DataFrame  # REGISTRY_COLUMNS, every id ever issued
    log: pd.DataFrame  # LOG_COLUMNS: this run's merges and splits


@dataclass(frozen=True)
class Graph:
    """This run's graph as `assign` reads it, one item of each array per node (numbered in the order of their type
    and value); the values themselves stay in the warehouse, and `names` reads those of the few nodes it needs."""

    labels: np.ndarray  # component
    eligible: np.ndarray  # bool: may found or hold a profile (a shared value its records do not use may not)
    first_seen: np.ndarray  # int64 nanoseconds (graph.NEVER_SEEN for none)
    priority: np.ndarray
    previous: np.ndarray  # index into `previous_ids` of the profile the node held last run, or -1
    previous_ids: np.ndarray  # last run's profile ids
    anchor_of: pd.Series  # registry profile id -> the node its anchor is, where it is one
    names: Callable[[np.ndarray], list[tuple[str, str]]]  # nodes -> their (id_type, value)


def new_id(id_type: str, value: str) -> str:
    return "prof_" + hashlib.sha256(f"{id_type}:{value}".encode()).hexdigest()[:16]


def assign(nodes: Graph, registry: pd.DataFrame, cause: pd.Series, run_id: str, now: pd.Timestamp) -> Assignment:
    """Profile ids for this run's components. `registry`: REGISTRY_COLUMNS. `cause`: per label, why its profile
    changed."""
    held = np.flatnonzero(nodes.eligible & (nodes.previous >= 0))
    held_label, held_profile = nodes.labels[held], nodes.previous[held]
    keepers = _keepers(nodes, held, registry[registry["retired_run"].isna()])  # previous profile -> label
    claims = keepers.groupby(keepers.to_numpy()).size()
    anchor_labels, anchor_nodes = _anchors(nodes)
    # One claimant: the component keeps that id. None: a new id from its anchor.
    single = keepers[keepers.map(claims) == 1]
    profile_of_label = pd.Series(nodes.previous_ids[single.index.to_numpy()], index=single.to_numpy(), dtype=object)
    unclaimed = ~np.isin(anchor_labels, keepers.to_numpy())
    anchors = nodes.names(anchor_nodes[unclaimed])
    fresh = pd.Series([new_id(t, v) for t, v in anchors], index=anchor_labels[unclaimed], dtype=object)
    # Several claimants: the profiles merged; the oldest id survives (issued first, then founded
    # by the identifier seen first).
    created = registry.set_index("profile_id")["created_at"]
    anchor_node = nodes.anchor_of[nodes.eligible[nodes.anchor_of.to_numpy()]]
    log: list[tuple[str, pd.Timestamp, str, str, str, str]] = []
    retired: dict[str, str] = {}
    merged: dict[int, str] = {}
    contested = keepers[keepers.map(claims) > 1]
    for label_, claimants in contested.groupby(contested.to_numpy()):
        survivor, *others = sorted(
            nodes.previous_ids[claimants.index.to_numpy()],
            key=lambda p: (created.get(p, now), _seen(nodes, anchor_node.get(p)), p),
        )
        merged[int(label_)] = survivor
        for other in others:
            retired[other] = survivor
            log.append((run_id, now, "merged", survivor, other, cause.get(label_, "")))
    found = [series for series in (profile_of_label, fresh, pd.Series(merged, dtype=object)) if len(series)]
    profile_of_label = pd.concat(found).rename("profile_id") if found else pd.Series(dtype=object)
    # A part of a last-run profile that did not keep its id split from it.
    parts = pd.DataFrame({"label": held_label, "profile": held_profile}).drop_duplicates()
    parts = parts[parts["label"].to_numpy() != keepers.reindex(parts["profile"]).to_numpy()]
    for label_, old in zip(parts["label"].tolist(), parts["profile"].tolist(), strict=True):
        log.append((run_id, now, "split", nodes.previous_ids[old], profile_of_label[label_], cause.get(label_, "")))
    new_rows = pd.DataFrame({
        "profile_id": fresh.to_numpy(), "anchor_type": [t for t, _ in anchors], "anchor_value": [v for _, v in anchors],
        "created_at": now, "created_run": run_id,
    })
    return Assignment(profile_of_label, _registry(registry, new_rows, retired, run_id),
                      pd.DataFrame(log, columns=LOG_COLUMNS))


def _seen(nodes: Graph, anchor: int | None) -> int:
    """When a profile's anchor was first seen, or never (the largest) when it is not this run's node."""
    return NEVER_SEEN if anchor is None else int(nodes.first_seen[anchor])


def _keepers(nodes: Graph, held: np.ndarray, live: pd.DataFrame) -> pd.Series:
    """For each previous id (by its index into `previous_ids`): the component that keeps it (the one holding its
    anchor, else most of it), as a Series of labels."""
    frame = pd.DataFrame({"profile": nodes.previous[held], "label": nodes.labels[held], "node": held})
    live_anchors = nodes.anchor_of[nodes.anchor_of.index.isin(live["profile_id"])]
    anchor_of_profile = live_anchors.reindex(nodes.previous_ids)  # NaN where none
    frame["has_anchor"] = frame["node"].to_numpy() == anchor_of_profile.to_numpy()[frame["profile"].to_numpy()]
    counts = frame.groupby(["profile", "label"]).agg(nodes=("node", "size"), has_anchor=("has_anchor", "any"))
    counts = counts.reset_index().sort_values(["profile", "has_anchor", "nodes", "label"],
                                              ascending=[True, False, False, True])
    first = counts.drop_duplicates("profile")
    return pd.Series(first["label"].to_numpy(), index=first["profile"].to_numpy())


def _anchors(nodes: Graph) -> tuple[np.ndarray, np.ndarray]:
    """Per component, the node that founds a new profile: the first seen, then the strongest, then the first by type
    and value (the nodes' order); as (labels, nodes)."""
    eligible = np.flatnonzero(nodes.eligible)
    ordered = eligible[np.lexsort((eligible, nodes.priority[eligible], nodes.first_seen[eligible],
                                   nodes.labels[eligible]))]
    labels = nodes.labels[ordered]
    first = np.ones(len(ordered), dtype=bool)
    first[1:] = labels[1:] != labels[:-1]
    return labels[first], ordered[first]


def _registry(registry: pd.DataFrame, new_rows: pd.DataFrame, retired: dict[str, str], run_id: str) -> pd.DataFrame:
    # An id whose anchor founds a profile again (after a split) comes back to life, as old as it was.
    revived = registry.set_index("profile_id")["created_at"]
    new_rows = new_rows.assign(
        created_at=new_rows["profile_id"].map(revived).fillna(new_rows["created_at"])
    )
    registry = registry[~registry["profile_id"].isin(new_rows["profile_id"])]
    registry = pd.concat([registry, new_rows.reindex(columns=REGISTRY_COLUMNS)], ignore_index=True)
    mask = registry["profile_id"].isin(retired)
    registry.loc[mask, "merged_into"] = registry.loc[mask, "profile_id"].map(retired)
    registry.loc[mask, "retired_run"] = run_id
    return registry

"""Stable profile ids across runs, with every merge and split logged.

A component keeps the id its nodes held last run. When components of two profiles merge,
the older id survives and the other is retired into it. When a profile splits, the part
holding the node that founded it (its anchor) keeps the id and the other parts get new
ones. A new profile's id derives from its anchor node, so a rerun names it the same way.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import pandas as pd

REGISTRY_COLUMNS = ["profile_id", "anchor_type", "anchor_value", "created_at", "created_run", "merged_into",
                    "retired_run"]
LOG_COLUMNS = ["run_id", "logged_at", "action", "profile_id", "other_profile_id", "cause"]


@dataclass(frozen=True)
class Assignment:
    profile_of_label: pd.Series  # component label -> profile id
    registry: pd.DataFrame  # REGISTRY_COLUMNS, every id ever issued
    log: pd.DataFrame  # LOG_COLUMNS: this run's merges and splits


def new_id(id_type: str, value: str) -> str:
    return "prof_" + hashlib.sha256(f"{id_type}:{value}".encode()).hexdigest()[:16]


def assign(
    nodes: pd.DataFrame, previous: pd.DataFrame, registry: pd.DataFrame, cause: pd.Series, run_id: str,
    now: pd.Timestamp,
) -> Assignment:
    """Profile ids for this run's components.

    `nodes`: id_type, value, first_seen, priority, label. `previous`: id_type, value, profile_id as
    last run left them. `registry`: REGISTRY_COLUMNS. `cause`: per label, why its profile changed."""
    held = nodes.merge(previous, on=["id_type", "value"], how="inner")[["label", "profile_id", "id_type", "value"]]
    keepers = _keepers(held, registry[registry["retired_run"].isna()])
    claims = keepers.groupby("label")["profile_id"]
    anchors = _anchors(nodes)
    # One claimant: the component keeps that id. None: a new id from its anchor.
    profile_of_label = claims.first()[claims.size() == 1]
    unclaimed = anchors[~anchors.index.isin(keepers["label"])]
    fresh = pd.Series(
        [new_id(t, v) for t, v in zip(unclaimed["id_type"], unclaimed["value"], strict=True)], index=unclaimed.index
    )
    # Several claimants: the profiles merged; the oldest id survives (issued first, then founded
    # by the identifier seen first).
    issued = registry.set_index("profile_id")
    anchor_seen = registry.merge(
        nodes[["id_type", "value", "first_seen"]],
        left_on=["anchor_type", "anchor_value"], right_on=["id_type", "value"], how="left",
    ).set_index("profile_id")["first_seen"]
    log: list[tuple[str, pd.Timestamp, str, str, str, str]] = []
    retired: dict[str, str] = {}
    merged: dict[int, str] = {}
    contested = keepers[keepers["label"].map(claims.size()) > 1]
    for label_, claimants in contested.groupby("label")["profile_id"]:
        survivor, *others = sorted(
            claimants, key=lambda p: (issued["created_at"].get(p, now), _or_max(anchor_seen.get(p)), p)
        )
        merged[label_] = survivor
        for other in others:
            retired[other] = survivor
            log.append((run_id, now, "merged", survivor, other, cause.get(label_, "")))
    found = [series for series in (profile_of_label, fresh, pd.Series(merged, dtype=object)) if len(series)]
    profile_of_label = pd.concat(found).rename("profile_id") if found else pd.Series(dtype=object)
    # A part of a last-run profile that did not keep its id split from it.
    parts = held[["label", "profile_id"]].drop_duplicates()
    parts = parts[parts["label"] != parts["profile_id"].map(keepers.set_index("profile_id")["label"])]
    for label_, old in zip(parts["label"], parts["profile_id"], strict=True):
        log.append((run_id, now, "split", old, profile_of_label[label_], cause.get(label_, "")))
    new_rows = pd.DataFrame({
        "profile_id": fresh.to_numpy(), "anchor_type": unclaimed["id_type"].to_numpy(),
        "anchor_value": unclaimed["value"].to_numpy(), "created_at": now, "created_run": run_id,
    })
    return Assignment(profile_of_label, _registry(registry, new_rows, retired, run_id),
                      pd.DataFrame(log, columns=LOG_COLUMNS))


def _or_max(seen: pd.Timestamp | None) -> pd.Timestamp:
    return pd.Timestamp.max.tz_localize("UTC") if seen is None or pd.isna(seen) else seen


def _keepers(held: pd.DataFrame, live: pd.DataFrame) -> pd.DataFrame:
    """For each previous id: the component that keeps it (the one holding its anchor, else most of it)."""
    counts = held.groupby(["profile_id", "label"]).size().rename("nodes").reset_index()
    anchor_rows = held.merge(
        live[["profile_id", "anchor_type", "anchor_value"]],
        left_on=["profile_id", "id_type", "value"], right_on=["profile_id", "anchor_type", "anchor_value"],
    )[["profile_id", "label"]].assign(has_anchor=1)
    counts = counts.merge(anchor_rows, on=["profile_id", "label"], how="left").fillna({"has_anchor": 0})
    counts = counts.sort_values(["profile_id", "has_anchor", "nodes", "label"], ascending=[True, False, False, True])
    return counts.drop_duplicates("profile_id")[["profile_id", "label"]]


def _anchors(nodes: pd.DataFrame) -> pd.DataFrame:
    """Per component, the node that founds a new profile: the first seen, then the strongest."""
    ordered = nodes.sort_values(["label", "first_seen", "priority", "id_type", "value"], na_position="last")
    return ordered.drop_duplicates("label").set_index("label")[["id_type", "value"]]


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

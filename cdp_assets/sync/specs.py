"""Syncs as data (`syncs.yaml`): which view goes to which destination, keyed how, mapped how, guarded how.

Each sync is validated on load against its view's policy and its destination's modes,
so a sync that names a column the view does not have, or a mode the destination cannot
do, fails before anything is sent.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from cdp_assets.identity import rules as identity_rules
from cdp_assets.views import policy

NAME = re.compile(r"^[a-z_][a-z0-9_]*$")
FIELD = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$")
PARAM = re.compile(r"^[a-z][a-z0-9_]*$")  # names starting with _ are the model builder's own
SCHEDULES = ("hourly", "nightly")
# What a sync's expressions may not read: the clock, or another table. A sync maps its view's row as the row stands,
# so that a plan of the profiles the view logged as changed (plan.py) sends what a plan of every row would.
NOT_THE_ROW = re.compile(r"\b(as_of|now|current_date|current_time|current_timestamp|today|get_current_time|"
                         r"random|uuid|gen_random_uuid|select)\b", re.IGNORECASE)


@dataclass(frozen=True)
class CircuitBreaker:
    """When the identity layer looks broken, no sync sends anything."""

    max_profile_change_share: float  # profile count moved more than this since the sync's last run
    max_profile_records: int  # the largest profile holds more person records than this


@dataclass(frozen=True)
class SyncSpec:
    name: str
    description: str
    view: str
    destination: str  # a key of resources.DESTINATIONS
    mode: str
    key: str  # the view column naming the record in the destination
    fields: dict[str, str]  # destination field -> view column or SQL expression over the view's columns
    purpose: str | None = None  # a consent purpose every synced person must allow
    # The identity identifier type the key is (email): a value identity judged shared (identity.shared_values, a
    # team's mailbox) names no one person, so a row keyed by it is left out, with the reason, not sent; so is a row
    # keyed by a value identity placed in another profile whose own row carries it.
    key_type: str | None = None
    where: str = "true"  # a SQL condition over the view's columns, trusted configuration like a dbt model
    params: dict[str, Any] = field(default_factory=dict)  # `$name` values for `where` and `fields`
    required: tuple[str, ...] = ()  # fields that must not be null; rows without them are invalid
    tracks: tuple[str, ...] = ()  # view columns naming the destination record a row lands on, compared, not sent
    options_env: dict[str, str] = field(default_factory=dict)  # destination option -> variable holding it
    schedule: str = "hourly"
    max_removal_share: float = 0.2

    @property
    def view_table(self) -> str:
        return f"views.{self.view}"

    def options(self) -> dict[str, str]:
        """Destination options from the environment (an audience id, say); a missing one is a clear error."""
        missing = [env for env in self.options_env.values() if not os.getenv(env)]
        if missing:
            raise ValueError(f"sync {self.name}: set {', '.join(missing)} (see README, Syncs)")
        return {option: os.environ[env] for option, env in self.options_env.items()}


@dataclass(frozen=True)
class SyncRules:
    breaker: CircuitBreaker
    syncs: dict[str, SyncSpec]


def parse(data: dict[str, Any], destination_modes: dict[str, frozenset[str]]) -> SyncRules:
    defaults = data.get("defaults", {})
    breaker = CircuitBreaker(**data["circuit_breaker"])
    views = policy.load().views
    syncs = {}
    for name, raw in data["syncs"].items():
        spec = SyncSpec(
            name=name,
            description=raw["description"],
            view=raw["view"],
            destination=raw["destination"],
            mode=raw["mode"],
            key=raw["key"],
            key_type=raw.get("key_type"),
            fields=dict(raw["fields"]),
            purpose=raw.get("purpose"),
            where=raw.get("where", "true"),
            params=dict(raw.get("params", {})),
            required=tuple(raw.get("required", ())),
            tracks=tuple(raw.get("tracks", ())),
            options_env=dict(raw.get("options_env", {})),
            schedule=raw.get("schedule", defaults.get("schedule", "hourly")),
            max_removal_share=float(raw.get("max_removal_share", defaults.get("max_removal_share", 0.2))),
        )
        validate(spec, views, destination_modes)
        syncs[name] = spec
    return SyncRules(breaker, syncs)


def validate(spec: SyncSpec, views: dict[str, policy.ViewPolicy], destination_modes: dict[str, frozenset[str]]) -> None:
    problems = []
    if not NAME.match(spec.name):
        problems.append("the name is not a plain identifier")
    view = views.get(spec.view)
    if view is None:
        problems.append(f"view {spec.view!r} is not in views/policy.yaml")
    elif spec.key not in view.columns:
        problems.append(f"key {spec.key!r} is not a column of {spec.view}")
    elif (spec.purpose or spec.key_type) and "profile_id" not in view.columns:
        problems.append(f"a consent purpose or a key_type needs a profile_id column, which {spec.view} lacks")
    if view is not None:
        problems += [f"tracked column {c!r} is not a column of {spec.view}" for c in spec.tracks
                     if c not in view.columns]  # fmt: skip
    modes = destination_modes.get(spec.destination)
    if modes is None:
        problems.append(f"unknown destination {spec.destination!r}")
    elif spec.mode not in modes:
        problems.append(f"{spec.destination} cannot {spec.mode} (it can {', '.join(sorted(modes))})")
    if spec.key_type is not None and spec.key_type not in identity_rules.load().types:
        problems.append(f"key_type {spec.key_type!r} is not an identifier type of identity/rules.yaml")
    problems += [f"field {name!r} is not a destination field name" for name in spec.fields if not FIELD.match(name)]
    problems += [f"required field {name!r} is not mapped" for name in spec.required if name not in spec.fields]
    problems += [f"parameter {name!r} is not a plain identifier" for name in spec.params if not PARAM.match(name)]
    problems += [f"{expression!r} reads the clock or another table (a sync maps its view's row: put it in the view)"
                 for expression in (*spec.fields.values(), spec.where, *spec.tracks) if NOT_THE_ROW.search(expression)]
    if spec.schedule not in SCHEDULES:
        problems.append(f"schedule must be one of {', '.join(SCHEDULES)}")
    if not 0 < spec.max_removal_share <= 1:
        problems.append("max_removal_share must be in (0, 1]")
    if problems:
        raise ValueError(f"syncs.yaml, sync {spec.name}: " + "; ".join(problems))


@cache
def load(path: Path = Path(__file__).parent / "syncs.yaml") -> SyncRules:
    from resources import DESTINATIONS

    return parse(yaml.safe_load(path.read_text()), {name: cls.modes for name, cls in DESTINATIONS.items()})

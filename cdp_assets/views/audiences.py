"""Marketing audiences as data (`audiences.yaml`), turned into one membership query by a small engine."""

from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import yaml

MEMBERS_SQL = "CREATE OR REPLACE TEMP TABLE _audience_members AS\n{branches}"
PLAIN = "SELECT profile_id, $audience_{n} AS audience, $purpose_{n} AS purpose FROM _audience_facts WHERE ({when})"
EACH = (
    "SELECT profile_id, $audience_{n} || ':' || item AS audience, $purpose_{n} AS purpose"
    " FROM (SELECT *, unnest({each}) AS item FROM _audience_facts) WHERE ({when})"
)


@dataclass(frozen=True)
class Audience:
    name: str
    description: str
    purpose: str
    when: str = "true"  # a SQL condition over _audience_facts, trusted configuration like a dbt model
    each: str | None = None  # a list column: one audience per element
    params: dict[str, Any] = field(default_factory=dict)


@cache
def load(path: Path = Path(__file__).parent / "audiences.yaml") -> tuple[Audience, ...]:
    data = yaml.safe_load(path.read_text())
    return tuple(Audience(name=name, **spec) for name, spec in data["audiences"].items())


def members_sql(audiences: tuple[Audience, ...], purposes: set[str]) -> tuple[str, dict[str, Any]]:
    """The query filling _audience_members, and its parameters: names, purposes and each audience's params."""
    branches, params = [], {}
    for n, audience in enumerate(audiences):
        if audience.purpose not in purposes:
            raise ValueError(f"audiences.yaml: {audience.name} serves unknown purpose {audience.purpose!r}")
        for key, value in audience.params.items():
            if key in params and params[key] != value:
                raise ValueError(f"audiences.yaml: parameter {key!r} has two values")
            params[key] = value
        params[f"audience_{n}"] = audience.name
        params[f"purpose_{n}"] = audience.purpose
        template = EACH if audience.each else PLAIN
        branches.append(template.format(n=n, when=audience.when, each=audience.each))
    return MEMBERS_SQL.format(branches="\nUNION ALL\n".join(branches)), params

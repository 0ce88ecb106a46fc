"""Marketing audiences as data (`audiences.yaml`), turned into one membership query by a small engine."""

import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import yaml

# The tables are the view build's, named by it: the facts each condition reads, and the members it makes.
MEMBERS_SQL = "CREATE OR REPLACE TEMP TABLE {members} AS\n{branches}"
PLAIN = "SELECT profile_id, $audience_{n} AS audience, $purpose_{n} AS purpose FROM {facts} WHERE ({when})"
EACH = (
    "SELECT profile_id, $audience_{n} || ':' || item AS audience, $purpose_{n} AS purpose"
    " FROM (SELECT *, unnest({each}) AS item FROM {facts}) WHERE ({when})"
)
# The people whose membership the clock may have changed between two builds: a clock's moment between theirs. Every
# time a condition compares with the moment is the lifecycle's, as is the moment itself.
CLOCKED_SQL = (
    "SELECT profile_id FROM identity.person_lifecycle"
    " WHERE ({clock}) BETWEEN least($since, $as_of) AND greatest($since, $as_of)"
)
READS_THE_MOMENT = re.compile(r"\bas_of\b", re.IGNORECASE)
# The wall clock: a view's rows are judged by the lifecycle's moment, which every team view shares.
READS_THE_WALL_CLOCK = re.compile(r"\b(now|current_timestamp|current_date|current_time|today|get_current_\w+)\b",
                                  re.IGNORECASE)


@dataclass(frozen=True)
class Audience:
    name: str
    description: str
    purpose: str
    when: str = "true"  # a SQL condition over the facts of each person, trusted configuration like a dbt model
    each: str | None = None  # a list column: one audience per element
    params: dict[str, Any] = field(default_factory=dict)
    # When a condition reading `as_of` may change its verdict as time passes: the moment, over the lifecycle's
    # columns. A build following changes makes again the people a clock's moment passed since the last build.
    clock: str | None = None


@cache
def load(path: Path = Path(__file__).parent / "audiences.yaml") -> tuple[Audience, ...]:
    data = yaml.safe_load(path.read_text())
    loaded = tuple(Audience(name=name, **spec) for name, spec in data["audiences"].items())
    for audience in loaded:
        condition = f"{audience.when} {audience.each or ''}"
        if READS_THE_WALL_CLOCK.search(condition):
            raise ValueError(f"audiences.yaml: {audience.name} reads the wall clock; compare with as_of")
        if READS_THE_MOMENT.search(condition) and audience.clock is None:
            raise ValueError(f"audiences.yaml: {audience.name} compares with as_of, so it needs a `clock` saying "
                             "when time passing changes who is in it")
    return loaded


def _params(audiences: tuple[Audience, ...]) -> dict[str, Any]:
    """Every audience's own parameters, which share one namespace."""
    params: dict[str, Any] = {}
    for audience in audiences:
        for key, value in audience.params.items():
            if key in params and params[key] != value:
                raise ValueError(f"audiences.yaml: parameter {key!r} has two values")
            params[key] = value
    return params


def members_sql(audiences: tuple[Audience, ...], purposes: set[str], facts: str,
                members: str) -> tuple[str, dict[str, Any]]:
    """The query making TEMP `members` from the table `facts`, and its parameters: names, purposes and each
    audience's params."""
    branches, params = [], _params(audiences)
    for n, audience in enumerate(audiences):
        if audience.purpose not in purposes:
            raise ValueError(f"audiences.yaml: {audience.name} serves unknown purpose {audience.purpose!r}")
        params[f"audience_{n}"] = audience.name
        params[f"purpose_{n}"] = audience.purpose
        template = EACH if audience.each else PLAIN
        branches.append(template.format(n=n, when=audience.when, each=audience.each, facts=facts))
    return MEMBERS_SQL.format(members=members, branches="\nUNION ALL\n".join(branches)), params


def clocked_sql(audiences: tuple[Audience, ...]) -> tuple[str, dict[str, Any]] | None:
    """A query of the profiles with a clock's moment between `$since` and `$as_of`, and the audiences' parameters;
    None when no audience has a clock."""
    clocks = [CLOCKED_SQL.format(clock=a.clock) for a in audiences if a.clock is not None]
    return ("\nUNION\n".join(clocks), _params(audiences)) if clocks else None

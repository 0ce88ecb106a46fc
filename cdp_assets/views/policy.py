"""The view policy (`policy.yaml`) as typed data, validated on load, and the governance checks it drives."""

import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import duckdb
import yaml

NAME = re.compile(r"^[a-z_][a-z0-9_]*$")  # view and column names are SQL identifiers built into check queries
DIRECT_IDENTIFIER = "direct_identifier"  # the class that names or reaches one person by itself


def quoted(name: str) -> str:
    """A view or column name as a quoted SQL identifier; only plain names, as the policy validates them, pass."""
    if not NAME.match(name):
        raise ValueError(f"{name!r} is not a plain identifier")
    return f'"{name}"'


@dataclass(frozen=True)
class Team:
    name: str
    group: str
    owner: str
    refresh: str = "hourly"  # or nightly: the path that rebuilds the team's views


@dataclass(frozen=True)
class ViewPolicy:
    name: str
    team: Team
    grain: str
    audience: str  # who the view is for
    row: str
    allows: tuple[str, ...]
    columns: dict[str, str]  # column -> personal-data class
    key: tuple[str, ...]  # the columns that tell one row from another, in the order rows are listed
    requires: str | None = None  # a purpose every row's person must allow
    purpose_column: str | None = None  # a column naming the purpose each row is used for
    purposes_column: str | None = None  # a column listing the purposes each row may be used for

    @property
    def table(self) -> str:
        return f"views.{self.name}"

    @property
    def pseudonymous(self) -> bool:
        """No column may name or reach a person by itself."""
        return DIRECT_IDENTIFIER not in self.allows

    @property
    def shareable_columns(self) -> tuple[str, ...]:
        """Columns listed with a class below direct identifier: all a sample of rows may show."""
        return tuple(name for name, cls in self.columns.items() if cls != DIRECT_IDENTIFIER)

    def description(self, freshness: str) -> str:
        present = sorted({c for c in self.columns.values() if c != "none"}) or ["none"]
        consent = ""
        if self.requires:
            consent = f" Holds only people who allow {self.requires}."
        elif self.purpose_column:
            consent = f" Holds a person only for a purpose they allow (`{self.purpose_column}`)."
        return (
            f"For {self.audience}. One row: {self.row}. Fresh: {freshness} Grain: {self.grain}. "
            f"Personal data: {', '.join(c.replace('_', ' ') for c in present)}.{consent} "
            "Columns and classes: `cdp_assets/views/policy.yaml`."
        )


@dataclass(frozen=True)
class Policy:
    classes: tuple[str, ...]
    freshness: dict[str, str]  # refresh -> what a view's description says of its freshness
    reporting_currency: str
    rates: dict[str, float]
    default_territory: str
    territories: dict[str, str]
    views: dict[str, ViewPolicy]


def parse(data: dict) -> Policy:
    classes = tuple(data["classes"])
    teams = {name: Team(name, t["group"], t["owner"], t.get("refresh", "hourly")) for name, t in data["teams"].items()}
    views = {}
    for name, spec in data["views"].items():
        view = ViewPolicy(
            name=name,
            team=teams[spec["team"]],
            grain=spec["grain"],
            audience=spec["for"],
            row=spec["row"],
            allows=tuple(spec["allows"]),
            columns=dict(spec["columns"]),
            key=tuple(spec["key"]),
            requires=spec.get("requires"),
            purpose_column=spec.get("purpose_column"),
            purposes_column=spec.get("purposes_column"),
        )
        validate(view, classes)
        views[name] = view
    return Policy(
        classes=classes,
        freshness=dict(data["freshness"]),
        reporting_currency=data["reporting"]["currency"],
        rates={currency: float(rate) for currency, rate in data["reporting"]["rates"].items()},
        default_territory=data["territories"]["default"],
        territories=dict(data["territories"]["countries"]),
        views=views,
    )


def validate(view: ViewPolicy, classes: tuple[str, ...]) -> None:
    """A policy that contradicts itself is an error at load time, before any view is built."""
    problems = [f"unknown class {c!r}" for c in {*view.allows, *view.columns.values()} - set(classes)]
    problems += [f"{column} is {cls}, which the view does not allow" for column, cls in view.columns.items()
                 if cls not in view.allows]
    problems += [f"key column {k!r} is not among the columns" for k in view.key if k not in view.columns]
    if not view.key:
        problems.append("a view needs a key")
    names = [view.name, *view.columns]
    problems += [f"{name!r} is not a plain identifier" for name in names if not NAME.match(name)]
    for key in (view.purpose_column, view.purposes_column):
        if key and key not in view.columns:
            problems.append(f"consent column {key!r} is not among the columns")
    if (view.requires or view.purpose_column or view.purposes_column) and "profile_id" not in view.columns:
        problems.append("a view with consent rules needs a profile_id column")
    if problems:
        raise ValueError(f"policy.yaml, view {view.name}: " + "; ".join(problems))


@cache
def load(path: Path = Path(__file__).parent / "policy.yaml") -> Policy:
    return parse(yaml.safe_load(path.read_text()))


def disallowed_columns(conn: duckdb.DuckDBPyConnection, view: ViewPolicy) -> list[str]:
    """Columns the view's table holds that its policy does not list, or lists with a class it does not allow."""
    actual = conn.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = 'views' AND table_name = $name"
        " ORDER BY ordinal_position",
        {"name": view.name},
    ).fetchall()
    return [c for (c,) in actual if view.columns.get(c) not in view.allows]


def consent_violations(conn: duckdb.DuckDBPyConnection, view: ViewPolicy) -> tuple[int, list[str]]:
    """Rows used for a purpose their person has not allowed (or withdrawn): how many, and a few profile ids."""
    allowed = (
        "EXISTS (SELECT 1 FROM privacy.consent c WHERE c.profile_id = u.profile_id AND c.purpose = u.purpose"
        " AND c.allowed)"
    )
    uses, params = [], {}
    if view.requires:
        uses.append(f"SELECT profile_id, $required AS purpose FROM {view.table}")
        params["required"] = view.requires
    if view.purpose_column:
        uses.append(f"SELECT profile_id, {view.purpose_column} AS purpose FROM {view.table}")
    if view.purposes_column:
        uses.append(f"SELECT profile_id, unnest({view.purposes_column}) AS purpose FROM {view.table}")
    if not uses:
        return 0, []
    rows = conn.execute(
        f"SELECT count(*), list(DISTINCT u.profile_id)[:5] FROM ({' UNION ALL '.join(uses)}) u WHERE NOT {allowed}",
        params,
    ).fetchall()
    count, sample = rows[0]
    return int(count), sorted(sample or [])

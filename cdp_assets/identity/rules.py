"""The identity rules (`rules.yaml`) as typed data for the engines that apply them."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import sqlglot
import yaml
from sqlglot import exp

RULES_FILE = Path(__file__).with_name("rules.yaml")


@dataclass(frozen=True)
class IdentifierType:
    name: str
    priority: int  # 1 is the strongest; record ids are 0
    limit: int | None = None  # distinct values one profile may hold
    record_of: str | None = None  # the stream whose record ids this type names


@dataclass(frozen=True)
class IdentifierSource:
    """One staging table and the identifiers its columns carry."""

    stream: str
    table: str
    key: str
    observed_at: str
    identifiers: dict[str, str]  # identifier type -> column
    record_type: str | None = None
    phone_region: str | None = None  # column with an ISO country code or a locale
    person: dict[str, str] = field(default_factory=dict)  # person field -> column or SQL expression
    # The staging tables its person expressions read besides its own (a Stripe customer's name is a company's when
    # it names a HubSpot company), found in the SQL rather than listed beside it: the graph follows their changes.
    person_reads: frozenset[str] = field(init=False)

    def __post_init__(self) -> None:
        reads: set[str] = set()
        for name, expression in self.person.items():
            try:
                parsed = sqlglot.parse_one(f"SELECT {expression}", dialect="duckdb")
            except sqlglot.errors.ParseError as error:
                raise ValueError(f"{self.stream}: person field {name} cannot be read: {error}") from error
            reads |= {f"{table.db}.{table.name}".lower() for table in parsed.find_all(exp.Table)}
        reads -= {self.table}
        if outside := sorted(table for table in reads if not table.startswith("staging.")):
            raise ValueError(f"{self.stream}: person fields may read staging tables only, not {outside}")
        object.__setattr__(self, "person_reads", frozenset(reads))


@dataclass(frozen=True)
class CanonicalRule:
    """How a provider reads a local part: which parts it ignores, and its main domain."""

    dots: bool = False
    plus: bool = False
    hyphen: bool = False
    domain: str | None = None


@dataclass(frozen=True)
class AgreementRule:
    """Survivorship: a value most live records of a profile share beats the trusted source's near-spelling of it."""

    traits: tuple[str, ...]
    min_records: int
    max_edits: int
    min_length: int


@dataclass(frozen=True)
class MatchingRules:
    """The probabilistic matcher as data (comparisons.py turns it into Splink's): comparisons with their levels,
    the OR-ed blocking rules scoring pairs, and the blocking rules of the EM sessions training m."""

    comparisons: tuple[dict[str, Any], ...]
    blocking: tuple[list[str] | str, ...]  # fields or expressions equal on both sides, or an SQL condition
    training: tuple[list[str] | str, ...]


@dataclass(frozen=True)
class SharedRules:
    """When an identifier value is shared by several people (rules.yaml `shared_values`; shared.py applies it)."""

    types: tuple[str, ...] = ()  # identifier types a value of which may be shared
    role_mailboxes: tuple[str, ...] = ()  # email local parts naming a team's mailbox
    names_alike_at: float | None = None  # Jaro-Winkler of two given names at or above which they may be one
    date_max_edits: int | None = None  # typed digits two dates of birth of one person may differ by
    device_types: tuple[str, ...] = ()  # types shared when seen with more than one `login`
    login: str | None = None


@dataclass(frozen=True)
class Rules:
    types: dict[str, IdentifierType]
    sources: tuple[IdentifierSource, ...]
    phone_regions: tuple[str, ...]
    blocked_exact: frozenset[str]
    blocked_patterns: tuple[re.Pattern[str], ...]
    canonical: dict[str, CanonicalRule]
    never_link: tuple[tuple[str, str | None], ...]  # ("type:value", "type:value" or None)
    merge_at: float
    review_at: float
    trusted_streams: tuple[str, ...]
    decay_days: int
    agreement: AgreementRule
    matcher: MatchingRules
    shared: SharedRules = SharedRules()
    limits: dict[str, int] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "limits", {name: t.limit for name, t in self.types.items() if t.limit is not None}
        )

    def is_blocked(self, value: str) -> bool:
        return value in self.blocked_exact or any(p.search(value) for p in self.blocked_patterns)

    @property
    def person_streams(self) -> list[str]:
        """Streams whose records describe a person (they have a record type)."""
        return [s.stream for s in self.sources if s.record_type]

    @property
    def person_tables(self) -> list[str]:
        """The staging tables of the streams whose records describe a person, which the graph reads as records."""
        return [s.table for s in self.sources if s.record_type]

    @property
    def person_read_entities(self) -> dict[str, list[str]]:
        """Per staging entity its person fields read besides their own table (`IdentifierSource.person_reads`),
        the streams reading it: the graph follows their changes and declares them as its dependencies."""
        read_by: dict[str, list[str]] = {}
        for source in self.sources:
            for table in sorted(source.person_reads):
                read_by.setdefault(table.removeprefix("staging."), []).append(source.stream)
        return read_by

    def record_type(self, stream: str) -> str | None:
        return next((s.record_type for s in self.sources if s.stream == stream), None)


def parse(document: dict[str, Any]) -> Rules:
    matching, agreement = document["matching"], document["survivorship"]["agreement"]
    never = tuple(
        (entry["a"], entry.get("b")) for entry in document.get("never_link") or ()
    )
    shared = document.get("shared_values") or {}
    disagree, devices = shared.get("disagree") or {}, shared.get("devices") or {}
    return Rules(
        types={name: IdentifierType(name, **spec) for name, spec in document["identifier_types"].items()},
        sources=tuple(IdentifierSource(**spec) for spec in document["sources"]),
        phone_regions=tuple(document["phone_regions"]),
        blocked_exact=frozenset(v.lower() for v in document["blocked"]["exact"]),
        blocked_patterns=tuple(re.compile(p) for p in document["blocked"]["patterns"]),
        canonical={domain: CanonicalRule(**spec) for domain, spec in document["email_canonical"].items()},
        never_link=never,
        merge_at=float(matching["merge_at"]),
        review_at=float(matching["review_at"]),
        trusted_streams=tuple(document["health"]["trusted_streams"]),
        decay_days=int(document["health"]["decay_days"]),
        agreement=AgreementRule(**{**agreement, "traits": tuple(agreement["traits"])}),
        matcher=MatchingRules(
            tuple(matching["comparisons"]), tuple(matching["blocking"]), tuple(matching["training"])
        ),
        shared=SharedRules(
            types=tuple(shared.get("types") or ()),
            role_mailboxes=tuple(shared.get("role_mailboxes") or ()),
            names_alike_at=float(disagree["given_name"]["alike_at"]) if "given_name" in disagree else None,
            date_max_edits=int(disagree["date_of_birth"]["max_edits"]) if "date_of_birth" in disagree else None,
            device_types=tuple(devices.get("types") or ()),
            login=devices.get("login"),
        ),
    )


@cache
def load(path: Path = RULES_FILE) -> Rules:
    return parse(yaml.safe_load(path.read_text()))

"""The identity rules (`rules.yaml`) as typed data for the engines that apply them."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import yaml

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

    def record_type(self, stream: str) -> str | None:
        return next((s.record_type for s in self.sources if s.stream == stream), None)


def parse(document: dict[str, Any]) -> Rules:
    matching, agreement = document["matching"], document["survivorship"]["agreement"]
    never = tuple(
        (entry["a"], entry.get("b")) for entry in document.get("never_link") or ()
    )
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
    )


@cache
def load(path: Path = RULES_FILE) -> Rules:
    return parse(yaml.safe_load(path.read_text()))

"""How hard a world is: every rate of its hard cases, one documented setting each (docs/sandbox-world.md).

The defaults make the default world; ``held_out()`` is another world, with other rates, that identity
thresholds are chosen on, so they are never tuned on the world they are scored on. The rates follow what
real customer data shows (role mailboxes on B2B CRM records, a few per cent of mistyped addresses, people
moving about one in ten a year); the matcher must never read them from here.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any


@dataclass(frozen=True)
class Hardness:
    # Kept from the first world (same defaults, so its people stay who they were).
    households: float = 0.03  # chance a person joins the previous one's household (shared device or login)
    shared_login_every: int = 3  # one household in this many is a couple sharing one product login
    job_change: float = 0.06  # share of B2B people with history who came from another company

    # Shared identifiers that belong to no one person.
    role_mailbox: float = 0.03  # share of B2B people whose CRM, billing or support record shows info@/sales@...
    household_phone: float = 0.5  # share of households whose records show one phone for both members

    # How addresses are typed.
    email_typo: float = 0.015  # share of email-bearing records with a mistyped domain or two swapped letters
    plus_address: float = 0.015  # share of email-bearing records with a +tag, or Gmail dots moved

    # How names are typed.
    name_swap: float = 0.015  # share of named records with first and last name exchanged
    nickname: float = 0.15  # share of people with a known nickname (Bill for William) who use it on some records
    initial: float = 0.015  # share of named records giving only the first name's initial ("J." or "J")
    decomposed: float = 0.15  # share of records of an accented name written in decomposed Unicode (NFD)
    accents_dropped: float = 0.25  # share of records of an accented name written without its accents

    # Who people are and where they live.
    moved: float = 0.06  # share of people with two or more located records whose city and address changed
    common_name: float = 0.01  # share of people who share first name, last name and city with another person
    two_accounts: float = 0.03  # share of people with a second product login or a second CRM contact

    # Person fields and their gaps and errors.
    birth_date_known: float = 0.55  # share of HubSpot contacts carrying date_of_birth
    birth_date_error: float = 0.04  # share of those with day and month swapped or one digit wrong
    address_known: float = 0.5  # share of HubSpot contacts and Klaviyo profiles with street and postcode
    stripe_address_missing: float = 0.1  # share of Stripe customers without line1 and postal_code
    address_error: float = 0.05  # share of given addresses abbreviated, recased, or with a postcode digit wrong

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Hardness:
        """Settings from a JSON object; unknown names are refused (a misspelt setting must not go unnoticed)."""
        if not isinstance(values, dict):
            raise ValueError(f"hardness settings must be a JSON object of name: value, not {type(values).__name__}")
        known = {f.name: f.type for f in fields(cls)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ValueError(f"unknown hardness settings: {', '.join(unknown)}")
        for name, value in values.items():  # a truncated count or a boolean read as a rate must not go unnoticed
            if isinstance(value, bool) or not isinstance(value, int | float) or (known[name] == "int" and value % 1):
                raise ValueError(f"hardness setting {name} must be a {known[name]}, got {value!r}")
        return cls(**{name: (int if known[name] == "int" else float)(value) for name, value in values.items()})

    @classmethod
    def held_out(cls) -> Hardness:
        """The world thresholds are chosen on: some cases rarer, most more frequent than the default's."""
        return replace(
            cls(), households=0.04, shared_login_every=2, job_change=0.08, role_mailbox=0.05, household_phone=0.7,
            email_typo=0.025, plus_address=0.025, name_swap=0.025, nickname=0.25, initial=0.01, decomposed=0.25,
            accents_dropped=0.15, moved=0.1, common_name=0.02, two_accounts=0.02, birth_date_known=0.4,
            birth_date_error=0.06, address_known=0.35, stripe_address_missing=0.2, address_error=0.08,
        )

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if name == "shared_login_every":
                if value < 1:
                    raise ValueError("shared_login_every must be at least 1")
            elif not 0.0 <= value <= 1.0:
                raise ValueError(f"hardness {name} must be a share between 0 and 1, not {value}")

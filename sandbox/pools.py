"""Value pools drawn once from Faker, then sampled with ``random.Random``.

Faker costs tens of microseconds a call, too slow for a million people, so a world
draws names, places, job titles and sentences once per seed and samples them. The
pools are saved in the world's meta so churn never needs Faker.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

FIRST_NAMES = 300  # per country
LAST_NAMES = 400  # per country
PLACES = 120  # per country
TITLES = 250
SENTENCES = 300
PHRASES = 120


@dataclass(frozen=True)
class Country:
    """What differs by country: locale, currency, email providers, time zones."""

    code: str
    name: str
    faker_locale: str
    weight: float
    locale: str
    currency: str
    tlds: tuple[str, ...]
    suffixes: tuple[str, ...]
    providers: tuple[str, ...]
    timezones: tuple[tuple[str, str], ...]  # (IANA name for Klaviyo, Rails name for Zendesk)


COUNTRIES: tuple[Country, ...] = (
    Country("US", "United States", "en_US", 0.55, "en-US", "usd", ("com", "com", "io", "co"),
            ("Inc", "LLC", "Group", "Corp"), ("gmail.com", "yahoo.com", "outlook.com", "icloud.com", "aol.com"),
            (("America/New_York", "Eastern Time (US & Canada)"), ("America/Chicago", "Central Time (US & Canada)"),
             ("America/Denver", "Mountain Time (US & Canada)"),
             ("America/Los_Angeles", "Pacific Time (US & Canada)"))),
    Country("GB", "United Kingdom", "en_GB", 0.12, "en-GB", "gbp", ("co.uk", "com", "io"),
            ("Ltd", "PLC", "Group"), ("gmail.com", "hotmail.co.uk", "yahoo.co.uk", "btinternet.com"),
            (("Europe/London", "London"),)),
    Country("DE", "Germany", "de_DE", 0.13, "de-DE", "eur", ("de", "de", "com"),
            ("GmbH", "AG", "KG"), ("gmail.com", "web.de", "gmx.de", "t-online.de"),
            (("Europe/Berlin", "Berlin"),)),
    Country("FR", "France", "fr_FR", 0.12, "fr-FR", "eur", ("fr", "fr", "com"),
            ("SA", "SARL", "Groupe"), ("gmail.com", "orange.fr", "free.fr", "laposte.net"),
            (("Europe/Paris", "Paris"),)),
    Country("CA", "Canada", "en_CA", 0.08, "en-CA", "usd", ("ca", "com"),
            ("Inc", "Ltd"), ("gmail.com", "hotmail.com", "yahoo.ca", "rogers.com"),
            (("America/Toronto", "Eastern Time (US & Canada)"),
             ("America/Vancouver", "Pacific Time (US & Canada)"))),
)
BY_CODE = {country.code: country for country in COUNTRIES}
BY_NAME = {country.name: country for country in COUNTRIES}
JUNK_PROVIDERS = ("mailinator.com", "yopmail.com", "guerrillamail.com", "sharklasers.com")
INDUSTRIES = (
    "COMPUTER_SOFTWARE", "FINANCIAL_SERVICES", "RETAIL", "HOSPITAL_HEALTH_CARE", "MARKETING_AND_ADVERTISING",
    "CONSTRUCTION", "EDUCATION_MANAGEMENT", "LOGISTICS_AND_SUPPLY_CHAIN", "INFORMATION_TECHNOLOGY_AND_SERVICES",
    "MANUFACTURING", "REAL_ESTATE", "TELECOMMUNICATIONS", "NONPROFIT_ORGANIZATION_MANAGEMENT",
)


@lru_cache(maxsize=8192)
def slug(text: str) -> str:
    """ASCII lowercase letters only, for email local parts and domains (Müller -> muller); names repeat, so cached."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return "".join(ch for ch in ascii_text.lower() if ch.isalpha())


def draw_pools(seed: int) -> dict[str, Any]:
    """Draw every pool for a seed; returns plain JSON-able data."""
    from faker import Faker  # imported here: only a new build pays its import time

    countries: dict[str, Any] = {}
    for country in COUNTRIES:
        fake = Faker(country.faker_locale)
        fake.seed_instance(seed)
        region = _region_source(fake)
        countries[country.code] = {
            "first": _unique(fake.first_name, FIRST_NAMES),
            "last": _unique(fake.last_name, LAST_NAMES),
            "places": [
                [fake.city(), region() if region else None, fake.postcode(), fake.street_address()]
                for _ in range(PLACES)
            ],
        }
    fake = Faker("en_US")
    fake.seed_instance(seed)
    return {
        "countries": countries,
        "titles": _unique(fake.job, TITLES),
        "sentences": [fake.sentence(nb_words=12) for _ in range(SENTENCES)],
        "phrases": _unique(fake.catch_phrase, PHRASES),
        "words": _company_words(countries),
    }


def _region_source(fake: Any) -> Any:
    for name in ("state_abbr", "province_abbr", "state", "region"):
        if hasattr(fake, name):
            return getattr(fake, name)
    return None


def _unique(draw: Any, count: int) -> list[str]:
    """``count`` distinct values (or as many as the provider has), in draw order."""
    seen: dict[str, None] = {}
    for _ in range(count * 4):
        value = draw()
        if slug(value):
            seen.setdefault(value, None)
        if len(seen) == count:
            break
    return list(seen)


def _company_words(countries: dict[str, Any]) -> list[str]:
    """Surnames with distinct slugs across all countries: the parts of company names and domains."""
    words: dict[str, str] = {}
    for pools in countries.values():
        for name in pools["last"]:
            if " " not in name and "-" not in name:
                words.setdefault(slug(name), name)
    return list(words.values())

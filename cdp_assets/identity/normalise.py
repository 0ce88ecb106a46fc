"""Identifier normalisation with the field's libraries: email-validator and phonenumbers.

Each function takes one distinct raw value and returns its normal form, or None when
the value identifies nobody (invalid, unparsable or blocked). Callers normalise the
distinct values of a column, never every row.
"""

from __future__ import annotations

import re
from functools import cache

import phonenumbers
from email_validator import EmailNotValidError, validate_email
from phonenumbers import geocoder

from cdp_assets.identity.rules import Rules

LOCALE = re.compile(r"^[a-z]{2,3}[-_]([A-Za-z]{2})$")


def email(raw: str | None, rules: Rules) -> str | None:
    """Trimmed, lowercased and syntax-checked; None if invalid or blocked."""
    if raw is None:
        return None
    value = raw.strip().lower()
    if rules.is_blocked(value):
        return None
    try:
        validate_email(value, check_deliverability=False, allow_smtputf8=True)
    except EmailNotValidError:
        return None
    return value


def canonical_email(value: str, rules: Rules) -> str | None:
    """The address as its provider reads it (Gmail ignores dots and +tags); None where no rule applies."""
    local, _, domain = value.rpartition("@")
    rule = rules.canonical.get(domain)
    if rule is None:
        return None
    if rule.plus:
        local = local.split("+", 1)[0]
    if rule.hyphen:
        local = local.split("-", 1)[0]
    if rule.dots:
        local = local.replace(".", "")
    return f"{local}@{rule.domain or domain}" if local else None


@cache
def _regions_by_name() -> dict[str, str]:
    """English country names (as phonenumbers' geocoder writes them) to ISO codes."""
    names = {}
    for region in phonenumbers.SUPPORTED_REGIONS:
        example = phonenumbers.example_number(region)
        if example is not None:
            names[geocoder.country_name_for_number(example, "en").lower()] = region
    return names


def region_hint(hint: str | None) -> str | None:
    """An ISO country code from a column holding one (`GB`), a locale (`en-GB`) or a country name."""
    if not hint:
        return None
    hint = hint.strip()
    if len(hint) == 2 and hint.isalpha():
        return hint.upper()
    match = LOCALE.match(hint)
    return match.group(1).upper() if match else _regions_by_name().get(hint.lower())


def phone(raw: str | None, hint: str | None, rules: Rules) -> str | None:
    """E.164 if the number is possible for its country (its length fits), or None.

    Without a country code the record's country decides; lacking one, the configured countries
    are tried and the number is kept only if all that accept it agree."""
    if raw is None or not raw.strip() or rules.is_blocked(raw.strip().lower()):
        return None
    text = raw.strip()
    region = region_hint(hint)
    candidates = [None] if text.startswith("+") else ([region] if region else list(rules.phone_regions))
    found = set()
    for candidate in candidates:
        try:
            number = phonenumbers.parse(text, candidate)
        except phonenumbers.NumberParseException:
            continue
        if phonenumbers.is_possible_number(number):
            found.add(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))
    return found.pop() if len(found) == 1 else None


def plain(raw: str | None, rules: Rules) -> str | None:
    """Ids (user ids, device ids): trimmed, kept in their case; None if blocked."""
    if raw is None:
        return None
    value = raw.strip()
    return None if rules.is_blocked(value.lower()) else value

"""The one normaliser of identifiers: every layer that compares or hashes an address or a number calls it.

Identity, privacy (subject lookup, suppression digests, request records, landing filters) and destinations
(Meta's hashes, HubSpot's matching) use these functions and nothing else, so one value has one normal form
everywhere; SQL joins on the stored result and never re-implements it. Each function takes one distinct raw
value and returns its normal form, or None when the value identifies nobody (invalid, unparsable or blocked by
the identity rules). Callers normalise the distinct values of a column, never every row.

Email: NFKC; control and format characters (NUL, tab, CR/LF, zero-width spaces, BOMs, soft hyphens, direction
marks) removed and every kind of surrounding whitespace (NBSP, ideographic space...) trimmed; lowercased with
`str.lower`, the rule Meta and Google document for the hashes they match (`casefold` would turn `ß` into `ss`
and hash differently from what they compute); then syntax-checked by email-validator, whose normal form is kept.
Internationalised domains take their Unicode form (IDNA/UTS-46, so `xn--bcher-kva.de` and `BÜCHER.de` both become
`bücher.de`): it is email-validator's normal form, the only one every address has (an address with a non-ASCII
local part has no all-ASCII spelling) and the one people and forms write.

Domain (a company's website or domain, as a CRM holds it): the same folding and the same IDNA step as an address's
domain, after dropping a scheme, a leading `www.` and any port, path, query or fragment, so a company meets the
people whose addresses are at it.

Phone: E.164 through phonenumbers, the record's country or locale choosing the region of a national number,
extensions dropped, vanity numbers (`1-800-FLOWERS`) read as digits.
"""

from __future__ import annotations

import re
import unicodedata
from functools import cache

import phonenumbers
from email_validator import EmailNotValidError, ValidatedEmail, validate_email

from cdp_assets.identity.rules import Rules

LOCALE = re.compile(r"^[a-z]{2,3}[-_]([A-Za-z]{2})$")
JOINERS = "\u200c\u200d"  # zero-width (non-)joiners belong inside some scripts' domain labels (IDNA CONTEXTJ)
EDGES = re.compile(f"^[\\s{JOINERS}]+|[\\s{JOINERS}]+$")
SITE = re.compile(r"^([a-z][a-z0-9+.-]*://)?(www\.)?|[/:?#].*$")  # what surrounds a domain written as a web address


def _trimmed(raw: str) -> str:
    """Without control or format characters (joiners kept inside) and without surrounding whitespace of any kind."""
    kept = "".join(ch for ch in raw if ch in JOINERS or unicodedata.category(ch) not in ("Cc", "Cf"))
    return EDGES.sub("", kept)


def _text(raw: str) -> str:
    """Compatibility forms folded (NFKC: fullwidth letters and at signs, NBSP, ligatures), then trimmed."""
    return _trimmed(unicodedata.normalize("NFKC", raw))


def _folded(raw: str) -> str:
    """Folded, trimmed and lowercased (NFKC again, as lowercasing may undo it)."""
    return unicodedata.normalize("NFKC", _text(raw).lower())


def _validated(address: str) -> ValidatedEmail | None:
    try:
        return validate_email(address, check_deliverability=False, allow_smtputf8=True)
    except EmailNotValidError:
        return None


def email(raw: str | None, rules: Rules) -> str | None:
    """The address in its normal form (see the module's docstring); None if invalid or blocked."""
    validated = _validated(_folded(raw)) if raw is not None else None
    if validated is None:
        return None
    return None if rules.is_blocked(validated.normalized) else validated.normalized


def domain(raw: str | None) -> str | None:
    """A company's domain in the form an address at it takes (see the module's docstring); None if not a domain."""
    host = SITE.sub("", _folded(raw)) if raw is not None else ""
    validated = _validated(f"postmaster@{host}") if host else None  # the domain step of an address, no other
    return validated.domain if validated else None


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
    # Imported here: the geocoder loads every region's descriptions (0.8 s), which only a country written out needs,
    # and every process loading the definitions (a code server, each run's) would pay for it.
    from phonenumbers import geocoder

    names = {}
    for region in phonenumbers.SUPPORTED_REGIONS:
        example = phonenumbers.example_number(region)
        if example is not None:
            names[geocoder.country_name_for_number(example, "en").lower()] = region
    return names


def region_hint(hint: str | None) -> str | None:
    """An ISO country code from a column holding one (`GB`), a locale (`en-GB`) or a country name."""
    hint = _text(hint) if hint else ""
    if not hint:
        return None
    if len(hint) == 2 and hint.isalpha():
        return hint.upper()
    match = LOCALE.match(hint)
    return match.group(1).upper() if match else _regions_by_name().get(hint.lower())


def phone_readings(raw: str | None, hint: str | None, rules: Rules) -> set[str]:
    """Every E.164 reading of a number that is possible (its length fits) for its country: the number's own code,
    else the record's country, else each configured country in turn. Extensions are dropped and letters read as
    a keypad spells them."""
    text = _text(raw) if raw is not None else ""
    if not text or rules.is_blocked(text.lower()):
        return set()
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
    return found


def phone(raw: str | None, hint: str | None, rules: Rules) -> str | None:
    """E.164, or None. Without a country code the record's country decides; lacking one, the configured countries
    are tried and the number is kept only if all that accept it agree."""
    readings = phone_readings(raw, hint, rules)
    return readings.pop() if len(readings) == 1 else None


def plain(raw: str | None, rules: Rules) -> str | None:
    """Ids (user ids, device ids): trimmed of whitespace and invisible characters, kept in their case and form (an
    id is opaque); None if blocked."""
    if raw is None:
        return None
    value = _trimmed(raw)
    return None if rules.is_blocked(value.lower()) else value

"""The one normaliser: every spelling of an identifier a source may send normalises alike, digests alike (the
suppression HMAC) and hashes alike for Meta; garbage gives None, never an error."""

from __future__ import annotations

import hashlib
import unicodedata

import idna
import phonenumbers
from hypothesis import given, settings
from hypothesis import strategies as st

from cdp_assets.identity import normalise
from cdp_assets.identity.rules import load
from cdp_assets.privacy.suppression import digest
from resources.destinations.meta import email_hash

RULES = load()
KEY = "test-key"
SETTINGS = settings(max_examples=150, deadline=None)

# Local parts and domains, ASCII and not; each domain is also sent in its punycode (ASCII) form.
LOCALS = ("ann.lee", "o'brien+news", "josé.müller", "zoë", "renée_2", "ñandú")
DOMAINS = ("acme-corp.io", "bücher.de", "例え.jp", "café.example.fr", "straße-bau.at")
# Surrounding characters a copy, an export or a form leaves behind.
SURROUNDINGS = (" ", "\t", "\r\n", "\n", "\u00a0", "\u200b", "\ufeff", "\u3000", "\u2028", "\u202f", "\x00", "\x0b")


def _case(text: str, flips: list[bool]) -> str:
    """Some letters upper-cased, where upper-casing is reversible (not sharp s -> `SS`, not the dotless i)."""
    out = []
    for ch, flip in zip(text, flips + [False] * len(text), strict=False):
        up = ch.upper()
        out.append(up if flip and len(up) == 1 and up.lower() == ch else ch)
    return "".join(out)


@st.composite
def email_variants(draw: st.DrawFn) -> tuple[str, str]:
    """(the address as written once, another spelling of it)."""
    local, domain = draw(st.sampled_from(LOCALS)), draw(st.sampled_from(DOMAINS))
    if draw(st.booleans()):
        domain = idna.encode(domain, uts46=True).decode()
    text = _case(f"{local}@{domain}", draw(st.lists(st.booleans(), max_size=40)))
    text = unicodedata.normalize(draw(st.sampled_from(("NFC", "NFD", "NFKC", "NFKD"))), text)
    before = "".join(draw(st.lists(st.sampled_from(SURROUNDINGS), max_size=4)))
    after = "".join(draw(st.lists(st.sampled_from(SURROUNDINGS), max_size=4)))
    return f"{local}@{domain}", before + text + after


@SETTINGS
@given(email_variants())
def test_every_spelling_of_an_address_normalises_digests_and_hashes_alike(pair: tuple[str, str]) -> None:
    written, variant = pair
    expected = normalise.email(written, RULES)
    assert expected is not None and expected == unicodedata.normalize("NFC", expected) and expected == expected.lower()
    assert normalise.email(variant, RULES) == expected
    assert normalise.email(expected, RULES) == expected  # a normal form is its own
    assert digest(KEY, "email", normalise.email(variant, RULES)) == digest(KEY, "email", expected)
    assert email_hash(variant) == email_hash(written) == hashlib.sha256(expected.encode()).hexdigest()


def test_the_domain_takes_its_unicode_form_and_the_issue_spellings_meet() -> None:
    unicode = normalise.email("jo@bu\u0308cher.de", RULES)
    assert normalise.email("Jo@XN--BCHER-KVA.DE", RULES) == unicode == "jo@bücher.de"
    forms = {normalise.email(v, RULES) for v in ("x@acme-corp.io\t", "X@ACME-CORP.IO", "\u00a0x@acme-corp.io\r\n",
                                                 "\u200bx@acme-corp.io", "\uff58\uff20acme-corp.io")}  # fmt: skip
    assert forms == {"x@acme-corp.io"}
    assert normalise.email("test@example.com", RULES) is None  # blocked by the identity rules
    assert normalise.email("ann@acme-corp.io\u200b.", RULES) is None  # still not an address


# Numbers whose last four digits have keypad letters, so each also has a vanity spelling.
NUMBERS = ("+14155552368", "+12125557893", "+442079462345", "+493022345678", "+33142685324")
REGION_HINTS = {"US": ("US", "us", "en-US", "en_US", "United States"), "GB": ("GB", "en-GB", "United Kingdom"),
                "DE": ("DE", "de-DE", "Germany"), "FR": ("FR", "fr-FR", "France")}  # fmt: skip
KEYPAD = {"2": "ABC", "3": "DEF", "4": "GHI", "5": "JKL", "6": "MNO", "7": "PQRS", "8": "TUV", "9": "WXYZ"}
SEPARATORS = ("", " ", "-", ".", "\u00a0", "/")
EXTENSIONS = ("", " ext. 12", " x12", " ext 7", ";ext=99", " #204")


@st.composite
def phone_variants(draw: st.DrawFn) -> tuple[str, str, str | None]:
    """(the E.164 number, another spelling of it, the record's country or locale)."""
    e164 = draw(st.sampled_from(NUMBERS))
    number = phonenumbers.parse(e164)
    region = phonenumbers.region_code_for_number(number)
    style = draw(st.sampled_from(("e164", "international", "national", "rfc3966", "digits", "vanity")))
    hint: str | None = None
    if style in ("national", "digits", "vanity"):
        hint = draw(st.sampled_from(REGION_HINTS[region]))
    if style == "e164":
        text = e164
    elif style == "international":
        text = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.INTERNATIONAL)
    elif style == "national":
        text = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.NATIONAL)
    elif style == "rfc3966":
        text = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.RFC3966)
    else:
        national = phonenumbers.national_significant_number(number)
        prefix = "0" if region != "US" else ""  # the trunk prefix a national number is dialled with
        if style == "vanity":
            tail = "".join(draw(st.sampled_from(KEYPAD[d])) for d in national[-4:])
            national = national[:-4] + (tail if draw(st.booleans()) else tail.lower())
        separator = draw(st.sampled_from(SEPARATORS))
        text = prefix + separator.join(national[i : i + 3] for i in range(0, len(national), 3))
    if not text.startswith("tel:"):
        text += draw(st.sampled_from(EXTENSIONS))
    around = draw(st.sampled_from(SURROUNDINGS))
    return e164, around + text + draw(st.sampled_from(SURROUNDINGS)), hint


@SETTINGS
@given(phone_variants())
def test_every_spelling_of_a_number_normalises_to_its_e164(case: tuple[str, str, str | None]) -> None:
    e164, variant, hint = case
    assert normalise.phone(variant, hint, RULES) == e164
    assert normalise.phone(e164, None, RULES) == e164


def test_a_national_number_without_a_country_is_read_in_the_configured_countries() -> None:
    # US and Canada read it alike, Britain and Germany differently: no one reading without the record's country.
    assert normalise.phone_readings("(415) 555-0199", None, RULES) == {"+14155550199", "+444155550199", "+494155550199"}
    assert normalise.phone("(415) 555-0199", None, RULES) is None
    assert normalise.phone("(415) 555-0199", "en-US", RULES) == "+14155550199"
    assert normalise.phone("1-800-FLOWERS", "US", RULES) == "+18003569377"
    assert normalise.phone("020 7946 0958", "United Kingdom", RULES) == "+442079460958"


@SETTINGS
@given(st.text(max_size=300), st.one_of(st.none(), st.text(max_size=20)))
def test_garbage_gives_none_or_a_normal_form_and_never_raises(raw: str, hint: str | None) -> None:
    for value in (normalise.email(raw, RULES), normalise.phone(raw, hint, RULES), normalise.plain(raw, RULES)):
        assert value is None or (isinstance(value, str) and value)
    address = normalise.email(raw, RULES)
    assert address is None or normalise.email(address, RULES) == address
    number = normalise.phone(raw, hint, RULES)
    assert number is None or (number.startswith("+") and number[1:].isdigit())


@st.composite
def company_domains(draw: st.DrawFn) -> tuple[str, str]:
    """(a CRM company's domain as someone typed it, an address at that domain as someone else typed it)."""
    domain = draw(st.sampled_from(DOMAINS))
    site, mailbox = (idna.encode(domain, uts46=True).decode() if draw(st.booleans()) else domain for _ in "ab")
    site = _case(site, draw(st.lists(st.booleans(), max_size=40)))
    site = draw(st.sampled_from(("", "https://", "http://", "HTTPS://WWW.", "www."))) + site
    site += draw(st.sampled_from(("", "/", "/about?lang=de", ":443", "#team")))
    around = "".join(draw(st.lists(st.sampled_from(SURROUNDINGS), max_size=3)))
    mailbox = _case(f"{draw(st.sampled_from(LOCALS))}@{mailbox}", draw(st.lists(st.booleans(), max_size=40)))
    return around + site + around, mailbox


@SETTINGS
@given(company_domains())
def test_a_company_domain_meets_the_domain_of_addresses_at_it_in_any_spelling(case: tuple[str, str]) -> None:
    site, address = case
    normal = normalise.email(address, RULES)
    assert normal is not None and normalise.domain(site) == normal.rpartition("@")[2]


def test_company_domains_as_crms_hold_them() -> None:
    assert {normalise.domain(d) for d in ("xn--bcher-kva.de", "BÜCHER.de", " https://www.bücher.de/impressum ",
                                          "bu\u0308cher.de", "www.XN--BCHER-KVA.DE:8080")} == {"bücher.de"}  # fmt: skip
    assert normalise.domain("acme-corp.io") == normalise.email("ann@acme-corp.io", RULES).rpartition("@")[2]
    assert [normalise.domain(d) for d in (None, "", "https://", "not a domain", "localhost")] == [None] * 5

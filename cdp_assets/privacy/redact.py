"""Error text made safe to keep or send: what names a person, and credentials, masked on every line; one line, short.

Error texts go to tables (`sync.runs`, `sync.rejections`, a privacy request's history), to Dagster's run
metadata and to chat tools (alerts). A destination's reply often echoes what it was sent, so every kept
error text passes through `redacted` first. Masked:
- email addresses, plain, percent-encoded (`%40`, `%2540`), JSON- or HTML-escaped (`\\u0040`, `&#64;`), quoted
  (`"jane doe"@x`), Unicode or punycode, and one cut short at the end of a text;
- phone numbers written as phones: a leading `+` (E.164 and international formats), digit groups with
  separators (`(415) 555-0199`, `020 7946 0958`, `06.12.34.56.78`), any digits labelled as a phone
  (`"phone": "4155550199"`), and a bare run of 7 to 15 digits a phone word names a few words before it
  (`Phone number 4155550199 is invalid`, `"mobilePhone": 4155550199`, `SMS to 4155550199 failed`);
- values labelled as a person's name, birth date, street address, postcode or IP address (`"firstname": "Jo"`);
- credentials: `Bearer`/`Basic` tokens, values labelled as a token, key, secret or password, Stripe-style keys.

Kept on purpose, since they find the failing call or row and name no one outside the warehouse (which erasure
empties of the person): record, profile and destination ids, bare runs of digits no phone word names (a HubSpot
or Zendesk id and a Unix time look like a phone written without separators), dates, times, IP addresses and ports of the
services, counts, status codes, URLs' hosts and paths, and the field names a destination complains about.
Names in free text are not recognised: no pattern tells them apart from words.
"""

from __future__ import annotations

import re
import unicodedata

# Matched after NFKC, which folds the fullwidth at and plus signs and digits into ASCII.
AT = r"(?:@|%40|%2540|\\u0040|\\x40|&#0*64;|&#x0*40;)"
ENCODED = r"%[0-9a-f]{2}|\\u[0-9a-f]{4}"
LOCAL = rf"(?:{ENCODED}|[^\s@<>()\[\],;:\"\\/?=&%])+|\"[^\"\n]{{1,64}}\""  # RFC atext but a URL's /?=&
DOMAIN = rf"(?:{ENCODED}|[^\s@<>()\[\]{{}},;:\"'`\\/=?&|%#!*+$^~])+"
EMAIL = re.compile(rf"(?:{LOCAL}){AT}(?:{DOMAIN}|\Z)", re.IGNORECASE)

PLUS = r"(?:\+|%2b|\\u002b)"
SEPARATOR = r"(?:[ \t\u00a0().\-/]|%20)"
INTERNATIONAL = re.compile(rf"(?<![\w+%]){PLUS}{SEPARATOR}*\d(?:{SEPARATOR}*\d){{6,14}}(?!\w)", re.IGNORECASE)
NATIONAL = re.compile(rf"(?<![\w.+/:-])\(?\d{{1,8}}\)?(?:{SEPARATOR}+\d{{1,8}}\)?){{1,5}}(?![\w:]|[.\-/]\d)")
DATE = re.compile(r"\d{4}([-./])\d{1,2}\1\d{1,2}|\d{1,2}([-./])\d{1,2}\2\d{4}")
IP_ADDRESS = re.compile(r"\d{1,3}(?:\.\d{1,3}){3}")

VALUE = r"(\"(?:[^\"\\]|\\.)*\"|'[^']*'|[^\s,;&}\]]+)"
LABEL_END = r"\b[\"']?\s*[:=]\s*)"
PHONE_LABEL = re.compile(
    r"(?i)(\b(?:phone|mobile|cell|tel|telephone|sms|whatsapp|fax)(?:_?(?:number|no))?" + LABEL_END + VALUE
)
# A phone word (`phone`, `mobilePhone`, `tel`, `cell`, `number`, `No.`, `SMS`, `WhatsApp`), up to three words within
# one field or clause (no `,;|`, brackets or a mask between), then a bare run of 7 to 15 digits (E.164's most) that is
# no part of a longer token or a decimal.
PHONE_WORD = r"(?:[a-z_]*(?:phone|mobile|whatsapp|sms|fax)[a-z_]*|tel|telephone|cell|numbers?|no\.|nr\.)"
WITHIN = r"[^\w\n,;|{}\[\]<>]+"
PHONE_NAMED = re.compile(
    rf"(?i)((?<!<)\b{PHONE_WORD}(?:{WITHIN}[^\W\d]+){{0,3}}{WITHIN})(?<![+%])\d{{7,15}}(?!\w|[.,]\d)"
)
PERSON_LABEL = re.compile(
    r"(?i)(\b(?:first_?name|last_?name|full_?name|given_?name|family_?name|surname|birth_?date|birthday"
    r"|date_of_birth|dob|street|address_?(?:line_?)?[12]?|postal_?code|post_?code|zip(?:_?code)?|ip(?:_address)?)"
    + LABEL_END + VALUE
)
SECRET_LABEL = re.compile(
    r"(?i)(\b(?:access_?token|refresh_?token|token|api_?key|apikey|secret|client_secret|password|passwd"
    r"|authorization|signature)" + LABEL_END + r"((?:Bearer|Basic)\s+\S+|" + VALUE[1:]
)
SCHEME = re.compile(r"(?i)\b(Bearer|Basic|Token)\s+[A-Za-z0-9._~+/=-]{8,}")
KEY = re.compile(r"\b(?:[sr]k_(?:live|test)_[A-Za-z0-9_]+|pk_[A-Za-z0-9]{6,}|pat-[a-z0-9]+-[A-Za-z0-9-]+)\b")

EMAIL_MASK, PHONE_MASK, PERSON_MASK, SECRET_MASK = "<email>", "<phone>", "<redacted>", "<secret>"


def _digits(text: str) -> int:
    return sum(ch.isdigit() for ch in text)


def _national(match: re.Match[str]) -> str:
    """Digit groups with separators that make a phone number, not a date, an IP address or a decimal."""
    found = match.group(0)
    core = found.strip("() ")
    groups = re.findall(r"\d+", found)
    only_dots = not re.search(r"[ \t\u00a0()\-/]|%20", found)
    if not 7 <= _digits(found) <= 15 or DATE.fullmatch(core) or IP_ADDRESS.fullmatch(core):
        return found
    return found if only_dots and len(groups) < 3 else PHONE_MASK


def mask(text: str) -> str:
    """`text` with every identifier and credential it holds masked, line breaks kept."""
    text = unicodedata.normalize("NFKC", text)
    text = SECRET_LABEL.sub(lambda m: m.group(1) + SECRET_MASK, text)
    text = SCHEME.sub(lambda m: f"{m.group(1)} {SECRET_MASK}", text)
    text = KEY.sub(SECRET_MASK, text)
    text = EMAIL.sub(EMAIL_MASK, text)
    text = PHONE_LABEL.sub(lambda m: m.group(0) if _digits(m.group(2)) < 5 else m.group(1) + PHONE_MASK, text)
    text = PHONE_NAMED.sub(lambda m: m.group(1) + PHONE_MASK, text)
    text = PERSON_LABEL.sub(lambda m: m.group(1) + PERSON_MASK, text)
    text = INTERNATIONAL.sub(PHONE_MASK, text)
    return NATIONAL.sub(_national, text)


def redacted(text: str | None, limit: int = 240) -> str:
    """`text` masked, its lines joined into one, cut to `limit` characters (after masking, so a cut leaves no
    part of an identifier behind)."""
    joined = " | ".join(line.strip() for line in mask(text or "").splitlines() if line.strip())
    return joined if len(joined) <= limit else joined[: limit - 1] + "…"

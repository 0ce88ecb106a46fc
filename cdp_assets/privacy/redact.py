"""Error text made safe to keep or send: addresses and long numbers (phones, record ids) masked, one line, short.

Errors travel to tables that outlive a deletion (a request's history) and to chat tools (alerts), so
they must not carry what names a person.
"""

import re

EMAIL = re.compile(r"[^\s@'\"<>(),;]+@[^\s@'\"<>(),;]+\.[A-Za-z]{2,}")
LONG_NUMBER = re.compile(r"\+?\d[\d\s().-]{5,}\d")


def redacted(text: str | None, limit: int = 240) -> str:
    lines = (text or "").strip().splitlines()
    first = LONG_NUMBER.sub("<number>", EMAIL.sub("<email>", lines[0] if lines else ""))
    return first if len(first) <= limit else first[: limit - 1] + "…"

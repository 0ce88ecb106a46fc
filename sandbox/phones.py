"""Phone numbers: one true E.164 number per person, written differently by each source.

People type phones however they like, so each source record renders the same
number in one of many formats (or leaves it out); identity resolution must
normalise them back to E.164.
"""

from __future__ import annotations

import random

# Country code, national trunk prefix, and how a national number is grouped.
PLANS: dict[str, tuple[str, str, tuple[int, ...]]] = {
    "US": ("1", "", (3, 3, 4)),
    "CA": ("1", "", (3, 3, 4)),
    "GB": ("44", "0", (4, 6)),
    "DE": ("49", "0", (3, 8)),
    "FR": ("33", "0", (1, 2, 2, 2, 2)),
}
STYLES: tuple[tuple[str, float], ...] = (
    ("e164", 0.25),
    ("national", 0.25),
    ("dashes", 0.12),
    ("international", 0.13),
    ("extension", 0.05),
    ("missing", 0.20),
)


def make_phone(rng: random.Random, country: str) -> str:
    """A plausible mobile or landline number of the country, as E.164."""
    if country in ("US", "CA"):
        national = f"{rng.randint(201, 989)}{rng.randint(200, 999)}{rng.randint(0, 9999):04d}"
    elif country == "GB":
        national = f"7{rng.randint(100, 999)}{rng.randint(0, 999999):06d}"
    elif country == "DE":
        national = f"15{rng.randint(1, 9)}{rng.randint(0, 99999999):08d}"
    else:
        national = f"{rng.choice('67')}{rng.randint(0, 99999999):08d}"
    return f"+{PLANS[country][0]}{national}"


def pick_style(rng: random.Random) -> str:
    roll = rng.random()
    for style, share in STYLES:
        roll -= share
        if roll < 0:
            return style
    return STYLES[-1][0]


def render_phone(rng: random.Random, e164: str | None, country: str, style: str | None = None) -> str | None:
    """The number as one source record writes it; None when the person gave none or left it out."""
    style = style or pick_style(rng)
    if e164 is None or style == "missing":
        return None
    code, trunk, groups = PLANS[country]
    national = e164[1 + len(code) :]
    parts, start = [], 0
    for size in groups:
        parts.append(national[start : start + size])
        start += size
    if style == "e164":
        return e164
    if style == "international":
        return f"+{code} " + " ".join(parts)
    if country in ("US", "CA"):
        if style == "dashes":
            return "-".join(parts)
        local = f"({parts[0]}) {parts[1]}-{parts[2]}"
    else:
        local = trunk + " ".join(parts) if style == "national" else trunk + "-".join(parts)
    if style == "extension":
        return f"{local} {rng.choice(('x', 'ext. ', 'ext'))}{rng.randint(10, 999)}"
    return local

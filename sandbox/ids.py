"""Record ids in each API's own format, derived from counters kept in the world's meta.

Every id is a bijective scramble of a counter, so ids are unique without a lookup,
look random like the real ones, and churn can rebuild the id of the n-th record of
a stream to pick existing records at random without scanning a stream.
"""

from __future__ import annotations

import hashlib
import random
from bisect import bisect_right
from functools import lru_cache
from typing import Any

MASK64 = (1 << 64) - 1
GOLDEN = 0x9E3779B97F4A7C15  # odd: multiplying by it is a cheap bijection on 64-bit integers
BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
# Two digits per lookup: ids are made by the million, so their encoding is hot.
PAIRS62 = tuple(a + b for a in BASE62 for b in BASE62)
PAIRS32 = tuple(a + b for a in CROCKFORD for b in CROCKFORD)
BASE62_POW6 = 62**6

# Length of the part after the prefix, as Stripe's ids have.
STRIPE_LENGTHS = {"cus": 14, "si": 14, "prod": 14, "sub": 24, "in": 24, "price": 24, "evt": 24}
HUBSPOT_CONTACT_BASE = 101
HUBSPOT_COMPANY_BASE = 5_000_001
ZENDESK_USER_BASE = 360_000_000_001
ZENDESK_TICKET_BASE = 1
ZENDESK_ORG_BASE = 360_100_000_001
KLAVIYO_EPOCH_MS = 1_600_000_000_000
DAY_MS = 86_400_000
KLAVIYO_DAYS = 3 * 365
BLOCK_BITS = 14  # counters per id block (see _block)

# Counters a world keeps in meta as ``next_<name>``; the value is the next number to use.
COUNTERS: tuple[str, ...] = (
    "person", "user", "company", "cus", "sub", "si", "in", "evt",
    "contact", "zd_user", "zd_ticket", "kl_profile", "kl_event", "mp_event",
)
FIRST_VALUE = {"person": 1, "user": 1}


def mix64(x: int) -> int:
    """splitmix64's finaliser: a bijection on 64-bit integers that looks random."""
    z = (x + 0x9E3779B97F4A7C15) & MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return z ^ (z >> 31)


@lru_cache(maxsize=64)
def salt(seed: int, name: str) -> int:
    """A 64-bit constant per (world seed, id family) so different worlds get different ids."""
    return int.from_bytes(hashlib.blake2b(f"{seed}:{name}".encode(), digest_size=8).digest(), "big")


def encode(value: int, alphabet: str, width: int) -> str:
    """Fixed-width positional encoding of a non-negative integer (most significant first)."""
    digits = []
    for _ in range(width):
        value, digit = divmod(value, len(alphabet))
        digits.append(alphabet[digit])
    return "".join(reversed(digits))


def base62_11(value: int) -> str:
    """The 11 base62 digits of a 64-bit integer (62**11 > 2**64), unrolled for speed."""
    high, low = divmod(value, BASE62_POW6)
    a, b = divmod(low, 3844)
    c, d = divmod(a, 3844)
    e, f = divmod(high, 3844)
    g, h = divmod(e, 3844)
    return f"{PAIRS62[g][1]}{PAIRS62[h]}{PAIRS62[f]}{PAIRS62[c]}{PAIRS62[d]}{PAIRS62[b]}"


def stripe_id(seed: int, prefix: str, n: int) -> str:
    """``cus_…``: a block prefix, filler up to Stripe's length, then base62 of a 64-bit scramble of the counter."""
    s = salt(seed, prefix)
    unique = mix64(n ^ s)
    filler = base62_11(unique * GOLDEN & MASK64)[25 - STRIPE_LENGTHS[prefix] :]  # its last 0 or 10 digits
    return f"{prefix}_{_stripe_block(s, n >> BLOCK_BITS)}{filler}{base62_11(unique)}"


def klaviyo_id(seed: int, kind: str, n: int) -> str:
    """26-char Crockford base32, ULID-like: a 48-bit time part (one day per block), 80 bits unique per counter.

    The 26 digits are the 128-bit ULID with two zero bits in front: 10 digits of time,
    then 16 of (scramble, low 16 bits of the counter).
    """
    s = salt(seed, kind)
    m = mix64(n ^ s)
    t = _klaviyo_day_ms(s, n >> BLOCK_BITS) + m % DAY_MS
    u, r = m >> 4, (m & 15) << 16 | (n & 0xFFFF)
    p = PAIRS32
    return (
        f"{p[t >> 40]}{p[t >> 30 & 1023]}{p[t >> 20 & 1023]}{p[t >> 10 & 1023]}{p[t & 1023]}"
        f"{p[u >> 50]}{p[u >> 40 & 1023]}{p[u >> 30 & 1023]}{p[u >> 20 & 1023]}{p[u >> 10 & 1023]}{p[u & 1023]}"
        f"{p[r >> 10]}{p[r & 1023]}"
    )


def insert_id(seed: int, n: int) -> str:
    """Mixpanel ``$insert_id``: 20 hex chars, a block prefix and a 64-bit scramble unique per counter."""
    s = salt(seed, "mp")
    return f"{_mixpanel_block(s, n >> BLOCK_BITS)}{mix64(n ^ s):016x}"


def _block(s: int, block: int, modulus: int) -> int:
    """A prefix shared by the ids of one block of counters (random-looking from block to block).

    A world's records go into SQLite's primary-key tree in counter order; with a
    block prefix each batch lands in a few narrow key ranges instead of all over
    the tree, which keeps building a million people linear in time.
    """
    return mix64(block ^ s) % modulus


@lru_cache(maxsize=1024)
def _stripe_block(s: int, block: int) -> str:
    return encode(_block(s, block, 62**3), BASE62, 3)


@lru_cache(maxsize=1024)
def _mixpanel_block(s: int, block: int) -> str:
    return f"{_block(s, block, 16**4):04x}"


@lru_cache(maxsize=1024)
def _klaviyo_day_ms(s: int, block: int) -> int:
    """The day a block of Klaviyo ids carries in its time part."""
    return KLAVIYO_EPOCH_MS + _block(~s & MASK64, block, KLAVIYO_DAYS) * DAY_MS


@lru_cache(maxsize=4096)
def short_id(seed: int, name: str) -> str:
    """Six base62 chars, as Klaviyo metric ids and campaign message ids look."""
    return encode(salt(seed, name), BASE62, 6)


def device_id(seed: int, person: int, slot: int) -> str:
    """A person's n-th device as a UUID; rebuildable from the person, so churn needs no lookup."""
    return uuid_text(hashlib.blake2b(f"{seed}:device:{person}:{slot}".encode(), digest_size=16).hexdigest())


def uuid_text(hex32: str) -> str:
    """32 hex digits in the 8-4-4-4-12 form, as ``str(uuid.UUID(...))`` writes them but faster."""
    return f"{hex32[:8]}-{hex32[8:12]}-{hex32[12:16]}-{hex32[16:20]}-{hex32[20:]}"


def product_user_id(n: int) -> str:
    """The product's own user id, the join key across sources: ``u_000123``."""
    return f"u_{n:06d}"


def contact_id(n: int) -> str:
    return str(HUBSPOT_CONTACT_BASE + n)


def company_id(n: int) -> str:
    return str(HUBSPOT_COMPANY_BASE + n)


def zendesk_user_id(n: int) -> int:
    return ZENDESK_USER_BASE + n


def zendesk_ticket_id(n: int) -> int:
    return ZENDESK_TICKET_BASE + n


def organization_id(company: int) -> int:
    return ZENDESK_ORG_BASE + company


class Ids:
    """The world's counters plus the id formats; ``take`` hands out the next number.

    ``gaps`` are ranges of numbers below a counter that no record uses: a build gives
    each chunk of people its own range of every counter (so chunks can be rendered
    independently), and the unused ends of those ranges stay empty.
    """

    def __init__(
        self, seed: int, counters: dict[str, int] | None = None, gaps: dict[str, list[tuple[int, int]]] | None = None
    ) -> None:
        self.seed = seed
        self.counters = {name: FIRST_VALUE.get(name, 0) for name in COUNTERS}
        self.counters.update(counters or {})
        self.gaps = {name: [(int(lo), int(hi)) for lo, hi in spans] for name, spans in (gaps or {}).items() if spans}
        self._skips: dict[str, tuple[list[int], list[int]]] = {}

    @classmethod
    def from_meta(cls, seed: int, meta: dict[str, Any]) -> Ids:
        counters = {name: int(meta[f"next_{name}"]) for name in COUNTERS if f"next_{name}" in meta}
        return cls(seed, counters, meta.get("gaps"))

    def to_meta(self) -> dict[str, int]:
        return {f"next_{name}": value for name, value in self.counters.items()}

    def take(self, name: str) -> int:
        value = self.counters[name]
        self.counters[name] = value + 1
        return value

    def draw(self, name: str, rng: random.Random) -> int | None:
        """A number of ``name`` some record has, uniformly at random (None if there is none yet)."""
        used_before, skipped = self._gap_index(name)
        total = self.counters[name] - FIRST_VALUE.get(name, 0) - skipped[-1]
        if total <= 0:
            return None
        r = rng.randrange(total)
        return FIRST_VALUE.get(name, 0) + r + skipped[bisect_right(used_before, r)]

    def _gap_index(self, name: str) -> tuple[list[int], list[int]]:
        """Per gap: how many numbers are in use below it; and how many were skipped before each gap."""
        if name not in self._skips:
            used_before, skipped = [], [0]
            for lo, hi in self.gaps.get(name, []):
                used_before.append(lo - FIRST_VALUE.get(name, 0) - skipped[-1])
                skipped.append(skipped[-1] + hi - lo)
            self._skips[name] = (used_before, skipped)
        return self._skips[name]

    def stripe(self, prefix: str) -> str:
        return stripe_id(self.seed, prefix, self.take(prefix))

    def klaviyo(self, kind: str) -> str:
        return klaviyo_id(self.seed, kind, self.take(kind))

    def mixpanel(self) -> str:
        return insert_id(self.seed, self.take("mp_event"))

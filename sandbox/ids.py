"""Record ids in each API's own format, derived from counters kept in the world's meta.

Every id is a bijective scramble of a counter, so ids are unique without a lookup,
look random like the real ones, and churn can rebuild the id of the n-th record of
a stream to pick existing records at random without scanning a stream.
"""

from __future__ import annotations

import base64
import hashlib
import uuid
from functools import lru_cache
from typing import Any

MASK64 = (1 << 64) - 1
BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
TO_CROCKFORD = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", CROCKFORD)

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


@lru_cache(maxsize=4)
def _pairs(alphabet: str) -> tuple[str, ...]:
    return tuple(a + b for a in alphabet for b in alphabet)


def encode(value: int, alphabet: str, width: int) -> str:
    """Fixed-width positional encoding of a non-negative integer (most significant first).

    Works two digits at a time: ids are made by the million, so this loop is hot.
    """
    pairs, base = _pairs(alphabet), len(alphabet) ** 2
    chunks = []
    for _ in range((width + 1) // 2):
        value, pair = divmod(value, base)
        chunks.append(pairs[pair])
    return "".join(reversed(chunks))[-width:]


def stripe_id(seed: int, prefix: str, n: int) -> str:
    """``cus_…``: a block prefix, then base62 of (filler, 64-bit scramble of the counter) that keeps it unique."""
    s = salt(seed, prefix)
    width = STRIPE_LENGTHS[prefix] - 3
    filler = (mix64(n ^ s ^ 0x5BD1E995) << 64 | mix64(n ^ s ^ 0x1B873593)) % (62**width >> 64)
    return f"{prefix}_{encode(_block(n, s, 62**3), BASE62, 3)}{encode(filler << 64 | mix64(n ^ s), BASE62, width)}"


def klaviyo_id(seed: int, kind: str, n: int) -> str:
    """26-char Crockford base32, ULID-like: a 48-bit time part (one day per block), 80 bits unique per counter."""
    s = salt(seed, kind)
    millis = KLAVIYO_EPOCH_MS + _block(n, s, KLAVIYO_DAYS) * DAY_MS + mix64(n ^ (~s & MASK64)) % DAY_MS
    ulid = millis << 80 | mix64(n ^ s) << 16 | (n & 0xFFFF)
    # 26 base32 digits are 130 bits: shift the 128-bit value to the top of 160 bits and let C encode it.
    return base64.b32encode((ulid << 30).to_bytes(20, "big")).decode()[:26].translate(TO_CROCKFORD)


def insert_id(seed: int, n: int) -> str:
    """Mixpanel ``$insert_id``: 20 hex chars, a block prefix and a 64-bit scramble unique per counter."""
    s = salt(seed, "mp")
    return f"{_block(n, s, 16**4):04x}{mix64(n ^ s):016x}"


def _block(n: int, s: int, modulus: int) -> int:
    """A prefix shared by the ids of one block of counters (random-looking from block to block).

    A world's records go into SQLite's primary-key tree in counter order; with a
    block prefix each batch lands in a few narrow key ranges instead of all over
    the tree, which keeps building a million people linear in time.
    """
    return mix64((n >> BLOCK_BITS) ^ s) % modulus


@lru_cache(maxsize=4096)
def short_id(seed: int, name: str) -> str:
    """Six base62 chars, as Klaviyo metric ids and campaign message ids look."""
    return encode(salt(seed, name), BASE62, 6)


def device_id(seed: int, person: int, slot: int) -> str:
    """A person's n-th device as a UUID; rebuildable from the person, so churn needs no lookup."""
    digest = hashlib.blake2b(f"{seed}:device:{person}:{slot}".encode(), digest_size=16).digest()
    return str(uuid.UUID(bytes=digest))


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
    """The world's counters plus the id formats; ``take`` hands out the next number."""

    def __init__(self, seed: int, counters: dict[str, int] | None = None) -> None:
        self.seed = seed
        self.counters = {name: FIRST_VALUE.get(name, 0) for name in COUNTERS}
        self.counters.update(counters or {})

    @classmethod
    def from_meta(cls, seed: int, meta: dict[str, Any]) -> Ids:
        return cls(seed, {name: int(meta[f"next_{name}"]) for name in COUNTERS if f"next_{name}" in meta})

    def to_meta(self) -> dict[str, int]:
        return {f"next_{name}": value for name, value in self.counters.items()}

    def take(self, name: str) -> int:
        value = self.counters[name]
        self.counters[name] = value + 1
        return value

    def stripe(self, prefix: str) -> str:
        return stripe_id(self.seed, prefix, self.take(prefix))

    def klaviyo(self, kind: str) -> str:
        return klaviyo_id(self.seed, kind, self.take(kind))

    def mixpanel(self) -> str:
        return insert_id(self.seed, self.take("mp_event"))

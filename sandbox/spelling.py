"""How people type names and addresses: typos, capitals, stray spaces, and the addresses themselves.

Identity resolution must see through these, so every source record renders a
person's name and email through here rather than copying the true value.
"""

from __future__ import annotations

import random

from sandbox.pools import JUNK_PROVIDERS, slug

TYPO_RATE = 0.03
CAPITALISED_RATE = 0.05


def claim(local: str, domain: str, taken: set[str], rng: random.Random) -> str:
    """An address nobody in the chunk has yet, adding digits on a clash as mail systems make people do."""
    email = f"{local}@{domain}"
    while email in taken:
        email = f"{local}{rng.randint(2, 99)}@{domain}"
    taken.add(email)
    return email


def work_email(rng: random.Random, first: str, last: str, domain: str, taken: set[str]) -> str:
    """An address at the employer's domain, in one of the common corporate patterns."""
    f, s = slug(first), slug(last)
    local = rng.choice((f"{f}.{s}", f"{f}.{s}", f"{f[0]}{s}", f"{f}", f"{f}_{s}", f"{s}.{f}"))
    return claim(local, domain, taken, rng)


def home_email(rng: random.Random, first: str, last: str, providers: tuple[str, ...], taken: set[str]) -> str:
    """A personal address at a local webmail provider, usually with digits (the plain name was taken)."""
    f, s = slug(first), slug(last)
    local = rng.choice((
        f"{f}.{s}{rng.randint(1, 99)}", f"{f}{s}{rng.randint(60, 99)}", f"{f[0]}{s}{rng.randint(100, 999)}",
        f"{s}.{f}{rng.randint(1, 9)}", f"{f}_{s}{rng.randint(1, 999)}", f"{f}.{s}",
    ))
    return claim(local, rng.choice(providers), taken, rng)


def junk_email(rng: random.Random, first: str, taken: set[str]) -> str:
    """A throwaway address people give to forms they do not trust."""
    noise = "".join(rng.choice("abcdefghijkmnpqrstuvwxyz0123456789") for _ in range(rng.randint(4, 7)))
    local = rng.choice((noise, f"{slug(first)}{noise}"))
    return claim(local, rng.choice(JUNK_PROVIDERS), taken, rng)


def spell(rng: random.Random, name: str) -> str:
    """A name as someone typed it: usually right, sometimes with a swapped, dropped or doubled letter."""
    if len(name) < 3 or rng.random() >= TYPO_RATE:
        return name
    i = rng.randrange(1, len(name) - 1)
    kind = rng.randrange(4)
    if kind == 0:
        return name[:i] + name[i + 1] + name[i] + name[i + 2 :]
    if kind == 1:
        return name[:i] + name[i + 1 :]
    if kind == 2:
        return name[:i] + name[i] + name[i:]
    return name.lower()


def capitalised(email: str) -> str:
    """``ann.lee@acme.com`` -> ``Ann.Lee@Acme.com``: how some people and imports write addresses."""
    local, _, domain = email.partition("@")
    head, _, tail = domain.partition(".")
    return ".".join(p.capitalize() for p in local.split(".")) + "@" + head.capitalize() + "." + tail


def as_typed(rng: random.Random, email: str) -> str:
    """An address as a form received it: now and then capitalised."""
    return capitalised(email) if rng.random() < CAPITALISED_RATE else email

"""Records made bad on purpose, each listed in anomalies.csv with its kind.

Real sources hold broken data; contracts must catch it and quarantine it with a
reason. Each stream is exposed only to the kinds that happen there in practice,
about 0.75% of its records per kind.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from sandbox.clock import zendesk_time

ANOMALY_RATE = 0.0075  # share of a stream's records per anomaly kind
KINDS: dict[str, tuple[str, ...]] = {
    "stripe.customers": ("invalid_email", "wrong_type"),
    "stripe.subscriptions": ("unknown_enum", "missing_id"),
    "stripe.invoices": ("negative_amount", "missing_id", "wrong_type"),
    "hubspot.contacts": ("invalid_email", "wrong_type"),
    "zendesk.users": ("invalid_email",),
    "zendesk.tickets": ("unknown_enum", "missing_id"),
    "klaviyo.profiles": ("invalid_email",),
    "klaviyo.events": ("future_timestamp",),
    "mixpanel.events": ("future_timestamp", "missing_id", "wrong_type"),
}
# future_timestamp has no mutator: the renderer must pick a future time before it builds
# the record, because records.created has to agree with the payload.
RENDERER_MADE = "future_timestamp"


def roll(rng: random.Random, stream: str) -> str | None:
    """The anomaly kind a new record of ``stream`` gets, or None (the usual case)."""
    kinds = KINDS.get(stream, ())
    index = int(rng.random() / ANOMALY_RATE)
    return kinds[index] if index < len(kinds) else None


def spoil(rng: random.Random, stream: str, kind: str, payload: dict[str, Any]) -> None:
    """Make ``payload`` bad in the way ``kind`` says, in place."""
    if kind != RENDERER_MADE:
        MUTATORS[(stream, kind)](rng, payload)


def broken_email(rng: random.Random, email: str | None) -> str:
    """An address no mail server accepts, still recognisably derived from the real one."""
    local, _, domain = (email or "someone@example.com").strip().partition("@")
    return rng.choice((
        f"{local}@@{domain}", f"{local}.{domain}", f"{local}@{domain.split('.')[0]}", f"{local} @{domain}",
        f"{local}@{domain}.",
    ))


def _email_at(*path: str) -> Callable[[random.Random, dict[str, Any]], None]:
    def mutate(rng: random.Random, payload: dict[str, Any]) -> None:
        holder = payload
        for key in path[:-1]:
            holder = holder[key]
        holder[path[-1]] = broken_email(rng, holder[path[-1]])

    return mutate


def _set(path: tuple[str, ...], value: Callable[[random.Random, Any], Any]) -> Callable[..., None]:
    def mutate(rng: random.Random, payload: dict[str, Any]) -> None:
        holder = payload
        for key in path[:-1]:
            holder = holder[key]
        holder[path[-1]] = value(rng, holder.get(path[-1]))

    return mutate


def _negative(rng: random.Random, payload: dict[str, Any]) -> None:
    payload["amount_due"] = -abs(payload["amount_due"]) or -rng.randint(100, 5000)
    payload["amount_paid"] = -abs(payload["amount_paid"])


def _phone_number(rng: random.Random, phone: Any) -> int:
    digits = "".join(ch for ch in str(phone or "") if ch.isdigit())
    return int(digits) if digits else rng.randint(2_000_000_000, 9_999_999_999)


def _drop_distinct_id(rng: random.Random, payload: dict[str, Any]) -> None:
    del payload["properties"]["distinct_id"]


MUTATORS: dict[tuple[str, str], Callable[[random.Random, dict[str, Any]], None]] = {
    ("stripe.customers", "invalid_email"): _email_at("email"),
    ("stripe.customers", "wrong_type"): _set(("created",), lambda rng, v: zendesk_time(v)),
    ("stripe.subscriptions", "unknown_enum"): _set(("status",), lambda rng, v: rng.choice(("on_hold", "suspended"))),
    ("stripe.subscriptions", "missing_id"): _set(("customer",), lambda rng, v: None),
    ("stripe.invoices", "negative_amount"): _negative,
    ("stripe.invoices", "missing_id"): _set(("customer",), lambda rng, v: None),
    ("stripe.invoices", "wrong_type"): _set(("amount_due",), lambda rng, v: str(v)),
    ("hubspot.contacts", "invalid_email"): _email_at("properties", "email"),
    ("hubspot.contacts", "wrong_type"): _set(("properties", "phone"), _phone_number),
    ("zendesk.users", "invalid_email"): _email_at("email"),
    ("zendesk.tickets", "unknown_enum"): _set(("status",), lambda rng, v: rng.choice(("escalated", "waiting"))),
    ("zendesk.tickets", "missing_id"): _set(("requester_id",), lambda rng, v: None),
    ("klaviyo.profiles", "invalid_email"): _email_at("attributes", "email"),
    ("mixpanel.events", "missing_id"): _drop_distinct_id,
    ("mixpanel.events", "wrong_type"): _set(("properties", "time"), lambda rng, v: zendesk_time(v)),
}

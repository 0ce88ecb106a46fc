"""Churn in Stripe: customer edits and deletions, renewals, cancellations, each with its event.

Stripe lists filter only on creation time, so a connector sees these changes only
through ``/v1/events``; every change here writes the event Stripe would send.
"""

from __future__ import annotations

import string
from functools import partial
from typing import Any

from sandbox.context import Ctx
from sandbox.ids import stripe_id
from sandbox.phones import make_phone, render_phone
from sandbox.pools import BY_CODE, slug
from sandbox.render_stripe import PERIOD, RUNNING, render_invoice, stripe_event
from sandbox.store import Record


def update_customers(ctx: Ctx, count: int) -> int:
    """Customers change their billing email, name or phone (``customer.updated``)."""
    records = ctx.pick("stripe.customers", "cus", partial(stripe_id, ctx.seed, "cus"), count)
    for record in records:
        customer = record.payload
        field = ctx.rng.choice(("email", "name", "phone"))
        previous = {field: customer.get(field)}
        customer[field] = _new_value(ctx, customer, field)
        ctx.save(record)
        _event(ctx, record, "customer.updated", previous)
    return len(records)


def _new_value(ctx: Ctx, customer: dict[str, Any], field: str) -> str | None:
    rng = ctx.rng
    name = str(customer.get("name") or "alex doe")
    country = (customer.get("address") or {}).get("country") or "US"
    if field == "email":
        parts = [slug(part) for part in name.split()] or ["billing"]
        local = ".".join(p for p in parts if p) + str(rng.randint(1, 99))
        return f"{local}@{rng.choice(BY_CODE[country].providers)}"
    if field == "name":
        first, _, last = name.partition(" ")
        return f"{first} {rng.choice(string.ascii_uppercase)}. {last}".strip()
    return render_phone(rng, make_phone(rng, country), country, "e164")


def cancel_subscriptions(ctx: Ctx, count: int) -> int:
    """Running subscriptions are canceled now (``customer.subscription.deleted``)."""
    records = ctx.pick("stripe.subscriptions", "sub", partial(stripe_id, ctx.seed, "sub"), count, _running)
    for record in records:
        cancel(ctx, record)
    return len(records)


def cancel(ctx: Ctx, record: Record) -> None:
    subscription = record.payload
    previous = {"status": subscription["status"], "canceled_at": None}
    subscription.update(status="canceled", canceled_at=ctx.now, cancel_at_period_end=False)
    ctx.save(record)
    _event(ctx, record, "customer.subscription.deleted", previous)


def renew_subscriptions(ctx: Ctx, count: int) -> int:
    """A new billing period starts: the subscription moves on and a paid invoice appears."""
    records = ctx.pick("stripe.subscriptions", "sub", partial(stripe_id, ctx.seed, "sub"), count, _renewable)
    for record in records:
        subscription = record.payload
        item = subscription["items"]["data"][0]
        before = dict(item)
        previous: dict[str, Any] = {"items": {"object": "list", "data": [before]}}
        if subscription["status"] != "active":
            previous["status"] = subscription["status"]
            subscription["status"] = "active"
        period = PERIOD[item["price"]["recurring"]["interval"]]
        item.update(current_period_start=ctx.now, current_period_end=ctx.now + period)
        ctx.save(record)
        _event(ctx, record, "customer.subscription.updated", previous)
        person = ctx.sink.owner("stripe.subscriptions", record.id)
        if person is not None:
            amount = item["price"]["unit_amount"] * item["quantity"]
            render_invoice(ctx, person, subscription["customer"], record.id, subscription["currency"], amount,
                           ctx.now, ctx.now + period, "paid")
    return len(records)


def delete_customers(ctx: Ctx, count: int) -> int:
    """Customers are deleted: their running subscriptions end, then ``customer.deleted``."""
    records = ctx.pick("stripe.customers", "cus", partial(stripe_id, ctx.seed, "cus"), count)
    for record in records:
        person = ctx.sink.owner("stripe.customers", record.id)
        for sid in ctx.sink.owned_by(person, "stripe.subscriptions") if person is not None else []:
            subscription = ctx.sink.get("stripe.subscriptions", sid)
            if subscription and subscription.payload.get("customer") == record.id and _running(subscription.payload):
                cancel(ctx, subscription)
        stub = {"id": record.id, "object": "customer", "deleted": True}
        record.payload.clear()
        record.payload.update(stub)
        ctx.save(record, archived=True)
        _event(ctx, record, "customer.deleted")
    return len(records)


def _event(ctx: Ctx, record: Record, kind: str, previous: dict[str, Any] | None = None) -> None:
    person = ctx.sink.owner(record.stream, record.id)
    if person is not None:
        stripe_event(ctx, person, kind, record.payload, ctx.now, previous)


def _running(subscription: dict[str, Any]) -> bool:
    return subscription.get("status") in RUNNING


def _renewable(subscription: dict[str, Any]) -> bool:
    return subscription.get("status") in ("active", "trialing", "past_due") and bool(subscription.get("items"))

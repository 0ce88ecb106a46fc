"""Stripe: customers, subscriptions, invoices, and the events of the last 30 days.

Billing often knows a person by a different address than the CRM. Stripe lists
filter only on creation time, so every change must also appear as an event; the
API keeps 30 days of them, so the build writes events only for that window.
"""

from __future__ import annotations

from typing import Any

import orjson

from sandbox.clock import DAY, HOUR
from sandbox.context import Ctx
from sandbox.hard import show_customer
from sandbox.ids import stripe_id
from sandbox.people import Person, weighted
from sandbox.phones import render_phone
from sandbox.pools import BY_CODE

API_VERSION = "2024-06-20"
EVENTS_WINDOW = 30 * DAY
MAX_INVOICES = 12
SECOND_SUBSCRIPTION_SHARE = 0.25
CANCEL_SHARE = 0.25
TRIAL = 14 * DAY
PLANS = (
    ("starter", 1900, "month", 0.45), ("pro", 4900, "month", 0.30), ("team", 9900, "month", 0.10),
    ("pro_annual", 49000, "year", 0.10), ("team_annual", 99000, "year", 0.05),
)
PLAN_WEIGHTS = tuple((i, plan[-1]) for i, plan in enumerate(PLANS))
CURRENCIES = ("usd", "eur", "gbp")
PERIOD = {"month": 30 * DAY, "year": 365 * DAY}
STATUSES = (("active", 0.82), ("past_due", 0.10), ("unpaid", 0.04), ("paused", 0.04))
RUNNING = frozenset({"active", "trialing", "past_due", "unpaid", "paused"})


def price(seed: int, plan: int, currency: str) -> dict[str, Any]:
    """The catalogue price of a plan in a currency (ids are fixed per world)."""
    _, amount, interval, _ = PLANS[plan]
    return {
        "id": stripe_id(seed, "price", plan * len(CURRENCIES) + CURRENCIES.index(currency)),
        "product": stripe_id(seed, "prod", plan), "unit_amount": amount, "currency": currency,
        "recurring": {"interval": interval},
    }


def render_stripe(ctx: Ctx, person: Person) -> None:
    """A customer some time after signup, with one or two subscriptions."""
    if not person.in_stripe:
        return
    rng = ctx.rng
    created = ctx.between(person.signup, min(ctx.now, person.signup + 60 * DAY))
    cid = ctx.ids.stripe("cus")
    email = person.work if person.work and rng.random() < 0.6 else (person.home or person.primary)
    company_name = person.company.name if person.company is not None and rng.random() < 0.1 else None
    city, _, postal, street = person.place
    typed = ctx.typed(person.pid, email)
    names = None if company_name else (ctx.spell(person.pid, person.first), ctx.spell(person.pid, person.last))
    payload = {
        "id": cid, "object": "customer", "created": created, "email": typed,
        "name": company_name or " ".join(names or ()),
        "phone": render_phone(rng, person.phone, person.country),
        "address": {"line1": street, "city": city, "postal_code": postal, "country": person.country},
        "currency": BY_CODE[person.country].currency, "balance": 0, "livemode": False,
        "metadata": {"product_user_id": person.user_id} if person.user_id and rng.random() < 0.6 else {},
    }
    anomaly = ctx.bad("stripe.customers")
    show_customer(ctx, person, payload, names, anomaly)
    ctx.emit("stripe.customers", cid, created, ctx.ms(created), payload, person.pid, anomaly)
    stripe_event(ctx, person.pid, "customer.created", payload, created)
    start = created
    for _ in range(1 + (rng.random() < SECOND_SUBSCRIPTION_SHARE)):
        render_subscription(ctx, person.pid, cid, payload["currency"], start)
        start = ctx.between(start, ctx.now)


def render_subscription(ctx: Ctx, person: int, customer: str, currency: str, created: int) -> None:
    """A subscription, its renewals and cancellation, and an invoice per period (the last 12)."""
    rng = ctx.rng
    plan = weighted(rng, PLAN_WEIGHTS)[0]
    item_price = price(ctx.seed, plan, currency)
    period = PERIOD[PLANS[plan][2]]
    quantity = rng.randint(2, 25) if PLANS[plan][0].startswith("team") else 1
    sid = ctx.ids.stripe("sub")
    canceled_at = None
    if ctx.now - created < TRIAL:
        status = "trialing"
    elif ctx.now - created > 35 * DAY and rng.random() < CANCEL_SHARE:
        status, canceled_at = "canceled", ctx.between(created + 30 * DAY, ctx.now)
    else:
        status = weighted(rng, STATUSES)[0]
    periods = ((canceled_at or ctx.now) - created) // period + 1
    current = created + (periods - 1) * period
    item = {"id": ctx.ids.stripe("si"), "quantity": quantity, "current_period_start": current,
            "current_period_end": current + period, "price": item_price}
    payload = {
        "id": sid, "object": "subscription", "customer": customer, "status": status, "created": created,
        "canceled_at": canceled_at, "cancel_at_period_end": status == "active" and rng.random() < 0.05,
        "currency": currency, "items": {"object": "list", "data": [item]}, "metadata": {},
    }
    ctx.emit("stripe.subscriptions", sid, created, ctx.ms(max(current, canceled_at or 0)), payload, person,
             ctx.bad("stripe.subscriptions"))
    first = {**item, "current_period_start": created, "current_period_end": created + period}
    initial = {**payload, "status": "trialing" if status == "trialing" else "active", "canceled_at": None,
               "cancel_at_period_end": False, "items": {"object": "list", "data": [first]}}
    stripe_event(ctx, person, "customer.subscription.created", initial, created)
    if periods > 1:
        before = {**item, "current_period_start": current - period, "current_period_end": current}
        renewed = {**payload, "status": "active" if canceled_at else payload["status"], "canceled_at": None}
        stripe_event(ctx, person, "customer.subscription.updated", renewed, current,
                     {"items": {"object": "list", "data": [before]}})
    if canceled_at:
        stripe_event(ctx, person, "customer.subscription.deleted", payload, canceled_at)
    if status == "trialing":
        return
    for k in range(max(0, periods - MAX_INVOICES), periods):
        last = k == periods - 1
        state = "paid"
        if last and status in ("past_due", "unpaid"):
            state = "open" if status == "past_due" else "uncollectible"
        elif rng.random() < 0.01:
            state = "void"
        start = created + k * period
        render_invoice(ctx, person, customer, sid, currency, item_price["unit_amount"] * quantity, start,
                       start + period, state)


def render_invoice(
    ctx: Ctx, person: int, customer: str, subscription: str, currency: str, amount: int, start: int, end: int,
    status: str,
) -> None:
    """An invoice opened at the start of its period and, usually, paid within the hour."""
    iid = ctx.ids.stripe("in")
    created = ctx.at(start)
    settled = ctx.at(created + ctx.rng.randint(60, HOUR if status == "paid" else DAY))
    payload = {
        "id": iid, "object": "invoice", "customer": customer, "subscription": subscription, "status": status,
        "amount_due": amount, "amount_paid": amount if status == "paid" else 0, "currency": currency,
        "created": created, "period_start": start, "period_end": end,
    }
    changed = created if status == "open" else settled
    ctx.emit("stripe.invoices", iid, created, ctx.ms(changed), payload, person, ctx.bad("stripe.invoices"))
    stripe_event(ctx, person, "invoice.created", {**payload, "status": "open", "amount_paid": 0}, created)
    if status == "paid":
        stripe_event(ctx, person, "invoice.paid", payload, settled)
    elif status != "open":
        stripe_event(ctx, person, "invoice.updated", payload, settled, {"status": "open"})


def stripe_event(
    ctx: Ctx, person: int, kind: str, obj: dict[str, Any], t: int, previous: dict[str, Any] | None = None
) -> None:
    """The event of a change, with a snapshot of the object; none older than Stripe keeps."""
    if t < ctx.now - EVENTS_WINDOW:
        return
    eid = ctx.ids.stripe("evt")
    data: dict[str, Any] = {"object": orjson.loads(orjson.dumps(obj))}  # a snapshot: churn edits objects later
    if previous is not None:
        data["previous_attributes"] = previous
    payload = {"id": eid, "object": "event", "type": kind, "created": t, "api_version": API_VERSION, "data": data}
    ctx.emit("stripe.events", eid, t, ctx.event_order(t), payload, person)

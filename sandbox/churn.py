"""The world keeps moving: each tick applies one batch of changes stamped at the tick's time.

New people sign up across their sources, CRM contacts move through the funnel,
customers edit their details, subscriptions renew and churn, consent changes,
tickets progress, emails go out, the product is used, and some records are
deleted or archived. Every changed record gets ``updated = now_ms`` with matching
payload times, so incremental pulls find exactly what moved. A tick is
deterministic given the world and the sequence of ticks: its random stream is
seeded from the world's seed and a tick counter kept in meta.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from functools import partial
from typing import Any

from sandbox import churn_stripe
from sandbox.chunks import render_chunk
from sandbox.clock import WEEK, hubspot_time, klaviyo_time, zendesk_time
from sandbox.context import PRODUCT_USERS, Ctx, Rng, Sink, save_meta
from sandbox.hard import Hard
from sandbox.hardness import Hardness
from sandbox.ids import (
    HUBSPOT_COMPANY_BASE,
    Ids,
    company_id,
    contact_id,
    device_id,
    klaviyo_id,
    product_user_id,
    zendesk_ticket_id,
    zendesk_user_id,
)
from sandbox.people import company_from_payload, make_people
from sandbox.phones import make_phone, render_phone
from sandbox.pools import BY_NAME
from sandbox.render_hubspot import next_stage, touch
from sandbox.render_klaviyo import OPEN_RATE, campaign, email_event, email_marketing, metric_ids
from sandbox.render_mixpanel import usage_event
from sandbox.render_zendesk import advance, render_ticket
from sandbox.store import Record, WorldStore

COMPANIES_TO_HIRE_FROM = 8
_TICK_LOCK = threading.Lock()


def tick(store: WorldStore, now_ms: int, changes: int = 20) -> dict[str, int]:
    """Apply one batch of changes at ``now_ms``; returns how many of each kind happened.

    Ticks are serialised within the process (the server ticks from a background
    thread and on request): two at once would hand out the same ids.
    """
    with _TICK_LOCK:
        return _tick(store, now_ms, changes)


def take_numbers(store: WorldStore, counter: str, count: int) -> range:
    """Counter numbers for records a destination write creates, taken between ticks so none is handed out twice."""
    with _TICK_LOCK:
        first = int(store.get_meta(f"next_{counter}"))
        if count:
            store.set_meta(f"next_{counter}", first + count)
    return range(first, first + count)


def _tick(store: WorldStore, now_ms: int, changes: int) -> dict[str, int]:
    meta = {row[0]: json.loads(row[1]) for row in store.connect().execute("SELECT key, value FROM meta")}
    if "seed" not in meta:
        raise ValueError(f"{store.folder} holds no built world (meta has no seed)")
    seed, number = int(meta["seed"]), int(meta.get("tick", 0))
    ids = Ids.from_meta(seed, meta)
    hard = Hard(Hardness.from_dict(meta.get("hardness", {})), Rng(f"{seed}:tick:{number}:hardness"))
    ctx = Ctx(Rng(f"{seed}:tick:{number}"), ids, Sink(store), meta["pools"], now_ms // 1000, now_ms,
              live=True, metrics=metric_ids(seed), hard=hard)
    c, few = changes, max(1, changes // 20)
    steps: tuple[tuple[str, Callable[[Ctx, int], int], int], ...] = (
        ("people_signed_up", sign_up, max(1, c // 4)),
        ("hubspot_contacts_updated", update_contacts, c),
        ("hubspot_companies_updated", update_companies, max(1, c // 4)),
        ("stripe_customers_updated", churn_stripe.update_customers, max(1, c // 2)),
        ("stripe_subscriptions_renewed", churn_stripe.renew_subscriptions, max(1, c // 2)),
        ("stripe_subscriptions_canceled", churn_stripe.cancel_subscriptions, max(1, c // 10)),
        ("klaviyo_consent_changed", change_consent, max(1, c // 2)),
        ("klaviyo_profiles_emailed", send_campaign, c),
        ("zendesk_tickets_progressed", progress_tickets, c),
        ("zendesk_tickets_opened", open_tickets, max(1, c // 2)),
        ("mixpanel_users_active", use_product, c),
        ("hubspot_contacts_archived", archive_contacts, few),
        ("hubspot_companies_archived", archive_companies, few),
        ("stripe_customers_deleted", churn_stripe.delete_customers, few),
        ("klaviyo_profiles_deleted", delete_profiles, few),
        ("zendesk_users_deleted", delete_users, few),
        ("zendesk_tickets_deleted", delete_tickets, few),
    )
    counts = {name: step(ctx, size) for name, step, size in steps}
    counts["records_created"] = sum(ctx.sink.created.values())
    counts["records_changed"] = sum(ctx.sink.changed.values())
    counts["stripe_events"] = ctx.sink.created["stripe.events"]
    ctx.sink.flush()
    save_meta(store.connect(), {**ids.to_meta(), "tick": number + 1})
    return counts


def sign_up(ctx: Ctx, count: int) -> int:
    """New people join, some hired into existing companies; they appear in their sources at once."""
    picked = ctx.pick("hubspot.companies", "company", company_id, COMPANIES_TO_HIRE_FROM)
    companies = [company_from_payload(int(r.id) - HUBSPOT_COMPANY_BASE, r.payload) for r in picked]
    hardness = ctx.hard.settings if ctx.hard else None
    people = make_people(ctx.rng, ctx.pools, ctx.ids, companies, count, ctx.now, live=True, hardness=hardness)
    render_chunk(ctx, [], people)
    return len(people)


def update_contacts(ctx: Ctx, count: int) -> int:
    """Contacts move down the funnel, change job title or phone."""
    records = ctx.pick("hubspot.contacts", "contact", contact_id, count)
    for record in records:
        props = record.payload["properties"]
        change = ctx.rng.choice(("lifecyclestage", "jobtitle", "phone"))
        if change == "lifecyclestage":
            props["lifecyclestage"] = next_stage(props.get("lifecyclestage"))
        elif change == "jobtitle":
            props["jobtitle"] = ctx.rng.choice(ctx.pools["titles"])
        else:
            country = BY_NAME[props["country"]].code if props.get("country") in BY_NAME else "US"
            props["phone"] = render_phone(ctx.rng, make_phone(ctx.rng, country), country)
        touch(record.payload, ctx.now_ms)
        ctx.save(record)
    return len(records)


def update_companies(ctx: Ctx, count: int) -> int:
    """Companies grow or shrink."""
    records = ctx.pick("hubspot.companies", "company", company_id, count)
    for record in records:
        props = record.payload["properties"]
        props["numberofemployees"] = str(max(1, int(int(props["numberofemployees"]) * ctx.rng.uniform(0.8, 1.3))))
        touch(record.payload, ctx.now_ms)
        ctx.save(record)
    return len(records)


def archive_contacts(ctx: Ctx, count: int) -> int:
    return _archive(ctx, ctx.pick("hubspot.contacts", "contact", contact_id, count))


def archive_companies(ctx: Ctx, count: int) -> int:
    return _archive(ctx, ctx.pick("hubspot.companies", "company", company_id, count))


def _archive(ctx: Ctx, records: list[Record]) -> int:
    """HubSpot moves archived objects to the ``archived=true`` listing, stamped ``archivedAt``."""
    for record in records:
        touch(record.payload, ctx.now_ms)
        record.payload.update(archived=True, archivedAt=hubspot_time(ctx.now_ms))
        ctx.save(record, archived=True)
    return len(records)


def _profiles(ctx: Ctx, count: int, ok: Callable[[dict[str, Any]], bool] = lambda payload: True) -> list[Record]:
    return ctx.pick("klaviyo.profiles", "kl_profile", partial(klaviyo_id, ctx.seed, "kl_profile"), count, ok)


def change_consent(ctx: Ctx, count: int) -> int:
    """Subscribers unsubscribe (with an Unsubscribed event); others opt in."""
    records = _profiles(ctx, count)
    for record in records:
        attributes = record.payload["attributes"]
        marketing = attributes["subscriptions"]["email"]["marketing"]
        leaving = marketing["consent"] == "SUBSCRIBED"
        marketing.update(email_marketing("UNSUBSCRIBED" if leaving else "SUBSCRIBED", klaviyo_time(ctx.now),
                                         "PREFERENCE_PAGE" if leaving else "FORM"))
        attributes["updated"] = klaviyo_time(ctx.now)
        ctx.save(record)
        person = ctx.sink.owner("klaviyo.profiles", record.id)
        if leaving and person is not None:
            email_event(ctx, person, record.id, "Unsubscribed", ctx.now, campaign(ctx, ctx.now // WEEK))
    return len(records)


def send_campaign(ctx: Ctx, count: int) -> int:
    """This week's campaign reaches some subscribers; some open it right away."""
    records = _profiles(ctx, count, _subscribed)
    props = campaign(ctx, ctx.now // WEEK)
    for record in records:
        person = ctx.sink.owner("klaviyo.profiles", record.id)
        if person is None:
            continue
        email_event(ctx, person, record.id, "Received Email", ctx.now, props)
        if ctx.rng.random() < OPEN_RATE:
            email_event(ctx, person, record.id, "Opened Email", ctx.now, props)
    return len(records)


def delete_profiles(ctx: Ctx, count: int) -> int:
    records = _profiles(ctx, count)
    for record in records:
        record.payload["attributes"]["updated"] = klaviyo_time(ctx.now)
        ctx.save(record, archived=True)
    return len(records)


def _subscribed(profile: dict[str, Any]) -> bool:
    return profile["attributes"]["subscriptions"]["email"]["marketing"]["consent"] == "SUBSCRIBED"


def _tickets(ctx: Ctx, count: int) -> list[Record]:
    live = ("closed", "deleted")
    return ctx.pick("zendesk.tickets", "zd_ticket", lambda n: str(zendesk_ticket_id(n)), count,
                    lambda ticket: ticket.get("status") not in live)


def progress_tickets(ctx: Ctx, count: int) -> int:
    records = _tickets(ctx, count)
    for record in records:
        advance(ctx, record.payload)
        ctx.save(record)
    return len(records)


def delete_tickets(ctx: Ctx, count: int) -> int:
    records = _tickets(ctx, count)
    for record in records:
        record.payload.update(status="deleted", updated_at=zendesk_time(ctx.now))
        ctx.save(record, archived=True)
    return len(records)


def _users(ctx: Ctx, count: int) -> list[Record]:
    return ctx.pick("zendesk.users", "zd_user", lambda n: str(zendesk_user_id(n)), count,
                    lambda user: bool(user.get("active")))


def open_tickets(ctx: Ctx, count: int) -> int:
    """Existing end users write in again."""
    records = _users(ctx, count)
    for record in records:
        person = ctx.sink.owner("zendesk.users", record.id)
        if person is not None:
            render_ticket(ctx, person, int(record.id), record.payload.get("organization_id"), ctx.now)
    return len(records)


def delete_users(ctx: Ctx, count: int) -> int:
    records = _users(ctx, count)
    for record in records:
        record.payload.update(active=False, updated_at=zendesk_time(ctx.now))
        ctx.save(record, archived=True)
    return len(records)


def use_product(ctx: Ctx, count: int) -> int:
    """Existing product users do something, on their own main device."""
    active = 0
    for _ in range(count):
        n = ctx.ids.draw("user", ctx.rng)
        if n is None:
            break
        user = product_user_id(n)
        person = ctx.sink.owner(PRODUCT_USERS, user)
        if person is not None:
            usage_event(ctx, person, user, device_id(ctx.seed, person, 0), ctx.now)
            active += 1
    return active

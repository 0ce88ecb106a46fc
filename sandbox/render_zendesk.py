"""Zendesk Support: end users and their tickets, as the incremental export serves them.

A requester is known by whichever address they wrote from, so Zendesk often knows
a person by a different email than the CRM does.
"""

from __future__ import annotations

from typing import Any

from sandbox.clock import DAY, zendesk_time
from sandbox.context import Ctx
from sandbox.hard import show_zendesk_user
from sandbox.ids import organization_id, zendesk_ticket_id, zendesk_user_id
from sandbox.people import Person, weighted
from sandbox.phones import render_phone
from sandbox.pools import BY_CODE

BASE_URL = "https://sandbox.zendesk.com/api/v2"
MAX_TICKETS = 4
AGENTS = tuple(361_000_000_001 + i for i in range(12))
SUBJECTS = (
    "Can't log in to my account", "Invoice amount looks wrong", "How do I export my data?",
    "Feature request: dark mode", "Error when uploading a file", "Charged twice this month",
    "Please cancel my subscription", "Integration stopped syncing", "Reset two-factor authentication",
    "Update billing address", "Question about pricing plans", "Add a teammate to our workspace",
    "The app is very slow today", "Delete my account and data", "Webhook deliveries failing",
)
TAGS = ("billing", "login", "bug", "feature_request", "vip", "integration", "urgent")
TYPES = (("question", 0.4), ("incident", 0.3), ("problem", 0.1), ("task", 0.1), (None, 0.1))
PRIORITIES = (("low", 0.2), ("normal", 0.5), ("high", 0.2), ("urgent", 0.05), (None, 0.05))
CHANNELS = (("email", 0.5), ("web", 0.3), ("chat", 0.15), ("api", 0.05))
OPEN_FLOW = {"new": "open", "open": "pending", "pending": "solved", "hold": "open", "solved": "closed"}


def render_zendesk(ctx: Ctx, person: Person) -> None:
    """An end user created with their first ticket, then 1 to 4 tickets over time."""
    if not person.in_zendesk:
        return
    rng = ctx.rng
    created = ctx.between(person.signup, ctx.now)
    uid = zendesk_user_id(ctx.ids.take("zd_user"))
    updated = created if rng.random() < 0.6 else ctx.between(created, ctx.now)
    emails = person.emails
    email = person.primary if rng.random() < 0.6 else rng.choice(emails)
    org = organization_id(person.company.n) if person.company and rng.random() < 0.6 else None
    country = BY_CODE[person.country]
    names = (ctx.spell(person.pid, person.first), ctx.spell(person.pid, person.last))
    payload = {
        "id": uid,
        "url": f"{BASE_URL}/users/{uid}.json",
        "name": " ".join(names),
        "email": ctx.typed(person.pid, email),
        "phone": render_phone(rng, person.phone, person.country),
        "external_id": person.user_id if person.user_id and rng.random() < 0.5 else None,
        "role": "end-user",
        "active": True,
        "suspended": False,
        "organization_id": org,
        "tags": rng.sample(("beta", "vip", "enterprise", "churn-risk"), rng.choice((0, 0, 0, 1, 2))),
        "user_fields": {},
        "time_zone": country.timezones[person.tz][1],
        "locale": country.locale,
        "created_at": zendesk_time(created),
        "updated_at": zendesk_time(updated),
    }
    anomaly = ctx.bad("zendesk.users")
    show_zendesk_user(ctx, person, payload, names, anomaly)
    ctx.emit("zendesk.users", str(uid), created, ctx.ms(updated), payload, person.pid, anomaly)
    count = 1 if ctx.live else rng.randint(1, MAX_TICKETS)
    for t in sorted([created] + [ctx.between(created, ctx.now) for _ in range(count - 1)]):
        render_ticket(ctx, person.pid, uid, org, t)


def render_ticket(ctx: Ctx, person: int, requester: int, org: int | None, created: int) -> None:
    """A ticket whose status follows its age: old ones closed, recent ones still open."""
    rng = ctx.rng
    tid = zendesk_ticket_id(ctx.ids.take("zd_ticket"))
    age = ctx.now - created
    if ctx.live or age < 2 * DAY:
        status = rng.choice(("new", "new", "open", "pending"))
    elif age < 14 * DAY:
        status = rng.choice(("open", "pending", "hold", "solved", "solved"))
    else:
        status = "closed" if rng.random() < 0.75 else "solved"
    updated = created if status == "new" else ctx.between(created, min(ctx.now, created + 10 * DAY))
    solved = status in ("solved", "closed")
    score = rng.choice(("good", "good", "bad", "offered", "unoffered")) if solved else "unoffered"
    payload: dict[str, Any] = {
        "id": tid,
        "url": f"{BASE_URL}/tickets/{tid}.json",
        "subject": rng.choice(SUBJECTS),
        "description": " ".join(rng.sample(ctx.pools["sentences"], rng.randint(1, 3))),
        "status": status,
        "priority": weighted(rng, PRIORITIES)[0],
        "type": weighted(rng, TYPES)[0],
        "requester_id": requester,
        "submitter_id": requester,
        "assignee_id": None if status == "new" else rng.choice(AGENTS),
        "organization_id": org,
        "tags": rng.sample(TAGS, rng.randint(0, 2)),
        "via": {"channel": weighted(rng, CHANNELS)[0]},
        "satisfaction_rating": {"score": score},
        "custom_fields": [],
        "created_at": zendesk_time(created),
        "updated_at": zendesk_time(updated),
    }
    ctx.emit("zendesk.tickets", str(tid), created, ctx.ms(updated), payload, person, ctx.bad("zendesk.tickets"))


def advance(ctx: Ctx, payload: dict[str, Any]) -> str:
    """Move a ticket one step along its life (new -> open -> pending -> solved -> closed)."""
    status = OPEN_FLOW.get(payload["status"], "open")
    if payload["status"] == "pending" and ctx.rng.random() < 0.4:
        status = "open"  # the customer replied
    payload["status"] = status
    if payload.get("assignee_id") is None:
        payload["assignee_id"] = ctx.rng.choice(AGENTS)
    payload["updated_at"] = zendesk_time(ctx.now)
    return status

"""Klaviyo: metrics, profiles with email-marketing consent, and email engagement events.

Marketing mostly knows people by their home address. Weekly campaigns give many
people the same send at nearly the same moment; opens and clicks follow sends, and
an old work address bounces once its owner has left the company.
"""

from __future__ import annotations

from typing import Any

from sandbox.clock import DAY, HOUR, MINUTE, WEEK, YEAR, klaviyo_time
from sandbox.context import Ctx
from sandbox.hard import show_profile
from sandbox.ids import short_id, uuid_text
from sandbox.people import Company, Person
from sandbox.pools import BY_CODE

METRICS = ("Received Email", "Opened Email", "Clicked Email", "Bounced Email", "Unsubscribed")
MAX_SENDS = 12
OPEN_RATE = 0.45
CLICK_RATE = 0.30  # of opens
API_BASE = "https://a.klaviyo.com/api"


def metric_ids(seed: int) -> dict[str, str]:
    return {name: short_id(seed, f"metric:{name}") for name in METRICS}


def render_metrics(ctx: Ctx) -> None:
    created = ctx.now - 4 * YEAR
    for name, mid in ctx.metrics.items():
        attributes = {"name": name, "created": klaviyo_time(created), "updated": klaviyo_time(created),
                      "integration": {"name": "Klaviyo", "category": "Internal"}}
        ctx.emit("klaviyo.metrics", mid, created, created * 1000, {"type": "metric", "id": mid,
                 "attributes": attributes, "links": links("metrics", mid)}, None)


def campaign(ctx: Ctx, week: int) -> dict[str, Any]:
    """The weekly newsletter: the same subject and message id for everyone who got it."""
    phrase = ctx.pools["phrases"][week % len(ctx.pools["phrases"])]
    return {"Campaign Name": f"Weekly {week}: {phrase}", "Subject": phrase,
            "$message": short_id(ctx.seed, f"campaign:{week}")}


def render_klaviyo(ctx: Ctx, person: Person) -> None:
    """A profile for the address marketing knows, and one more for a job changer's old work address."""
    if not person.in_klaviyo:
        return
    if person.old_work and person.old_company and person.job_change:
        created = ctx.between(person.signup - 60 * DAY, person.signup)
        render_profile(ctx, person, person.old_work, person.old_company, person.old_title, "SUBSCRIBED", created,
                       bounce_after=person.job_change)
    email = person.home if person.home and (ctx.rng.random() < 0.7 or not person.work) else person.primary
    created = ctx.between(person.signup - 30 * DAY, person.signup + 7 * DAY)
    render_profile(ctx, person, email, person.company, person.title, person.email_consent, created)


def render_profile(
    ctx: Ctx, person: Person, email: str, company: Company | None, title: str | None, consent: str, created: int,
    bounce_after: int | None = None,
) -> None:
    rng = ctx.rng
    pid = ctx.ids.klaviyo("kl_profile")
    consent_at = None if consent == "NEVER_SUBSCRIBED" else created
    if consent == "UNSUBSCRIBED":
        consent_at = ctx.between(created + 30 * DAY, ctx.now)
    sends = [] if ctx.live or consent == "NEVER_SUBSCRIBED" else _send_weeks(ctx, created, consent_at)
    if bounce_after and not any(t > bounce_after for _, t in sends):  # the old address must bounce once
        week = rng.randint(bounce_after // WEEK + 1, ctx.now // WEEK - 1)
        sends.append((week, week * WEEK + 14 * HOUR))
    events: list[tuple[str, int, dict[str, Any]]] = []
    for week, sent in sends:
        props = campaign(ctx, week)
        if bounce_after and sent > bounce_after:
            events.append(("Bounced Email", sent, {**props, "Bounce Type": "hard"}))
            continue
        events.append(("Received Email", sent, props))
        if rng.random() < OPEN_RATE:
            opened = ctx.at(sent + rng.randint(5 * MINUTE, 3 * DAY))
            events.append(("Opened Email", opened, props))
            if rng.random() < CLICK_RATE:
                url = f"https://www.example.com/blog/{week}"
                events.append(("Clicked Email", ctx.at(opened + rng.randint(5, 600)), {**props, "URL": url}))
    if consent == "UNSUBSCRIBED" and consent_at is not None:
        events.append(("Unsubscribed", consent_at, campaign(ctx, consent_at // WEEK)))
    updated = max(created, consent_at or created)
    country = BY_CODE[person.country]
    city, region, postal, _ = person.place
    known_org = company is not None and rng.random() < 0.5
    attributes = {
        "email": ctx.typed(person.pid, email),
        "phone_number": person.phone if rng.random() < 0.5 else None,
        "external_id": person.user_id if person.user_id and rng.random() < 0.4 else None,
        "first_name": ctx.spell(person.pid, person.first),
        "last_name": ctx.spell(person.pid, person.last),
        "organization": company.name if known_org and company else None,
        "title": title if known_org else None,
        "locale": country.locale,
        "created": klaviyo_time(created),
        "updated": klaviyo_time(updated),
        "last_event_date": klaviyo_time(max(t for _, t, _ in events)) if events else None,
        "location": {"city": city, "country": country.name, "region": region, "zip": postal,
                     "timezone": country.timezones[person.tz][0]},
        "properties": {},
        "subscriptions": {"email": {"marketing": email_marketing(
            consent, klaviyo_time(consent_at) if consent_at is not None else None,
            {"SUBSCRIBED": "FORM", "UNSUBSCRIBED": "PREFERENCE_PAGE"}.get(consent),
        )}},
    }
    anomaly = ctx.bad("klaviyo.profiles")
    show_profile(ctx, person, attributes, anomaly)
    payload = {"type": "profile", "id": pid, "attributes": attributes, "links": links("profiles", pid)}
    ctx.emit("klaviyo.profiles", pid, created, ctx.ms(updated), payload, person.pid, anomaly)
    for metric, t, props in sorted(events, key=lambda e: e[1]):
        email_event(ctx, person.pid, pid, metric, t, props)


def links(collection: str, rid: str) -> dict[str, str]:
    """The ``links.self`` every JSON:API resource carries."""
    return {"self": f"{API_BASE}/{collection}/{rid}/"}


def email_marketing(consent: str, consent_timestamp: str | None, method: str | None) -> dict[str, Any]:
    """A profile's email marketing consent; only an unsubscribe suppresses the address here."""
    return {"can_receive_email_marketing": consent != "UNSUBSCRIBED", "consent": consent,
            "consent_timestamp": consent_timestamp, "method": method}


def _send_weeks(ctx: Ctx, created: int, until: int | None) -> list[tuple[int, int]]:
    """(campaign week, send time) of the campaigns this address got, between signup and unsubscribe."""
    end = until if until is not None and until > created else ctx.now
    first, last = created // WEEK + 1, end // WEEK
    weeks = list(range(first, last + 1))
    chosen = sorted(ctx.rng.sample(weeks, min(len(weeks), ctx.rng.randint(3, MAX_SENDS))))
    sends = [(w, w * WEEK + 14 * HOUR + ctx.rng.randrange(HOUR)) for w in chosen]
    return [(w, t) for w, t in sends if created <= t <= end]


def email_event(ctx: Ctx, person: int, profile: str, metric: str, t: int, props: dict[str, Any]) -> None:
    eid = ctx.ids.klaviyo("kl_event")
    anomaly = ctx.bad("klaviyo.events")
    if anomaly == "future_timestamp":
        t = ctx.future()
    uuid = uuid_text(f"{ctx.rng.getrandbits(128):032x}")
    payload = event_payload(eid, t, uuid, props, profile, ctx.metrics[metric])
    ctx.emit("klaviyo.events", eid, t, t * 1000, payload, person, anomaly)


def event_payload(eid: str, t: int, uuid: str, props: dict[str, Any], profile: str, metric: str) -> dict[str, Any]:
    """An event as ``GET /api/events`` serves it: its profile and metric are relationships."""
    attributes = {"timestamp": t, "datetime": klaviyo_time(t), "uuid": uuid, "event_properties": dict(props)}
    relationships = {"profile": {"data": {"type": "profile", "id": profile}},
                     "metric": {"data": {"type": "metric", "id": metric}}}
    return {"type": "event", "id": eid, "attributes": attributes, "relationships": relationships,
            "links": links("events", eid)}

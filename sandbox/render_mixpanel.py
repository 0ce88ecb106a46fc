"""Mixpanel raw export: product events, anonymous before signup and identified after.

Events before signup carry only ``$device_id`` (distinct_id ``$device:<id>``);
afterwards ``$user_id`` is the distinct_id. Household members share a family
device, and a couple sharing a login sends one ``$user_id`` from two people: truth
labels each event with the person who really did it.
"""

from __future__ import annotations

from typing import Any

from sandbox.clock import DAY, MINUTE
from sandbox.context import PRODUCT_USERS, Ctx
from sandbox.hard import show_signup_email
from sandbox.ids import product_user_id
from sandbox.people import Person, weighted

EVENTS = (
    ("Logged In", 0.35), ("Page Viewed", 0.20), ("Feature Used", 0.20), ("Report Created", 0.10),
    ("Invite Sent", 0.05), ("Settings Changed", 0.05), ("File Uploaded", 0.05),
)
FEATURES = ("dashboards", "reports", "exports", "alerts", "integrations", "sharing")
PAGES = ("/", "/pricing", "/features", "/blog", "/signup", "/customers")
PLATFORMS = (("Mac OS X", "Chrome"), ("Windows", "Edge"), ("Windows", "Chrome"), ("iOS", "Mobile Safari"),
             ("Android", "Chrome"), ("Linux", "Firefox"), ("Mac OS X", "Safari"))
CONSENT_EVENT = "Consent updated"
EMAIL_ON_SIGNUP = 0.6  # share of "Signed Up" events that carry the email typed into the form


def render_mixpanel(ctx: Ctx, person: Person) -> None:
    """About ten events: pre-signup page views, the signup, then product use until now."""
    if not person.in_product or person.login is None:
        return
    rng = ctx.rng
    owner = person.user_id is not None  # False: uses a partner's shared login
    if owner:
        ctx.sink.own(PRODUCT_USERS, person.login, person.pid)
        device = person.devices[0]
        for i in range(rng.randint(1, 3)):
            t = ctx.at(person.signup - rng.randint(MINUTE, 5 * DAY) // (i + 1))
            page = {"$current_url": f"https://www.example.com{rng.choice(PAGES)}"}
            product_event(ctx, person.pid, "Page Viewed", t, None, device, {**page, **(_utm(person) if i == 0 else {})})
        signup = {**_utm(person), "plan": "free"}
        if rng.random() < EMAIL_ON_SIGNUP:  # a job changer signed up with the work address they had then
            signup["email"] = show_signup_email(ctx, person, person.old_work or person.primary)
        product_event(ctx, person.pid, "Signed Up", person.signup, person.login, device, signup)
    times = [] if ctx.live else sorted(ctx.between(person.signup, ctx.now) for _ in range(rng.randint(3, 11)))
    consent_at = None
    if person.tracking_consent is not None:
        consent_at = ctx.between(person.signup, ctx.now)
        analytics, advertising = person.tracking_consent
        extra = {"analytics": analytics, "advertising": advertising}
        product_event(ctx, person.pid, CONSENT_EVENT, consent_at, person.login, rng.choice(person.devices), extra)
        if not analytics:  # no tracking after the person said no
            times = [t for t in times if t <= consent_at]
    for t in times:
        usage_event(ctx, person.pid, person.login, rng.choice(person.devices), t)


def render_second_login(ctx: Ctx, person: Person) -> None:
    """A second product account the person signed up for with another address (``two_accounts``)."""
    login = product_user_id(ctx.ids.take("user"))
    ctx.sink.own(PRODUCT_USERS, login, person.pid)
    signup = ctx.between(person.signup, ctx.now)
    email = show_signup_email(ctx, person, person.home or person.junk or person.primary)
    product_event(ctx, person.pid, "Signed Up", signup, login, person.devices[-1], {"plan": "free", "email": email})
    times = [] if ctx.live else sorted(ctx.between(signup, ctx.now) for _ in range(ctx.rng.randint(2, 6)))
    for t in times:
        usage_event(ctx, person.pid, login, ctx.rng.choice(person.devices), t)
    ctx.label(person.pid, "two_accounts")


def usage_event(ctx: Ctx, person: int, user: str, device: str, t: int) -> None:
    """One event of ordinary product use."""
    name = weighted(ctx.rng, EVENTS)[0]
    extra: dict[str, Any] = {}
    if name == "Feature Used":
        extra["feature"] = ctx.rng.choice(FEATURES)
    elif name == "Page Viewed":
        extra["$current_url"] = f"https://app.example.com/{ctx.rng.choice(FEATURES)}"
    product_event(ctx, person, name, t, user, device, extra)


def product_event(
    ctx: Ctx, person: int, name: str, t: int, user: str | None, device: str, extra: dict[str, Any]
) -> None:
    """An event as the raw export returns it; anonymous when ``user`` is None."""
    iid = ctx.ids.mixpanel()
    anomaly = ctx.bad("mixpanel.events")
    if anomaly == "future_timestamp":
        t = ctx.future()
    os_name, browser = PLATFORMS[int(device[:2], 16) % len(PLATFORMS)]
    properties: dict[str, Any] = {"time": t, "distinct_id": user or f"$device:{device}", "$device_id": device}
    if user:
        properties["$user_id"] = user
    properties["$insert_id"] = iid
    properties["mp_processing_time_ms"] = t * 1000 + ctx.rng.randint(40, 4000)
    properties.update({"$os": os_name, "$browser": browser, "mp_lib": "web", **extra})
    ctx.emit("mixpanel.events", iid, t, t * 1000, {"event": name, "properties": properties}, person, anomaly)


def _utm(person: Person) -> dict[str, str]:
    source, medium, campaign = person.channel
    utm = {"utm_source": source, "utm_medium": medium, "utm_campaign": campaign}
    return {key: value for key, value in utm.items() if value}

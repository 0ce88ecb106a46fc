"""HubSpot CRM v3: companies, contacts and contact-to-company associations.

The CRM holds the B2B side: a contact per work address, so a job change leaves
an old contact at the old company, and list imports leave duplicate contacts whose
address differs only in case and whitespace.
"""

from __future__ import annotations

from typing import Any

from sandbox.clock import DAY, hubspot_time
from sandbox.context import Ctx
from sandbox.hard import show_contact
from sandbox.ids import company_id, contact_id
from sandbox.people import Company, Person, weighted
from sandbox.phones import render_phone
from sandbox.pools import BY_CODE

LIFECYCLE = (
    ("subscriber", 0.15), ("lead", 0.30), ("marketingqualifiedlead", 0.20), ("salesqualifiedlead", 0.12),
    ("opportunity", 0.13), ("evangelist", 0.03), ("other", 0.07),
)
STAGE_ORDER = ("subscriber", "lead", "marketingqualifiedlead", "salesqualifiedlead", "opportunity", "customer")


def render_company(ctx: Ctx, company: Company) -> None:
    hid = company_id(company.n)
    created_ms = ctx.ms(company.created, jitter=True)
    modified_ms = max(created_ms, ctx.ms(ctx.between(company.created, ctx.now), jitter=True))
    created, modified = hubspot_time(created_ms), hubspot_time(modified_ms)
    properties = {
        "name": company.name, "domain": company.domain, "industry": company.industry, "city": company.city,
        "country": BY_CODE[company.country].name, "numberofemployees": str(company.employees),
        "createdate": created, "hs_lastmodifieddate": modified, "hs_object_id": hid,
    }
    payload = {"id": hid, "properties": properties, "createdAt": created, "updatedAt": modified, "archived": False}
    ctx.emit("hubspot.companies", hid, created_ms // 1000, modified_ms, payload, None)


def render_contacts(ctx: Ctx, person: Person) -> None:
    """The person's contacts: one per work address they had, plus an import duplicate for some."""
    if not person.in_hubspot or person.work is None or person.company is None:
        return
    stage = "customer" if person.in_stripe else weighted(ctx.rng, LIFECYCLE)[0]
    if person.old_company and person.old_work and person.job_change:
        created = ctx.between(person.signup - 120 * DAY, person.signup)
        _contact(ctx, person, person.old_work, person.old_company, person.old_title, "other", created,
                 person.job_change)
        created = ctx.between(person.job_change, min(ctx.now, person.job_change + 30 * DAY))
    else:
        created = ctx.between(person.signup - 90 * DAY, min(ctx.now, person.signup + 10 * DAY))
    _contact(ctx, person, person.work, person.company, person.title, stage, created, ctx.now)
    if person.duplicate_email:
        _contact(ctx, person, person.duplicate_email, person.company, None, "lead", ctx.between(created, ctx.now),
                 ctx.now, typed=False)


def _contact(
    ctx: Ctx, person: Person, email: str, company: Company, title: str | None, stage: str, created: int,
    until: int, typed: bool = True,
) -> None:
    rng = ctx.rng
    cid = contact_id(ctx.ids.take("contact"))
    created_ms = ctx.ms(created, jitter=True)
    modified_ms = created_ms if rng.random() < 0.3 else ctx.ms(ctx.between(created, until), jitter=True)
    modified_ms = max(created_ms, modified_ms)
    created_at, modified_at = hubspot_time(created_ms), hubspot_time(modified_ms)
    properties: dict[str, Any] = {
        "email": ctx.typed(person.pid, email) if typed else email,
        "firstname": ctx.spell(person.pid, person.first),
        "lastname": ctx.spell(person.pid, person.last),
        "phone": render_phone(rng, person.phone, person.country),
        "company": company.name,
        "jobtitle": title,
        "lifecyclestage": stage,
        "city": person.place[0],
        "country": BY_CODE[person.country].name,
        "createdate": created_at,
        "lastmodifieddate": modified_at,
        "hs_object_id": cid,
        "hs_email_optout": "true" if person.hs_optout else "false",
    }
    anomaly = ctx.bad("hubspot.contacts")
    show_contact(ctx, person, properties, anomaly)
    payload = {"id": cid, "properties": properties, "createdAt": created_at, "updatedAt": modified_at,
               "archived": False}
    ctx.emit("hubspot.contacts", cid, created_ms // 1000, modified_ms, payload, person.pid, anomaly)
    association = {
        "from": {"id": cid},
        "to": [{"toObjectId": int(company_id(company.n)),
                "associationTypes": [{"category": "HUBSPOT_DEFINED", "typeId": 1, "label": "Primary"}]}],
    }
    ctx.emit("hubspot.contact_companies", cid, created_ms // 1000, modified_ms, association, person.pid)


def render_second_contact(ctx: Ctx, person: Person) -> None:
    """A second contact someone entered by hand with the person's personal address (``two_accounts``)."""
    email = person.home or person.junk
    if person.company is None or email is None:
        return
    created = ctx.between(person.signup, ctx.now)
    _contact(ctx, person, email, person.company, person.title, "lead", created, ctx.now)
    ctx.label(person.pid, "two_accounts")


def touch(payload: dict[str, Any], now_ms: int) -> None:
    """Stamp a changed HubSpot object's modification time (contacts and companies use different names)."""
    stamp = hubspot_time(now_ms)
    field = "lastmodifieddate" if "lastmodifieddate" in payload["properties"] else "hs_lastmodifieddate"
    payload["properties"][field] = stamp
    payload["updatedAt"] = stamp


def next_stage(stage: str | None) -> str:
    """A contact moves one step down the funnel."""
    if stage not in STAGE_ORDER:
        return "lead"
    return STAGE_ORDER[min(STAGE_ORDER.index(stage) + 1, len(STAGE_ORDER) - 1)]

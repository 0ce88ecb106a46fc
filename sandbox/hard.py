"""The hard cases of real customer data, drawn for a chunk's people and shown on their records.

Everything here draws from the chunk's (or tick's) own hardness stream, never from the stream that decides
who exists, their ids, names, emails and sources: a world with other hardness settings has the same people.
A person's traits (a birth date, a nickname, a role mailbox, a household phone, a move, a namesake, a second
account) are drawn once for the chunk; the renderers then hand each record's payload to one of the
``show_*`` functions, which change the rendered values of that record only and label the case in cases.csv
when the record shows it.
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any

from sandbox.clock import DAY, YEAR
from sandbox.hardness import Hardness
from sandbox.ids import mix64, salt
from sandbox.phones import make_phone, render_phone
from sandbox.pools import JUNK_PROVIDERS, slug
from sandbox.spelling import capitalised, claim
from sandbox.variants import (
    birth_date_text,
    decomposed,
    house,
    initial,
    misrendered_address,
    mistyped_email,
    nickname,
    tagged_email,
    without_accents,
)

if TYPE_CHECKING:
    from sandbox.context import Ctx
    from sandbox.people import Person

ROLES = ("info", "sales", "billing", "support", "accounts", "office", "hello", "admin", "team", "contact")
ROLE_STREAMS = frozenset({"hubspot.contacts", "stripe.customers", "zendesk.users"})  # CRM, billing, support
AGAIN = 0.4  # after a person's first record showing a case of theirs, the share of their later records showing it
ROLE_GROUP = 2.5  # colleagues on one role mailbox, on average (2 or 3)
PHONE_STYLES = ("e164", "national", "dashes", "international")
HOUSE_NUMBERS = 400


@dataclass(slots=True)
class Traits:
    """What a person's records may show beyond their true values (sandbox.hard draws them)."""

    born: date
    house: int  # the household's house number on its pool street
    nickname: str | None = None
    role_mailbox: str | None = None
    phone: str | None = None  # a household phone this person's records show
    household: tuple[int, ...] = ()  # the people that phone is shared by
    moved_to: list[Any] | None = None  # the place of the later records: [city, region, postcode, street]
    located: int = 0  # records with a place: the first shows the old one, the last the new one
    namesake: Person | None = None  # another person whose first name, last name and city this one's records show
    aliases: dict[str, str] = field(default_factory=dict)  # true address -> the address fitting the namesake
    second: str | None = None  # "contact" or "login": a second CRM contact or product account


class Hard:
    """The hardness settings and stream of a chunk or tick, and which cases each person showed already."""

    def __init__(self, settings: Hardness, rng: random.Random) -> None:
        self.settings = settings
        self.rng = rng
        self.shown: set[tuple[int, str]] = set()
        self.located: dict[int, int] = {}

    def again(self, person: int, case: str) -> bool:
        """A person's first eligible record shows the case; later ones sometimes."""
        if (person, case) not in self.shown:
            self.shown.add((person, case))
            return True
        return self.rng.random() < AGAIN


# --- drawing the traits of a chunk's people -------------------------------------------------------------------


def assign(ctx: Ctx, people: list[Person]) -> None:
    """Traits for new people, drawn in a fixed order from the hardness stream."""
    hard = _hard(ctx)
    rng = hard.rng
    for person in people:
        head = person.partner.pid if person.partner and person.partner.pid < person.pid else person.pid
        born = date(1970, 1, 1) + timedelta(days=(ctx.now - rng.randint(18 * YEAR, 80 * YEAR)) // DAY)
        person.traits = Traits(born=born, house=1 + mix64(salt(ctx.seed, "house") ^ head) % HOUSE_NUMBERS)
    # A built chunk holds each shared-value case at least once, so small worlds have them, unless its rate is 0.
    ensure, settings = not ctx.live, hard.settings
    _namesakes(hard, people, ensure and settings.common_name > 0)
    _nicknames(hard, people)
    _households(hard, people, ensure and settings.household_phone > 0)
    _role_mailboxes(hard, people, ensure and settings.role_mailbox > 0)
    _movers(hard, ctx.pools, people)
    _second_accounts(hard, people)


def _namesakes(hard: Hard, people: list[Person], ensure: bool) -> None:
    """Some people share first name, last name and city with another (their emails follow their shown name)."""
    rng, taken = hard.rng, {e for p in people for e in (*p.emails, p.old_work) if e}
    paired: set[int] = set()
    for person in people:
        drawn = rng.random() < hard.settings.common_name / 2 or (ensure and not paired)
        if not drawn or person.pid in paired or person.partner or person.duplicate_email:
            continue
        others = [p for p in people if p.country == person.country and p.pid not in paired and p.partner is None
                  and (p.first, p.last) != (person.first, person.last)]
        if not others:
            continue
        model = rng.choice(others)
        paired.update((person.pid, model.pid))
        traits = _traits(person)
        traits.namesake = model
        for email in (*person.emails, person.old_work):
            if email:
                traits.aliases[email] = _renamed(rng, email, person, model, taken)


def _renamed(rng: random.Random, email: str, person: Person, model: Person, taken: set[str]) -> str:
    """The address with the namesake's name in place of the person's own, unique in the chunk."""
    local, _, domain = email.partition("@")
    old_first, old_last, new_first, new_last = slug(person.first), slug(person.last), slug(model.first), \
        slug(model.last)
    renamed = local.replace(old_last, new_last).replace(old_first, new_first)
    if renamed == local and renamed.startswith(old_first[:1] + new_last):
        renamed = new_first[:1] + renamed[1:]
    return claim(renamed, domain, taken, rng)


def _nicknames(hard: Hard, people: list[Person]) -> None:
    for person in people:
        traits = _traits(person)
        short = nickname(hard.rng, person.first)
        if short and traits.namesake is None and hard.rng.random() < hard.settings.nickname:
            traits.nickname = short


def _households(hard: Hard, people: list[Person], ensure: bool) -> None:
    """A landline both members give, or one partner's mobile given on the other's records."""
    rng, first = hard.rng, ensure
    for person in people:
        partner = person.partner
        if partner is None or partner.pid > person.pid:
            continue
        drawn, first = rng.random() < hard.settings.household_phone or first, False
        if not drawn:
            continue
        members = (partner.pid, person.pid)
        if partner.phone and rng.random() < 0.5:
            _traits(person).phone, _traits(person).household = partner.phone, members
        else:
            landline = make_phone(rng, person.country)
            for member in (person, partner):
                _traits(member).phone, _traits(member).household = landline, members


def _role_mailboxes(hard: Hard, people: list[Person], ensure: bool) -> None:
    """Groups of two or three colleagues whose CRM, billing or support records show one info@-style address."""
    rng = hard.rng
    eligible = [p for p in people if p.in_hubspot or p.in_stripe or p.in_zendesk]
    colleagues: dict[int, list[Person]] = defaultdict(list)
    for person in eligible:
        if person.company:
            colleagues[person.company.n].append(person)
    used: dict[int, set[str]] = defaultdict(set)
    for person in eligible:
        company = person.company
        drawn = rng.random() < hard.settings.role_mailbox / ROLE_GROUP or (ensure and not used)
        if company is None or _traits(person).role_mailbox or not drawn:
            continue
        free = [p for p in colleagues[company.n] if p is not person and _traits(p).role_mailbox is None]
        roles = [role for role in ROLES if role not in used[company.n]]
        if not free or not roles:
            continue
        role = rng.choice(roles)
        used[company.n].add(role)
        for member in (person, *rng.sample(free, min(len(free), rng.randint(1, 2)))):
            _traits(member).role_mailbox = f"{role}@{company.domain}"


def _movers(hard: Hard, pools: dict[str, Any], people: list[Person]) -> None:
    """People whose later records give another city and address than their earlier ones."""
    models = {t.namesake.pid for t in map(_traits, people) if t.namesake}  # their city is someone else's too
    for person in people:
        traits = _traits(person)
        traits.located = _located_records(person)
        if traits.located < 2 or traits.namesake or person.pid in models:
            continue
        if hard.rng.random() < hard.settings.moved:
            places = [p for p in pools["countries"][person.country]["places"] if p[0] != person.place[0]]
            traits.moved_to = hard.rng.choice(places)


def _located_records(person: Person) -> int:
    """How many of the person's records carry a city, in render order (contacts, customer, profiles)."""
    changed_job = bool(person.old_company and person.old_work and person.job_change)
    count = 0
    if person.in_hubspot and person.work and person.company:
        count += 1 + changed_job + (person.duplicate_email is not None)
    count += person.in_stripe
    if person.in_klaviyo:
        count += 1 + changed_job
    return count


def _second_accounts(hard: Hard, people: list[Person]) -> None:
    for person in people:
        kinds = []
        if person.in_hubspot and person.work and person.company and (person.home or person.junk):
            kinds.append("contact")
        if person.user_id:
            kinds.append("login")
        if kinds and hard.rng.random() < hard.settings.two_accounts:
            _traits(person).second = hard.rng.choice(kinds)


# --- showing them on records -------------------------------------------------------------------------------------


def show_contact(ctx: Ctx, person: Person, props: dict[str, Any], anomaly: str | None) -> None:
    """A HubSpot contact's properties, with the new person fields address, zip and date_of_birth."""
    hard, traits = _hard(ctx), _traits(person)
    props["firstname"], props["lastname"] = _names(ctx, person, props["firstname"], props["lastname"])
    props["email"] = _email(ctx, person, "hubspot.contacts", props["email"], anomaly)
    if anomaly != "wrong_type":  # that anomaly turns the phone into a number
        props["phone"] = _phone(ctx, person, props["phone"])
    city, _, street, postcode = _place(ctx, person)
    props["city"] = city
    props["address"], props["zip"] = _address(ctx, street, postcode, hard.settings.address_known)
    known = hard.rng.random() < hard.settings.birth_date_known
    error = hard.rng.random() < hard.settings.birth_date_error
    props["date_of_birth"] = birth_date_text(hard.rng, traits.born, error) if known else None


def show_customer(
    ctx: Ctx, person: Person, payload: dict[str, Any], names: tuple[str, str] | None, anomaly: str | None
) -> None:
    """A Stripe customer; ``names`` are the rendered first and last name, None when it is named as the company."""
    if names:
        payload["name"] = " ".join(_names(ctx, person, *names))
    payload["email"] = _email(ctx, person, "stripe.customers", payload["email"], anomaly)
    payload["phone"] = _phone(ctx, person, payload["phone"])
    city, _, street, postcode = _place(ctx, person)
    line1, postal = _address(ctx, street, postcode, 1 - _hard(ctx).settings.stripe_address_missing)
    payload["address"].update(line1=line1, city=city, postal_code=postal)


def show_zendesk_user(
    ctx: Ctx, person: Person, payload: dict[str, Any], names: tuple[str, str], anomaly: str | None
) -> None:
    payload["name"] = " ".join(_names(ctx, person, *names))
    payload["email"] = _email(ctx, person, "zendesk.users", payload["email"], anomaly)
    payload["phone"] = _phone(ctx, person, payload["phone"])


def show_profile(ctx: Ctx, person: Person, attributes: dict[str, Any], anomaly: str | None) -> None:
    """A Klaviyo profile, with ``location.address1`` beside its zip."""
    attributes["first_name"], attributes["last_name"] = _names(
        ctx, person, attributes["first_name"], attributes["last_name"])
    attributes["email"] = _email(ctx, person, "klaviyo.profiles", attributes["email"], anomaly)
    if attributes["phone_number"]:
        attributes["phone_number"] = _phone(ctx, person, attributes["phone_number"], "e164")
    city, region, street, postcode = _place(ctx, person)
    address1, zip_code = _address(ctx, street, postcode, _hard(ctx).settings.address_known)
    attributes["location"].update(city=city, region=region, address1=address1, zip=zip_code)


def show_signup_email(ctx: Ctx, person: Person, email: str) -> str:
    """The address typed into the product's sign-up form."""
    return _email(ctx, person, "mixpanel.events", email, None)


def _names(ctx: Ctx, person: Person, first: str, last: str) -> tuple[str, str]:
    hard, traits = _hard(ctx), _traits(person)
    rng, settings = hard.rng, hard.settings
    if traits.namesake:
        first, last = traits.namesake.first, traits.namesake.last
        _label_all(ctx, (person.pid, traits.namesake.pid), "common_name")
    if traits.nickname and hard.again(person.pid, "nickname"):
        first = traits.nickname
        ctx.label(person.pid, "nickname")
    elif first and rng.random() < settings.initial:
        first = initial(rng, first)
        ctx.label(person.pid, "nickname")
    if not (first.isascii() and last.isascii()):
        roll = rng.random()
        change = decomposed if roll < settings.decomposed else \
            without_accents if roll < settings.decomposed + settings.accents_dropped else None
        if change and (change(first), change(last)) != (first, last):
            first, last = change(first), change(last)
            ctx.label(person.pid, "diacritics")
    if rng.random() < settings.name_swap:
        first, last = last, first
        ctx.label(person.pid, "name_swap")
    return first, last


def _email(ctx: Ctx, person: Person, stream: str, email: str | None, anomaly: str | None) -> str | None:
    """The rendered address of a record with its namesake's name, a role mailbox, a typo or a tag."""
    if not email or anomaly == "invalid_email":  # that anomaly breaks the address itself
        return email
    hard, traits = _hard(ctx), _traits(person)
    rng, settings = hard.rng, hard.settings
    true = email.strip().lower()
    if true in traits.aliases:
        alias = traits.aliases[true]
        email = email.replace(email.strip(), alias if email.strip() == true else capitalised(alias))
    if traits.role_mailbox and stream in ROLE_STREAMS and true != person.old_work \
            and hard.again(person.pid, "role_mailbox"):
        ctx.label(person.pid, "role_mailbox")
        return traits.role_mailbox
    if rng.random() < settings.email_typo:
        ctx.label(person.pid, "email_typo")
        return mistyped_email(rng, email)
    if rng.random() < settings.plus_address and true.partition("@")[2] not in JUNK_PROVIDERS:
        ctx.label(person.pid, "plus_address")
        return tagged_email(rng, email)
    return email


def _phone(ctx: Ctx, person: Person, phone: str | None, style: str | None = None) -> str | None:
    """The rendered phone, or on some records the household's shared one."""
    hard, traits = _hard(ctx), _traits(person)
    if traits.phone is None or not hard.again(person.pid, "household_phone"):
        return phone
    _label_all(ctx, traits.household, "household_phone")
    return render_phone(hard.rng, traits.phone, person.country, style or hard.rng.choice(PHONE_STYLES))


def _place(ctx: Ctx, person: Person) -> tuple[str, str | None, str, str]:
    """(city, region, street, postcode) of a record: a mover's first is the old place, the last the new one."""
    hard, traits = _hard(ctx), _traits(person)
    place = person.place
    if traits.moved_to:
        seen = hard.located.get(person.pid, 0)
        hard.located[person.pid] = seen + 1
        if seen and (seen >= traits.located - 1 or hard.rng.random() < 0.5):
            place = traits.moved_to
            ctx.label(person.pid, "moved")
    city, region, postcode, street = place
    if traits.namesake:
        city, region = traits.namesake.place[0], traits.namesake.place[1]
        _label_all(ctx, (person.pid, traits.namesake.pid), "common_name")
    return city, region, house(street, traits.house), postcode


def _address(ctx: Ctx, street: str, postcode: str, known: float) -> tuple[str | None, str | None]:
    hard = _hard(ctx)
    if hard.rng.random() >= known:
        return None, None
    if hard.rng.random() < hard.settings.address_error:
        return misrendered_address(hard.rng, street, postcode)
    return street, postcode


def _label_all(ctx: Ctx, people: tuple[int, ...], case: str) -> None:
    for pid in people:
        ctx.label(pid, case)


def _hard(ctx: Ctx) -> Hard:
    if ctx.hard is None:
        raise RuntimeError("this context renders no people (it has no hardness stream)")
    return ctx.hard


def _traits(person: Person) -> Traits:
    if person.traits is None:
        raise RuntimeError(f"person {person.pid} has no traits: sandbox.hard.assign must run before rendering")
    return person.traits

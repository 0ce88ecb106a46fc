"""The real people and companies behind the records, generated a chunk at a time.

A person is everything the sources could know about one human: names, emails,
phone, employer, devices, acquisition channel, consent answers, and which sources
they appear in. Pairs within a chunk make the hard cases (households sharing a
device or a product login, job changes between the chunk's companies), so a chunk
never needs anyone outside it and memory stays flat however big the world is.
"""

from __future__ import annotations

import math
import random
from bisect import bisect_right
from dataclasses import dataclass
from functools import lru_cache
from itertools import accumulate
from typing import TYPE_CHECKING, Any

from sandbox.clock import DAY, YEAR
from sandbox.hardness import Hardness
from sandbox.ids import Ids, device_id, product_user_id
from sandbox.phones import make_phone
from sandbox.pools import BY_CODE, BY_NAME, COUNTRIES, INDUSTRIES, slug
from sandbox.spelling import capitalised, home_email, junk_email, work_email

if TYPE_CHECKING:
    from sandbox.hard import Traits

PEOPLE_PER_COMPANY = 8
B2B_SHARE = 0.75  # people with an employer and a work email
HUBSPOT_SHARE_OF_B2B = 0.93
PRODUCT_SHARE = 0.85  # people with a product login (Mixpanel events)
STRIPE_SHARE_OF_PRODUCT = 0.53
ZENDESK_SHARE = 0.30
KLAVIYO_SHARE = 0.80
PHONE_SHARE = 0.80
HOME_EMAIL_SHARE_OF_B2B = 0.70
JUNK_EMAIL_SHARE = 0.22
DUPLICATE_CONTACT_EVERY = 33  # one HubSpot person in 33 has a duplicate contact
SIGNUP_SPAN = 3 * YEAR
SHARED_DEVICE_SLOT = 9
CONSENTS = (("SUBSCRIBED", 0.60), ("UNSUBSCRIBED", 0.15), ("NEVER_SUBSCRIBED", 0.25))
CHANNELS: tuple[tuple[str | None, str | None, str | None, float], ...] = (
    ("google", "cpc", "brand_search", 0.18), ("google", "organic", None, 0.20),
    ("facebook", "paid_social", "spring_promo", 0.08), ("linkedin", "paid_social", "b2b_demand_gen", 0.10),
    ("newsletter", "email", "weekly_digest", 0.07), ("partner", "referral", "partner_program", 0.05),
    ("bing", "cpc", "generic_search", 0.04), ("producthunt", "referral", "launch", 0.03),
    (None, None, None, 0.25),
)
COUNTRY_WEIGHTS = tuple((country.code, country.weight) for country in COUNTRIES)


@dataclass(frozen=True, slots=True)
class Company:
    n: int  # company number: HubSpot and Zendesk organisation ids derive from it
    name: str
    domain: str
    country: str
    city: str
    industry: str
    employees: int
    created: int


@dataclass(slots=True)
class Person:
    pid: int
    first: str
    last: str
    country: str
    place: list[Any]  # [city, region, postal code, street]
    tz: int  # index into the country's time zones
    phone: str | None  # E.164
    signup: int  # unix seconds of the product signup (first touch)
    channel: tuple[str | None, str | None, str | None]
    company: Company | None = None
    title: str | None = None
    work: str | None = None
    home: str | None = None
    junk: str | None = None
    old_company: Company | None = None
    old_work: str | None = None
    old_title: str | None = None
    job_change: int | None = None
    partner: Person | None = None  # household member, generated just before this person
    user_id: str | None = None  # own product account
    login: str | None = None  # the product user id their events carry (a partner's, if shared)
    devices: tuple[str, ...] = ()
    in_hubspot: bool = False
    in_stripe: bool = False
    in_zendesk: bool = False
    in_klaviyo: bool = False
    in_product: bool = False
    duplicate_email: str | None = None  # a second CRM contact's address: case or whitespace variant
    email_consent: str = "NEVER_SUBSCRIBED"
    tracking_consent: tuple[bool, bool] | None = None  # (analytics, advertising) if answered
    hs_optout: bool = False
    traits: Traits | None = None  # what the hard cases show on their records (sandbox.hard), drawn apart

    @property
    def emails(self) -> list[str]:
        return [e for e in (self.work, self.home, self.junk) if e]

    @property
    def primary(self) -> str:
        return self.work or self.home or self.junk or ""


def hard_cases(person: Person) -> list[str]:
    """The hard cases a person makes by who they are (cases.csv); renderers add ``typos``, ``case_variants``
    and the cases sandbox.hard shows on records.

    A household either shares a login (one member has none of their own) or, both
    having one, a family device.
    """
    cases = []
    if person.partner and person.login:
        cases.append("shared_login" if person.login == person.partner.login else "shared_device")
    if len({*person.emails, person.old_work} - {None}) > 1:
        cases.append("several_emails")
    if person.duplicate_email:
        cases.append("case_variants")
    if person.job_change is not None:
        cases.append("job_change")
    return cases


def weighted(rng: random.Random, options: tuple[tuple[Any, ...], ...]) -> tuple[Any, ...]:
    """Pick an option whose last element is its weight (``options`` should be a constant: its sums are cached)."""
    bounds = _bounds(options)
    return options[min(bisect_right(bounds, rng.random() * bounds[-1]), len(options) - 1)]


@lru_cache(maxsize=64)
def _bounds(options: tuple[tuple[Any, ...], ...]) -> list[float]:
    return list(accumulate(option[-1] for option in options))


def make_companies(rng: random.Random, pools: dict[str, Any], ids: Ids, count: int, now: int) -> list[Company]:
    """Companies numbered from the counter; a bijection of the number into two surnames keeps domains unique."""
    words = pools["words"]
    companies = []
    for _ in range(count):
        n = ids.take("company")
        a, b = words[n % len(words)], words[(n // len(words) + 7 * (n % len(words)) + 1) % len(words)]
        country = BY_CODE[weighted(rng, COUNTRY_WEIGHTS)[0]]
        style = rng.random()
        if style < 0.35:
            name = f"{a}-{b}"
        elif style < 0.75:
            name = f"{a} & {b} {rng.choice(country.suffixes)}"
        else:
            name = f"{a}, {b} and {rng.choice(words)}"
        companies.append(Company(
            n=n, name=name, domain=f"{slug(a)}-{slug(b)}.{rng.choice(country.tlds)}", country=country.code,
            city=rng.choice(pools["countries"][country.code]["places"])[0], industry=rng.choice(INDUSTRIES),
            employees=int(10 ** rng.uniform(0.7, 4.3)), created=now - SIGNUP_SPAN - rng.randrange(2 * YEAR),
        ))
    return companies


def make_people(
    rng: random.Random, pools: dict[str, Any], ids: Ids, companies: list[Company], count: int, now: int,
    live: bool = False, hardness: Hardness | None = None,
) -> list[Person]:
    """``count`` new people; ``live`` ones sign up at ``now`` (churn), others over three years before it.

    Of ``hardness`` (default: the default world's) only households, shared logins and job changes are drawn
    here; the other hard cases come from their own stream (sandbox.hard).
    """
    hardness = hardness or Hardness()
    taken: set[str] = set()
    people: list[Person] = []
    for _ in range(count):
        previous = people[-1] if people else None
        joins = previous is not None and previous.partner is None and rng.random() < hardness.households
        person = _person(rng, pools, ids, companies, taken, now, live, previous if joins else None,
                         hardness.job_change)
        people.append(person)
    _mark_duplicate_contacts(people)
    _open_accounts(rng, ids, people, hardness.shared_login_every)
    return people


def _mark_duplicate_contacts(people: list[Person]) -> None:
    """Every so often a list import re-created a CRM contact with a messier address."""
    crm = 0
    for person in people:
        if person.in_hubspot and person.work:
            if crm % DUPLICATE_CONTACT_EVERY == DUPLICATE_CONTACT_EVERY // 4:
                variants = (f"  {capitalised(person.work)} ", person.work.upper(), f"{person.work} ")
                person.duplicate_email = variants[crm // DUPLICATE_CONTACT_EVERY % len(variants)]
            crm += 1


def _open_accounts(rng: random.Random, ids: Ids, people: list[Person], shared_login_every: int) -> None:
    """Product logins and devices; households share a family device or, one in three, a login."""
    households = 0
    for person in people:
        shares_login = False
        if person.partner and person.partner.pid < person.pid:  # the household's second member
            shares_login = households % shared_login_every == 0  # first in each chunk, so small worlds have one
            households += 1
        if person.in_product and not shares_login:
            person.user_id = product_user_id(ids.take("user"))
            person.in_stripe = rng.random() < STRIPE_SHARE_OF_PRODUCT
        person.login = person.user_id or (person.partner.user_id if person.partner else None)
        person.in_product = person.login is not None
        own = tuple(device_id(ids.seed, person.pid, slot) for slot in range(1 + (rng.random() < 0.4)))
        if person.partner and person.user_id and person.partner.user_id:  # a family laptop both use
            shared = device_id(ids.seed, person.partner.pid, SHARED_DEVICE_SLOT)
            own, person.partner.devices = (*own, shared), (*person.partner.devices, shared)
        person.devices = own


def _person(
    rng: random.Random, pools: dict[str, Any], ids: Ids, companies: list[Company], taken: set[str], now: int,
    live: bool, partner: Person | None, job_change: float,
) -> Person:
    country = BY_CODE[partner.country if partner else weighted(rng, COUNTRY_WEIGHTS)[0]]
    names = pools["countries"][country.code]
    first = rng.choice(names["first"])
    last = partner.last if partner else rng.choice(names["last"])
    signup = now if live else now - int(SIGNUP_SPAN * (1 - math.sqrt(rng.random())))
    if partner:
        signup = max(signup, partner.signup)
    person = Person(
        pid=ids.take("person"), first=first, last=last, country=country.code,
        place=partner.place if partner else rng.choice(names["places"]),
        tz=partner.tz if partner else rng.randrange(len(country.timezones)),
        phone=make_phone(rng, country.code) if rng.random() < PHONE_SHARE else None,
        signup=signup, channel=weighted(rng, CHANNELS)[:3], partner=partner,
    )
    if partner:
        partner.partner = person
    b2b = bool(companies) and rng.random() < B2B_SHARE
    if b2b:
        person.company = rng.choice(companies)
        person.title = rng.choice(pools["titles"])
        person.work = work_email(rng, first, last, person.company.domain, taken)
        _maybe_change_job(rng, pools, person, companies, taken, now, live, job_change)
    if not b2b or rng.random() < HOME_EMAIL_SHARE_OF_B2B:
        person.home = home_email(rng, first, last, country.providers, taken)
    if rng.random() < JUNK_EMAIL_SHARE:
        person.junk = junk_email(rng, first, taken)
    person.in_hubspot = b2b and rng.random() < HUBSPOT_SHARE_OF_B2B
    person.in_product = partner is not None or rng.random() < PRODUCT_SHARE
    if partner:
        partner.in_product = True
    person.in_zendesk = rng.random() < ZENDESK_SHARE
    person.in_klaviyo = rng.random() < KLAVIYO_SHARE
    person.email_consent = weighted(rng, CONSENTS)[0]
    if rng.random() < 0.30:
        person.tracking_consent = (rng.random() < 0.85, rng.random() < 0.60)
    person.hs_optout = rng.random() < (0.5 if person.email_consent == "UNSUBSCRIBED" else 0.04)
    return person


def _maybe_change_job(
    rng: random.Random, pools: dict[str, Any], person: Person, companies: list[Company], taken: set[str],
    now: int, live: bool, rate: float,
) -> None:
    """Some people moved here from another company; their old work address now bounces."""
    earliest, latest = person.signup + 90 * DAY, now - 30 * DAY
    if live or len(companies) < 2 or latest <= earliest or rng.random() >= rate:
        return
    old = rng.choice(companies)
    if person.company is None or old.n == person.company.n:
        return
    person.old_company, person.old_title = old, rng.choice(pools["titles"])
    person.old_work = work_email(rng, person.first, person.last, old.domain, taken)
    person.job_change = rng.randrange(earliest, latest)


def company_from_payload(n: int, payload: dict[str, Any]) -> Company:
    """Rebuild a Company from its HubSpot record, so churn can hire new people into it."""
    props = payload["properties"]
    return Company(
        n=n, name=props["name"], domain=props["domain"], country=BY_NAME[props["country"]].code, city=props["city"],
        industry=props["industry"], employees=int(props["numberofemployees"]), created=0,
    )

"""The views' key figures against the same figures computed independently from the sandbox world's own records.

Each figure is computed here from the world's payloads, by the glossary of docs/views.md and the issue (never from
the views' SQL), three times:

1. `world`: every live record of the world, grouped by the real person behind it (the world's truth.csv);
2. `unquarantined`: the same without the records the warehouse quarantined (and those that reach a person only
   through a quarantined one: a subscription of a quarantined customer), still by real person; every live record
   must be staged or quarantined, or the check fails;
3. `profiled`: the staged records grouped by the profile the identity graph put them in (a record whose parent was
   quarantined counts alone where a view counts it so: billing totals, the `unattributed` rows).

A view must equal (3) in every row, and each row where it differs from (1) is explained: by the quarantined
records whose absence makes (1) -> (2), named with their reasons, and by the identity splits and merges (the
components of people and profiles sharing records that are not one person and one profile) or records counted
alone that make (2) -> (3). Figures per person are compared per component: per person where identity is right.
Figures: customer_360 MRR and revenue per currency, paying, open tickets; executive cells (signups, converted, MRR
and revenue per currency) and totals (paying, converted, churned, MRR, revenue); channel signups, converted and
revenue; account MRR, paying people, open tickets. Consent is held per destination (Braze, email audiences, Meta,
product analytics, HubSpot outreach) against what each real person said, and each billing audience's members
against its condition.
"""

from __future__ import annotations

import csv
import json
import math
from collections import Counter, defaultdict
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from cdp_assets.glossary import UNATTRIBUTED
from tests.conftest import Profiled

# The glossary of docs/views.md, stated here again rather than imported, over the sources' own statuses (Stripe's
# subscription and invoice statuses, Zendesk's ticket statuses): a subscription has MRR while it bills (active, or
# past due while Stripe retries); paying means MRR above zero; subscribed means a running status.
MRR_STATUSES = ("active", "past_due")
RUNNING_STATUSES = ("active", "trialing", "past_due", "unpaid", "paused")
CLOSED_TICKET_STATUSES = ("solved", "closed", "deleted")
MONTHS_PER = {"month": 1, "year": 1 / 12, "week": 52 / 12, "day": 365 / 12}  # a billing interval, per month
SIGNUP_EVENT = "Signed Up"
DIRECT = "direct"
UTM = ("utm_source", "utm_medium", "utm_campaign")
UNEXPLAINED = "UNEXPLAINED"
ORPHAN = "orphan:"  # owner of a record whose parent (a subscription's customer) the warehouse quarantined

# Where a record reaches its person through another record (stream -> (parent stream, parent id in payload)).
PARENTS: dict[str, tuple[str, Callable[[dict[str, Any]], Any]]] = {
    "stripe.subscriptions": ("stripe.customers", lambda p: p.get("customer")),
    "stripe.invoices": ("stripe.customers", lambda p: p.get("customer")),
    "zendesk.tickets": ("zendesk.users", lambda p: p.get("requester_id")),
}
STREAMS = ("stripe.customers", "stripe.subscriptions", "stripe.invoices", "zendesk.users", "zendesk.tickets",
           "hubspot.contacts", "klaviyo.profiles", "mixpanel.events")
STAGING = {  # stream -> (staging table, its key); staged = live rows there
    "stripe.customers": ("staging.stripe__customers", "customer_id"),
    "stripe.subscriptions": ("staging.stripe__subscriptions", "subscription_id"),
    "stripe.invoices": ("staging.stripe__invoices", "invoice_id"),
    "zendesk.users": ("staging.zendesk__users", "user_id"),
    "zendesk.tickets": ("staging.zendesk__tickets", "ticket_id"),
    "hubspot.contacts": ("staging.hubspot__contacts", "contact_id"),
    "klaviyo.profiles": ("staging.klaviyo__profiles", "profile_id"),
    "mixpanel.events": ("staging.mixpanel__events", "insert_id"),
}


def epoch(value: Any) -> float | None:
    """Seconds since the epoch from unix seconds or an ISO-8601 text (a quarantined record's time still says when)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return None
    return None


def amount(value: Any) -> int | None:
    """Cents from an integer or its text (a quarantined invoice's amount as a string still says what was paid)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return int(value) if isinstance(value, str) and value.lstrip("-").isdigit() else None


def month(t: float) -> Any:
    return datetime.fromtimestamp(t, UTC).date().replace(day=1)


@dataclass(frozen=True)
class Rec:
    stream: str
    id: str
    payload: dict[str, Any]


@dataclass
class Sources:
    """The world's live records, what the warehouse quarantined of them and who is behind each one."""

    records: dict[str, list[Rec]]
    truth: dict[tuple[str, str], str]  # (stream, id) -> real person
    profiles: dict[tuple[str, str], str]  # (stream, id) -> profile, for records the graph placed
    quarantined: dict[tuple[str, str], str]  # (stream, id) -> reasons
    staged: set[tuple[str, str]]
    as_of: float
    rates: dict[str, float]
    components: dict[str, str] = field(default_factory=dict)  # person or profile -> its identity component

    def parent(self, rec: Rec) -> tuple[str, str] | None:
        if rec.stream not in PARENTS:
            return None
        stream, key = PARENTS[rec.stream]
        value = key(rec.payload)
        return None if value is None else (stream, str(value))

    def lost(self, rec: Rec, orphans: bool = False) -> str | None:
        """Why the warehouse cannot count this record: its quarantine, or its parent's (unless `orphans` count)."""
        if (rec.stream, rec.id) in self.quarantined:
            return f"{rec.stream} {rec.id} quarantined: {self.quarantined[(rec.stream, rec.id)]}"
        if (parent := self.parent(rec)) in self.quarantined and not orphans:
            return f"{rec.stream} {rec.id} of {parent[0]} {parent[1]} quarantined: {self.quarantined[parent]}"
        return None

    def by_person(self, rec: Rec) -> str | None:
        return self.truth.get((rec.stream, rec.id))

    def component(self, who: str) -> str:
        return self.components.get(who, who)

    def by_profile(self, rec: Rec) -> str | None:
        """The record's profile; a record whose parent the warehouse quarantined counts alone, as an orphan."""
        key = self.parent(rec) or (rec.stream, rec.id)
        return self.profiles.get(key) or (f"{ORPHAN}{key[0]} {key[1]}" if key in self.quarantined else None)


def load(profiled: Profiled) -> Sources:
    rows = profiled.rows
    as_of = rows("SELECT any_value(as_of) AS t FROM identity.person_lifecycle")[0]["t"].timestamp()
    records = {}
    for stream in STREAMS:
        records[stream] = [Rec(r.stream, r.id, r.payload) for r in profiled.scan(stream)
                           if not r.archived and r.created <= as_of]  # fmt: skip
    with (profiled.world / "truth.csv").open(newline="") as f:
        truth = {(r["stream"], r["record_id"]): "person:" + r["person_id"] for r in csv.DictReader(f)}
    profiles = {key: "profile:" + p for key, p in profiled.owners().items()}
    quarantined = quarantined_records(profiled, records)
    staged = set()
    for stream, (table, key) in STAGING.items():
        staged |= {(stream, str(r[key])) for r in rows(f"SELECT {key} FROM {table} WHERE NOT is_deleted")}
    policy = yaml.safe_load((Path(__file__).parents[1] / "cdp_assets/views/policy.yaml").read_text())
    sources = Sources(records, truth, profiles, quarantined, staged, as_of, policy["reporting"]["rates"])
    sources.components = components(sources)
    return sources


def quarantined_records(profiled: Profiled, records: dict[str, list[Rec]]) -> dict[tuple[str, str], str]:
    """(stream, world id) -> reasons, for every quarantined row: by its record id when the world knows it, else by
    its landed payload (a product event without an insert id is quarantined under a made-up one)."""
    found: dict[tuple[str, str], str] = {}
    for stream, recs in records.items():
        ids = {r.id for r in recs}
        by_payload = {json.dumps(r.payload, sort_keys=True): r.id for r in recs}
        table = stream.replace(".", "__")
        raw = "raw." + stream.replace(".", "_")
        for q in profiled.rows(f"SELECT q.record_id, q.failed_checks, r.payload FROM quarantine.{table} q"
                               f" JOIN {raw} r ON r.landing_id = q.raw_landing_id"):  # fmt: skip
            world_id = q["record_id"] if q["record_id"] in ids else by_payload.get(
                json.dumps(json.loads(q["payload"]), sort_keys=True))
            if world_id is not None:
                reasons = "; ".join(c["reason"] for c in json.loads(q["failed_checks"]))
                found[(stream, world_id)] = reasons
    return found


def components(sources: Sources) -> dict[str, str]:
    """Each real person and profile -> its identity component: people and profiles joined by a record they share."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for recs in sources.records.values():
        for rec in recs:
            person, profile = sources.by_person(rec), sources.by_profile(rec)
            if (rec.stream, rec.id) in sources.staged and person and profile and not profile.startswith(ORPHAN):
                parent[find(person)] = find(profile)
    return {x: find(x) for x in list(parent)}


Figure = Callable[[Iterable[Rec], Callable[[Rec], str | None]], dict[Hashable, float]]


@dataclass
class Reconciliation:
    """One figure's rows: from the whole world, without quarantine, by profile, and each row's causes."""

    world: Counter
    unquarantined: Counter
    profiled: Counter
    causes: dict[Hashable, list[str]]


def reconcile(sources: Sources, figure: Figure, per: Callable[[str], str | None] | None = None,
              orphans: bool = False) -> Reconciliation:  # fmt: skip
    """A figure computed the three ways, with the records and identity changes behind each row's differences.

    A figure per person (its rows' keys start with the person or profile) is summed `per` what a row of the view
    counts: an identity component, an account. With `orphans`, a view counts a record whose parent the warehouse
    quarantined on its own (billing totals count a subscription whose customer no profile holds)."""
    live = [rec for recs in sources.records.values() for rec in recs]
    reasons = {id(rec): reason for rec in live if (reason := sources.lost(rec, orphans)) is not None}
    kept = [rec for rec in live if id(rec) not in reasons]
    staged = [rec for rec in kept if (rec.stream, rec.id) in sources.staged]
    unlanded = [f"{r.stream} {r.id}" for r in kept if (r.stream, r.id) not in sources.staged]
    assert not unlanded, f"live world records neither staged nor quarantined: {unlanded[:5]}"

    def rows(records: list[Rec], owner: Callable[[Rec], str | None]) -> Counter:
        values = figure(records, owner)
        if per is None:
            return Counter(values)
        out: Counter = Counter()
        for (who, *rest), value in values.items():
            if (row := per(who)) is not None:
                out[(row, *rest)] += value
        return out

    by_person, by_profile = sources.by_person, sources.by_profile
    world, without, placed = rows(live, by_person), rows(kept, by_person), rows(staged, by_profile)
    # Every figure adds up what each person's own records give, so a record changes only its own person's part, and
    # a component of people and profiles only its own part (no profile holds records of two components).
    own: dict[str | None, list[Rec]] = defaultdict(list)
    for rec in kept:
        own[by_person(rec)].append(rec)
    lost: dict[Hashable, list[str]] = defaultdict(list)  # world -> without quarantine: quarantined records
    for rec in live:
        if id(rec) in reasons and (person := by_person(rec)) is not None:
            before, after = rows(own[person], by_person), rows([*own[person], rec], by_person)
            for row in {row for row in set(before) | set(after) if before[row] != after[row]}:
                lost[row] += [reasons[id(rec)]] if reasons[id(rec)] not in lost[row] else []
    placing: dict[Hashable, list[str]] = defaultdict(list)  # without quarantine -> by profile: identity, orphans
    for rec in staged:
        if (owner := by_profile(rec) or "").startswith(ORPHAN):
            for row in {*rows([rec], by_profile), *rows([rec], by_person)}:
                parent = owner.removeprefix(ORPHAN)
                placing[row].append(f"{rec.stream} {rec.id} counted alone: its {parent} quarantined")
    components: dict[str, list[Rec]] = defaultdict(list)
    for person, recs in own.items():
        if person is not None:
            components[sources.component(person)] += recs
    for component, recs in components.items():
        members = sorted(x for x, c in sources.components.items() if c == component)
        if len(members) > 2:  # more than one person and one profile: a split or a merge
            ours = rows(recs, by_person)
            theirs = rows([r for r in recs if (r.stream, r.id) in sources.staged], by_profile)
            for row in {row for row in set(ours) | set(theirs) if ours[row] != theirs[row]}:
                placing[row].append(f"identity: {', '.join(members)} are one component")
    causes: dict[Hashable, list[str]] = {}
    for row in set(world) | set(without) | set(placed):
        unexplained = (world[row] != without[row] and not lost[row]) or (
            without[row] != placed[row] and not placing[row])
        causes[row] = [*lost[row], *placing[row], *([UNEXPLAINED] if unexplained else [])]
    return Reconciliation(world, without, placed, causes)


def assert_view_matches(name: str, view: Counter, result: Reconciliation) -> list[str]:
    """Every row of the view equals the figure by profile; every row differing from the world has its causes.

    Returns the explained differences, one line each, for the test's report."""
    rows = {row for row in set(view) | set(result.profiled) if view[row] or result.profiled[row]}
    wrong = [(row, view[row], result.profiled[row]) for row in sorted(rows, key=str)
             if view[row] != result.profiled[row]]  # fmt: skip
    assert not wrong, f"{name}: rows the view gets wrong (row, view, expected): {wrong[:10]}"
    unexplained = [(row, result.world[row], view[row]) for row, causes in result.causes.items()
                   if UNEXPLAINED in causes]  # fmt: skip
    assert not unexplained, f"{name}: differences from the world with no quarantine or identity cause: {unexplained}"
    return [f"{name} {row}: world {result.world[row]}, view {view[row]}: {'; '.join(result.causes[row])}"
            for row in sorted(result.causes, key=str) if result.world[row] != view[row]]


# -- figures, from the definitions ----------------------------------------------------------------------------------


def is_payment(invoice: dict[str, Any]) -> bool:
    """Revenue is what a paid invoice collected; a zero (or negative, refund-like) amount is no payment."""
    return invoice.get("status") == "paid" and (amount(invoice.get("amount_paid")) or 0) > 0


def cents(value: float) -> int:
    """To the cent, halves away from zero (as money is rounded everywhere, unlike Python's round)."""
    return int(math.copysign(math.floor(abs(value) + 0.5), value))


def subscription_mrr(payload: dict[str, Any]) -> tuple[str, int]:
    """A charged subscription's monthly amount in its currency, to the cent: price times quantity per month."""
    total = 0.0
    for item in payload["items"]["data"]:
        price = item["price"]
        total += price["unit_amount"] * item["quantity"] * MONTHS_PER[price["recurring"]["interval"]]
    return payload["currency"].lower(), cents(total)


def billing(records: Iterable[Rec], owner: Callable[[Rec], str | None]) -> dict[Hashable, float]:
    """Per person: ("mrr", currency), ("revenue", currency), ("paying", "") if their MRR is above zero."""
    out: Counter = Counter()
    for rec in records:
        who = owner(rec)
        if who is None:
            continue
        p = rec.payload
        if rec.stream == "stripe.subscriptions" and p.get("status") in MRR_STATUSES:
            currency, monthly = subscription_mrr(p)
            out[(who, "mrr", currency)] += monthly
        elif rec.stream == "stripe.invoices" and is_payment(p):
            out[(who, "revenue", p["currency"].lower())] += amount(p["amount_paid"]) or 0
    out.update({(who, "paying", ""): 1 for (who, what, _), value in list(out.items()) if what == "mrr" and value > 0})
    return +out


def customer_states(records: Iterable[Rec], owner: Callable[[Rec], str | None]) -> dict[Hashable, float]:
    """Per person: ("converted", "") once an invoice was paid; ("churned", "") if converted, with subscriptions,
    and none of them subscribed any more."""
    records = list(records)
    subscriptions: dict[str, list[bool]] = defaultdict(list)
    for rec in records:
        if rec.stream == "stripe.subscriptions" and (who := owner(rec)) is not None:
            subscriptions[who].append(rec.payload.get("status") in RUNNING_STATUSES)
    out: Counter = Counter()
    for who in first_paid(records, owner):
        out[(who, "converted", "")] = 1
        out[(who, "churned", "")] = int(bool(subscriptions[who]) and not any(subscriptions[who]))
    return +out


def open_tickets(records: Iterable[Rec], owner: Callable[[Rec], str | None]) -> dict[Hashable, float]:
    out: Counter = Counter()
    for rec in records:
        is_open = rec.stream == "zendesk.tickets" and rec.payload.get("status") not in CLOSED_TICKET_STATUSES
        if is_open and (who := owner(rec)) is not None:
            out[(who, "open_tickets", "")] += 1
    return out


def customer_360_figures(records: Iterable[Rec], owner: Callable[[Rec], str | None]) -> dict[Hashable, float]:
    records = list(records)
    return {**billing(records, owner), **open_tickets(records, owner)}


def signups(records: Iterable[Rec], owner: Callable[[Rec], str | None], as_of: float) -> dict[str, tuple[float, str]]:
    """Per person who signed up by as_of: the first signup time and the first touch's channel ("direct" if none)."""
    first: dict[str, float] = {}
    touch: dict[str, tuple[float, str, str]] = {}
    for rec in records:
        if rec.stream != "mixpanel.events":
            continue
        props = rec.payload.get("properties") or {}
        t, who = epoch(props.get("time")), owner(rec)
        if t is None or t > as_of or who is None:
            continue
        if rec.payload.get("event") == SIGNUP_EVENT:
            first[who] = min(t, first.get(who, t))
        utm = [props[k] for k in UTM if props.get(k)]
        if utm and (who not in touch or (t, rec.id) < touch[who][:2]):
            touch[who] = (t, rec.id, " / ".join(utm))
    return {who: (t, touch[who][2] if who in touch else DIRECT) for who, t in first.items()}


def first_paid(records: Iterable[Rec], owner: Callable[[Rec], str | None]) -> set[str]:
    return {who for rec in records if rec.stream == "stripe.invoices" and is_payment(rec.payload)
            and (who := owner(rec)) is not None}  # fmt: skip


def to_reporting(sources: Sources, per_person: dict[Hashable, float], kind: str) -> Counter:
    """A person's money of one kind in the reporting currency, rounded to the cent per person."""
    amounts: Counter = Counter()
    for (who, what, currency), value in per_person.items():
        if what == kind:
            amounts[who] += value * sources.rates[currency]
    return Counter({who: cents(value) for who, value in amounts.items()})


def cohort_figures(sources: Sources, reporting: bool = False) -> Figure:
    """Per signup month x channel: signups, converted to paid, MRR and revenue per currency (or, with `reporting`,
    in the reporting currency, converted per person)."""

    def figure(records: Iterable[Rec], owner: Callable[[Rec], str | None]) -> dict[Hashable, float]:
        records = list(records)
        money = billing(records, owner)
        reported = {kind: to_reporting(sources, money, kind) for kind in ("mrr", "revenue")}
        paid = first_paid(records, owner)
        out: Counter = Counter()
        for who, (t, channel) in signups(records, owner, sources.as_of).items():
            cell = (month(t), channel)
            out[(*cell, "signups", "")] += 1
            out[(*cell, "converted_to_paid", "")] += who in paid
            if reporting:
                out.update({(*cell, kind, "reported"): reported[kind][who] for kind in reported})
            else:
                out.update({(*cell, kind, cur): v for (w, kind, cur), v in money.items() if w == who and cur})
        return +out

    return figure


def totals(records: Iterable[Rec], owner: Callable[[Rec], str | None]) -> dict[Hashable, float]:
    """Across everyone: paying, converted and churned customers, MRR and revenue per currency (billing totals)."""
    records = list(records)
    out: Counter = Counter()
    for (_, what, currency), value in (billing(records, owner) | customer_states(records, owner)).items():
        out[(what, currency)] += value
    return out


# -- the tests ------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sources(profiled: Profiled) -> Sources:
    return load(profiled)


def customer_360_rows(profiled: Profiled, sources: Sources) -> Counter:
    view: Counter = Counter()
    for r in profiled.rows("SELECT profile_id, mrr_cents, lifetime_revenue_cents, currency, open_tickets"
                           " FROM views.customer_360"):  # fmt: skip
        component = sources.component("profile:" + r["profile_id"])
        view[(component, "mrr", r["currency"] or "")] += r["mrr_cents"]
        view[(component, "revenue", r["currency"] or "")] += r["lifetime_revenue_cents"]
        view[(component, "paying", "")] += r["mrr_cents"] > 0
        view[(component, "open_tickets", "")] += r["open_tickets"]
    return +view


def test_customer_360_money_paying_and_open_tickets_match_the_world(profiled: Profiled, sources: Sources) -> None:
    result = reconcile(sources, customer_360_figures, per=sources.component)
    explained = assert_view_matches("customer_360", customer_360_rows(profiled, sources), result)
    assert sum(v for (_, what, _), v in result.world.items() if what == "paying") > 0
    print("\n".join(explained))


def test_an_unexplained_difference_fails(profiled: Profiled, sources: Sources) -> None:
    """Positive controls: a cent more in one row, a quarantined record the check is not told of, or identity splits
    it does not know of, fail."""
    view = customer_360_rows(profiled, sources)
    result = reconcile(sources, customer_360_figures, per=sources.component)
    row = next(row for row, value in view.items() if row[1] == "mrr" and value > 0)
    view[row] += 1
    with pytest.raises(AssertionError, match="rows the view gets wrong"):
        assert_view_matches("customer_360", view, result)
    forgotten = next(key for key in sources.quarantined if key[0] == "stripe.subscriptions")
    blind = replace(sources, quarantined={k: v for k, v in sources.quarantined.items() if k != forgotten})
    with pytest.raises(AssertionError, match=f"neither staged nor quarantined.*{forgotten[1]}"):
        reconcile(blind, customer_360_figures)
    unaware = reconcile(replace(sources, components={}), cohort_figures(sources))
    with pytest.raises(AssertionError, match="no quarantine or identity cause"):
        assert_view_matches("executive_cohorts", executive_cells(profiled), unaware)


def executive_cells(profiled: Profiled) -> Counter:
    view: Counter = Counter()
    for r in profiled.rows("SELECT * FROM views.executive_cohorts WHERE signups > 0"):
        cell = (r["cohort_month"], r["channel"])
        view.update({(*cell, "signups", ""): r["signups"], (*cell, "converted_to_paid", ""): r["converted_to_paid"]})
        for kind in ("mrr", "revenue"):
            view.update({(*cell, kind, cur): v for cur, v in r[f"{kind}_cents_by_currency"].items()})
    return +view


def test_executive_cells_match_the_world(profiled: Profiled, sources: Sources) -> None:
    result = reconcile(sources, cohort_figures(sources))
    explained = assert_view_matches("executive_cohorts", executive_cells(profiled), result)
    assert len({row[:2] for row in result.world}) > 50
    print("\n".join(explained))


def test_executive_totals_equal_the_billing_totals(profiled: Profiled, sources: Sources) -> None:
    """Every row together, the unattributed one too: paying customers, MRR and revenue per currency."""
    view: Counter = Counter()
    for r in profiled.rows("SELECT * FROM views.executive_cohorts"):
        view.update({("paying", ""): r["paying_now"], ("converted", ""): r["converted_to_paid"],
                     ("churned", ""): r["churned"]})  # fmt: skip
        for kind in ("mrr", "revenue"):
            view.update({(kind, cur): v for cur, v in r[f"{kind}_cents_by_currency"].items()})
    result = reconcile(sources, totals, orphans=True)
    print("\n".join(assert_view_matches("executive totals", +view, result)))


def test_channel_signups_paying_and_revenue_match_the_world(profiled: Profiled, sources: Sources) -> None:
    cells = cohort_figures(sources, reporting=True)

    def per_channel(records: Iterable[Rec], owner: Callable[[Rec], str | None]) -> dict[Hashable, float]:
        out: Counter = Counter()
        for (_, channel, name, _), value in cells(records, owner).items():
            if name != "mrr":
                out[(channel, name)] += value
        return out

    view: Counter = Counter()
    for r in profiled.rows("SELECT * FROM views.marketing_channel_performance"):
        channel = r["channel"]
        view.update({(channel, "signups"): r["signups"], (channel, "converted_to_paid"): r["paying_customers"],
                     (channel, "revenue"): r["revenue_cents"]})  # fmt: skip
    result = reconcile(sources, per_channel)
    print("\n".join(assert_view_matches("marketing_channel_performance", +view, result)))


# -- consent per destination: no row reaches a destination for a purpose its real person has not allowed ----------

PERSON_RECORDS = ("stripe.customers", "hubspot.contacts", "zendesk.users", "klaviyo.profiles")


@dataclass
class Consent:
    """What the world's people said, from every record they made (deleted and quarantined ones too: a refusal
    outlives its record, and one the warehouse could not land still binds), attributed by the world's truth."""

    grants: set[tuple[str, str]]  # (address, person): a live Klaviyo profile subscribed with that address
    refused_addresses: set[str]  # addresses whose Klaviyo profile is unsubscribed
    refused_email: set[str]  # people who opted out in HubSpot or unsubscribed on a record the warehouse quarantined
    refused_sales: set[str]  # people who opted out in HubSpot
    product: dict[str, dict[str, bool | None]]  # person -> purpose -> their latest product statement (None: unreadable)
    people: dict[str, set[str]]  # profile -> the real people of its person records and consent statements (of its
    # events if it has none)


def address(value: Any) -> str | None:
    return value.strip().lower() if isinstance(value, str) and "@" in value and " " not in value.strip() else None


def consent(profiled: Profiled, sources: Sources) -> Consent:
    grants: set[tuple[str, str]] = set()
    refused_addresses: set[str] = set()
    refused_email: set[str] = set()
    refused_sales: set[str] = set()
    for r in profiled.scan("klaviyo.profiles"):
        attributes = r.payload["attributes"]
        said = attributes["subscriptions"]["email"]["marketing"]["consent"]
        person, email = sources.truth.get((r.stream, r.id)), address(attributes.get("email"))
        if said == "SUBSCRIBED" and not r.archived and email and person:
            grants.add((email, person))
        elif said == "UNSUBSCRIBED":
            refused_addresses |= {email} if email else set()
            if person and (r.stream, r.id) in sources.quarantined:
                refused_email.add(person)
    for r in profiled.scan("hubspot.contacts"):
        person = sources.truth.get((r.stream, r.id))
        if person and r.payload["properties"].get("hs_email_optout") == "true":
            refused_email.add(person)
            refused_sales.add(person)
    latest: dict[tuple[str, str], tuple[float, bool | None]] = {}
    statements: set[tuple[str, str]] = set()
    for r in profiled.scan("mixpanel.events"):
        props = r.payload.get("properties") or {}
        person = sources.truth.get((r.stream, r.id))
        if r.payload.get("event") != "Consent updated" or person is None:
            continue
        statements.add((r.stream, r.id))
        t = epoch(props.get("time"))
        for purpose in ("analytics", "advertising"):
            said = props.get(purpose) if isinstance(props.get(purpose), bool) and t is not None else None
            at = math.inf if t is None else t  # a statement of unknown time may be the latest: it decides
            if (person, purpose) not in latest or at >= latest[(person, purpose)][0]:
                latest[(person, purpose)] = (at, said)
    product: dict[str, dict[str, bool | None]] = defaultdict(dict)
    for (person, purpose), (_, said) in latest.items():
        product[person][purpose] = said
    people: dict[str, set[str]] = defaultdict(set)
    events: dict[str, set[str]] = defaultdict(set)
    for (stream, record_id), profile in sources.profiles.items():
        if (person := sources.truth.get((stream, record_id))) is not None:
            # A consent statement another person made (on a login they share) placed in this profile is the identity
            # layer's misattribution: the profile then holds two people's say, and its rows are named as merged.
            placed = stream in PERSON_RECORDS or (stream, record_id) in statements
            (people if placed else events)[profile].add(person)
    for profile, persons in events.items():
        people.setdefault(profile, persons)
    return Consent(grants, refused_addresses, refused_email, refused_sales, product, dict(people))


def leaks(name: str, rows: list[dict[str, Any]], allowed: Callable[[str, dict[str, Any]], bool],
          known: Consent) -> list[str]:  # fmt: skip
    """Rows whose person has not allowed the destination's purpose; a profile merging several real people is the
    identity layer's error (named and returned), anything else fails."""
    merged, wrong = [], []
    for row in rows:
        profile = "profile:" + row["profile_id"]
        persons = known.people.get(profile, set())
        if persons and all(allowed(person, row) for person in persons):
            continue
        (merged if len(persons) > 1 else wrong).append(f"{name}: {row['profile_id']} ({sorted(persons)})")
    assert not wrong, f"{name}: rows reaching a destination without their person's consent: {wrong[:10]}"
    return merged


@pytest.fixture(scope="module")
def said(profiled: Profiled, sources: Sources) -> Consent:
    return consent(profiled, sources)


def test_email_destinations_get_only_addresses_their_person_subscribed(profiled: Profiled, sources: Sources,
                                                                         said: Consent) -> None:  # fmt: skip
    def allowed(person: str, row: dict[str, Any]) -> bool:
        email = address(row["email"])
        return (email is not None and (email, person) in said.grants and email not in said.refused_addresses
                and person not in said.refused_email)  # fmt: skip

    braze = profiled.rows("SELECT profile_id, email FROM views.marketing_contacts")
    audiences = profiled.rows("SELECT profile_id, email FROM views.marketing_audiences"
                              " WHERE purpose = 'email_marketing'")  # fmt: skip
    assert braze and audiences
    print("\n".join(leaks("marketing_contacts", braze, allowed, said) + leaks("email audiences", audiences, allowed,
                                                                               said)))  # fmt: skip


def test_advertising_and_analytics_reach_only_people_who_allowed_them(profiled: Profiled, sources: Sources,
                                                                       said: Consent) -> None:  # fmt: skip
    advertised = profiled.rows("SELECT profile_id FROM views.marketing_audiences WHERE purpose = 'advertising'")
    product = profiled.rows("SELECT profile_id FROM views.product_usage_people")
    assert advertised and product
    merged = leaks("advertising audiences", advertised,
                   lambda person, _: said.product.get(person, {}).get("advertising") is True, said)  # opt-in
    merged += leaks("product_usage_people", product, lambda person, _: said.product.get(person, {}).get(
        "analytics", True) is True, said)  # opt-out: silence allows, an unreadable latest statement does not
    outreach = profiled.rows("SELECT profile_id FROM views.customer_360 WHERE crm_contact_id IS NOT NULL"
                             " AND list_contains(purposes, 'sales_outreach')")  # fmt: skip  # what the sync sends
    merged += leaks("sales outreach (HubSpot)", outreach, lambda person, _: person not in said.refused_sales, said)
    print("\n".join(merged))


def test_account_money_paying_people_and_open_tickets_match_the_world(profiled: Profiled, sources: Sources) -> None:
    """Which account a person works for is the identity layer's call (company records and email domains); each
    account's figures are its people's, computed from the world, the real person placed by their profile."""
    account_of = {"profile:" + r["profile_id"]: r["account_id"]
                  for r in profiled.rows("SELECT profile_id, account_id FROM identity.account_people WHERE is_primary")}
    person_account: dict[str, set[str]] = defaultdict(set)
    for x, component in sources.components.items():
        if x in account_of:
            person_account[component].add(account_of[x])

    def account(who: str) -> str | None:
        """A profile's primary account; a real person's, if the profiles of their component agree on one."""
        if who.startswith("profile:"):
            return account_of.get(who)
        accounts = person_account.get(sources.components.get(who, ""), set())
        return next(iter(accounts)) if len(accounts) == 1 else None

    def billed_at(who: str) -> str:
        """Billing with no account (no primary account, no profile) is in the unattributed row."""
        return account(who) or UNATTRIBUTED

    view: Counter = Counter()
    for r in profiled.rows("SELECT account_id, mrr_cents_by_currency, paying_people, open_tickets"
                           " FROM views.account_360"):  # fmt: skip
        view.update({(r["account_id"], "mrr", cur): mrr for cur, mrr in r["mrr_cents_by_currency"].items()})
        view.update({(r["account_id"], "paying", ""): r["paying_people"], (r["account_id"], "open_tickets", ""):
                     r["open_tickets"]})  # fmt: skip
    money = reconcile(sources, lambda records, owner: Counter({k: v for k, v in billing(records, owner).items()
                                                               if k[1] != "revenue"}), per=billed_at, orphans=True)
    tickets = reconcile(sources, open_tickets, per=account)
    result = Reconciliation(money.world + tickets.world, money.unquarantined + tickets.unquarantined,
                            money.profiled + tickets.profiled, {**money.causes, **tickets.causes})
    print("\n".join(assert_view_matches("account_360", +view, result)))


# -- audiences: every member meets its audience's condition by the world's records -------------------------------


def audience_conditions(sources: Sources) -> Figure:
    """Per person, the billing audiences of audiences.yaml whose condition they meet (consent aside): prospect and
    retargeting (never paid, nothing subscribed), customer (subscribed), high value (MRR or revenue over its bar)."""
    spec = yaml.safe_load((Path(__file__).parents[1] / "cdp_assets/views/audiences.yaml").read_text())["audiences"]
    bars = spec["high_value"]["params"]

    def figure(records: Iterable[Rec], owner: Callable[[Rec], str | None]) -> dict[Hashable, float]:
        records = list(records)
        money = billing(records, owner)
        mrr, revenue = to_reporting(sources, money, "mrr"), to_reporting(sources, money, "revenue")
        paid = first_paid(records, owner)
        subscribed = {who for rec in records if rec.stream == "stripe.subscriptions"
                      and rec.payload.get("status") in RUNNING_STATUSES and (who := owner(rec)) is not None}
        out: Counter = Counter()
        for who in {owner(rec) for rec in records} - {None}:
            never_paid = who not in paid and who not in subscribed
            out.update({(who, "prospect"): never_paid, (who, "retargeting"): never_paid,
                        (who, "customer"): who in subscribed,
                        (who, "high_value"): mrr[who] >= bars["high_value_mrr_cents"]
                        or revenue[who] >= bars["high_value_revenue_cents"]})  # fmt: skip
        return +out

    return figure


def test_audience_members_meet_their_condition_by_the_world(profiled: Profiled, sources: Sources) -> None:
    """Consent aside (the tests above hold it per destination), a member of a billing audience meets its condition
    in the world's records, unless quarantine or identity explain why the warehouse saw otherwise."""
    result = reconcile(sources, audience_conditions(sources), per=sources.component)
    members: Counter = Counter()
    for r in profiled.rows("SELECT profile_id, audience FROM views.marketing_audiences"
                           " WHERE audience IN ('prospect', 'retargeting', 'customer', 'high_value')"):  # fmt: skip
        members[(sources.component("profile:" + r["profile_id"]), r["audience"])] += 1
    assert {audience for _, audience in members} == {"prospect", "retargeting", "customer", "high_value"}
    beyond = [(row, n, result.profiled[row]) for row, n in members.items() if n > result.profiled[row]]
    assert not beyond, f"members the warehouse's own records do not put in the audience: {beyond[:10]}"
    unexplained = [row for row in members if UNEXPLAINED in result.causes.get(row, [])]
    assert not unexplained, f"members the world does not put in the audience, with no cause: {unexplained[:10]}"
    for audience in ("prospect", "customer"):
        size = sum(n for (_, a), n in members.items() if a == audience)
        assert 0 < size <= sum(v for (_, a), v in result.world.items() if a == audience)
    print("\n".join(f"{row}: the world says {result.world[row]}: {'; '.join(result.causes[row])}"
                    for row in members if result.world[row] < members[row]))  # fmt: skip

"""Team views and consent on a real pipeline run, checked against figures recomputed from the world's payloads.

Records are grouped by the profile the identity graph put them in (the graph is scored in test_identity), and
only records staging holds count (bad records on purpose are quarantined). Rates, statuses and event names are
stated here, not imported from the code under test.
"""

from __future__ import annotations

import os
import shutil
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pytest
import yaml
from dagster import AssetCheckKey, AssetKey, AssetSelection, DagsterInstance, materialize

from tests.conftest import Profiled

DAY = 86_400
RATES = {"usd": 1.0, "eur": 1.08, "gbp": 1.27}
MRR_STATUSES = ("active", "past_due")
RUNNING_STATUSES = ("active", "trialing", "past_due", "unpaid", "paused")


def epoch(value: str | int | None) -> float | None:
    """Seconds since the epoch from unix seconds or any of the sources' ISO-8601 spellings."""
    if value is None or isinstance(value, int):
        return value
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def as_of(profiled: Profiled) -> float:
    return profiled.rows("SELECT any_value(as_of) AS t FROM identity.person_lifecycle")[0]["t"].timestamp()


class World:
    """The world's payloads of staged records, by the profile the graph put them in."""

    def __init__(self, profiled: Profiled) -> None:
        self.profiled = profiled
        self.owners = profiled.owners()
        self.customer_of = self.owned("stripe.customers")

    def owned(self, stream: str) -> dict[str, str]:
        return {record_id: person for (s, record_id), person in self.owners.items() if s == stream}

    def staged(self, stream: str, table: str, key: str) -> list:
        ids = self.profiled.staged(table, key)
        return [r for r in self.profiled.scan(stream) if r.id in ids]


@pytest.fixture(scope="module")
def world(profiled: Profiled) -> World:
    return World(profiled)


def first_touch_and_signup(world: World, now: float) -> tuple[dict[str, str], dict[str, float]]:
    channel: dict[str, tuple[float, str, str]] = {}
    signup: dict[str, float] = {}
    for r in world.staged("mixpanel.events", "staging.mixpanel__events", "insert_id"):
        props, t = r.payload["properties"], r.payload["properties"].get("time")
        if r.archived or not isinstance(t, int) or t > now:
            continue
        person = world.owners[(r.stream, r.id)]
        utm = [props[k] for k in ("utm_source", "utm_medium", "utm_campaign") if props.get(k)]
        if utm and (person not in channel or (t, r.id) < channel[person][:2]):
            channel[person] = (t, r.id, " / ".join(utm))
        if r.payload["event"] == "Signed Up":
            signup[person] = min(t, signup.get(person, t))
    return {person: c for person, (_, _, c) in channel.items()}, signup


def billing(world: World) -> tuple[dict[str, float], dict[str, int], dict[str, int], dict[str, float]]:
    """Per person: first paid invoice time, subscriptions, running subscriptions, last cancellation."""
    first_paid: dict[str, float] = {}
    for r in world.staged("stripe.invoices", "staging.stripe__invoices", "invoice_id"):
        p = r.payload
        if p["customer"] in world.customer_of and p["status"] == "paid" and p["amount_paid"] > 0 and not r.archived:
            person = world.customer_of[p["customer"]]
            first_paid[person] = min(p["created"], first_paid.get(person, p["created"]))
    subscriptions, running, canceled = Counter(), Counter(), {}
    for r in world.staged("stripe.subscriptions", "staging.stripe__subscriptions", "subscription_id"):
        if r.payload["customer"] not in world.customer_of or r.archived:
            continue
        person = world.customer_of[r.payload["customer"]]
        subscriptions[person] += 1
        running[person] += r.payload["status"] in RUNNING_STATUSES
        if r.payload["canceled_at"]:
            canceled[person] = max(r.payload["canceled_at"], canceled.get(person, 0))
    return first_paid, subscriptions, running, canceled


def test_channel_conversion_and_churn_match_the_world(profiled: Profiled, world: World) -> None:
    now = as_of(profiled)
    channel_of, signup = first_touch_and_signup(world, now)
    first_paid, subscriptions, running, canceled = billing(world)
    expected: dict[str, Counter[str]] = defaultdict(Counter)
    for person, signed_up in signup.items():
        c = expected[channel_of.get(person, "direct")]
        c["signups"] += 1
        paid = first_paid.get(person)
        if signed_up <= now - 90 * DAY:
            c["matured"] += 1
            c["paid_90"] += paid is not None and paid <= signed_up + 90 * DAY
        if paid is not None:
            c["paying"] += 1
            if subscriptions[person] and not running[person]:
                c["churned"] += 1
                c["churned_90"] += canceled[person] <= paid + 90 * DAY

    rows = {r["channel"]: r for r in profiled.rows("SELECT * FROM views.marketing_channel_performance")}
    assert set(rows) == set(expected)
    for channel, c in expected.items():
        row = rows[channel]
        assert (row["signups"], row["matured_signups"], row["paid_within_90d"]) == (
            c["signups"], c["matured"], c["paid_90"]), channel  # fmt: skip
        assert (row["paying_customers"], row["churned_customers"], row["churned_within_90d"]) == (
            c["paying"], c["churned"], c["churned_90"]), channel  # fmt: skip
        if c["matured"]:
            assert row["paid_conversion_90d"] == pytest.approx(c["paid_90"] / c["matured"], abs=5e-5)
        if c["paying"]:
            assert row["churn_rate"] == pytest.approx(c["churned"] / c["paying"], abs=5e-5)
    assert sum(c["paid_90"] for c in expected.values()) > 0 and sum(c["churned"] for c in expected.values()) > 0


def test_every_interaction_is_on_the_timeline_in_order(profiled: Profiled, world: World) -> None:
    now = as_of(profiled)
    expected: Counter[str] = Counter()

    def count(person: str | None, at: float | None) -> None:
        if person is not None and at is not None and at <= now:
            expected[person] += 1

    user_of = world.owned("zendesk.users")
    for r in world.staged("zendesk.tickets", "staging.zendesk__tickets", "ticket_id"):
        if not r.archived and r.payload["status"] != "deleted":
            count(user_of.get(str(r.payload["requester_id"])), epoch(r.payload["created_at"]))
    for r in world.staged("stripe.invoices", "staging.stripe__invoices", "invoice_id"):
        if not r.archived:
            count(world.customer_of.get(r.payload["customer"]), r.payload["created"])
    for r in world.staged("stripe.subscriptions", "staging.stripe__subscriptions", "subscription_id"):
        if not r.archived:
            person = world.customer_of.get(r.payload["customer"])
            count(person, r.payload["created"])
            count(person, r.payload["canceled_at"])
    klaviyo_of = world.owned("klaviyo.profiles")
    for r in world.staged("klaviyo.events", "staging.klaviyo__events", "event_id"):
        if not r.archived:
            person = klaviyo_of.get(r.payload["relationships"]["profile"]["data"]["id"])
            count(person, epoch(r.payload["attributes"]["datetime"]))
    for r in world.staged("mixpanel.events", "staging.mixpanel__events", "insert_id"):
        if not r.archived and isinstance(r.payload["properties"]["time"], int):
            count(world.owners[(r.stream, r.id)], r.payload["properties"]["time"])

    rows = profiled.rows("SELECT profile_id, seq, occurred_at FROM views.customer_timeline ORDER BY profile_id, seq")
    assert Counter(r["profile_id"] for r in rows) == expected
    previous: dict[str, tuple[int, datetime]] = {}
    for r in rows:
        seq, at = previous.get(r["profile_id"], (0, datetime.min.replace(tzinfo=UTC)))
        assert (r["seq"], r["occurred_at"] >= at) == (seq + 1, True), r
        previous[r["profile_id"]] = (r["seq"], r["occurred_at"])


def test_account_mrr_and_territory_match_the_world(profiled: Profiled, world: World) -> None:
    mrr: Counter[str] = Counter()
    for r in world.staged("stripe.subscriptions", "staging.stripe__subscriptions", "subscription_id"):
        p = r.payload
        if p["customer"] in world.customer_of and p["status"] in MRR_STATUSES and not r.archived:
            item = p["items"]["data"][0]
            months = 12 if item["price"]["recurring"]["interval"] == "year" else 1
            cents = item["price"]["unit_amount"] * item["quantity"] / months
            mrr[world.customer_of[p["customer"]]] += cents * RATES[item["price"]["currency"]]
    members = profiled.rows("SELECT account_id, profile_id FROM identity.account_people WHERE is_primary")
    expected: Counter[str] = Counter()
    people: Counter[str] = Counter()
    for m in members:
        expected[m["account_id"]] += mrr[m["profile_id"]]
        people[m["account_id"]] += 1
    rows = profiled.rows("SELECT account_id, mrr_cents, currency, country, territory FROM views.account_360"
                         " WHERE account_id <> 'unattributed'")  # billing with no account: test_views_reconcile
    assert sum(r["mrr_cents"] for r in rows) > 0
    for r in rows:
        # Each person's MRR is rounded to a cent in its own currency before the account adds it up.
        assert abs(r["mrr_cents"] - expected[r["account_id"]]) <= 1.3 * people[r["account_id"]] + 1, r
        assert r["currency"] == "usd"
        territory = {"United States": "North America", "Canada": "North America", "France": "EMEA",
                     "Germany": "EMEA", "United Kingdom": "EMEA"}.get(r["country"], "Rest of world")  # fmt: skip
        assert r["territory"] == territory, r


def email_marketing_choices(world: World) -> dict[str, set[str]]:
    """Per person, the email-marketing choices its live records state now (a refusal outlives its record)."""
    choices: dict[str, set[str]] = defaultdict(set)
    for r in world.staged("klaviyo.profiles", "staging.klaviyo__profiles", "profile_id"):
        consent = r.payload["attributes"]["subscriptions"]["email"]["marketing"]["consent"]
        person = world.owners.get((r.stream, r.id))
        if person and consent == "UNSUBSCRIBED":
            choices[person].add("denied")
        elif person and consent == "SUBSCRIBED" and not r.archived:
            choices[person].add("granted")
    for r in world.staged("hubspot.contacts", "staging.hubspot__contacts", "contact_id"):
        if r.payload["properties"].get("hs_email_optout") == "true" and (r.stream, r.id) in world.owners:
            choices[world.owners[(r.stream, r.id)]].add("denied")
    return choices


def test_consent_takes_the_most_restrictive_choice_and_marks_conflicts(profiled: Profiled, world: World) -> None:
    choices = email_marketing_choices(world)
    rows = profiled.rows("SELECT * FROM privacy.consent WHERE purpose = 'email_marketing'")
    assert len(rows) == len(profiled.rows("SELECT profile_id FROM identity.person_profiles"))
    for r in rows:
        said = choices.get(r["profile_id"], set())
        state = "denied" if "denied" in said else "granted" if said else "no_choice"
        assert (r["state"], r["allowed"], r["is_conflict"]) == (state, state == "granted", len(said) == 2), r
    assert sum(r["is_conflict"] for r in rows) > 0 and sum(r["allowed"] for r in rows) > 0


def test_no_one_who_refused_advertising_is_in_an_advertising_audience(profiled: Profiled, world: World) -> None:
    latest: dict[str, tuple[int, bool]] = {}  # login -> (time, advertising)
    for r in world.staged("mixpanel.events", "staging.mixpanel__events", "insert_id"):
        props = r.payload["properties"]
        if r.payload["event"] == "Consent updated" and isinstance(props.get("time"), int):
            login = props.get("$user_id") or props["$device_id"]
            if login not in latest or props["time"] > latest[login][0]:
                latest[login] = (props["time"], props["advertising"])
    refused = set()
    for r in world.staged("mixpanel.events", "staging.mixpanel__events", "insert_id"):
        props = r.payload["properties"]
        login = props.get("$user_id") or props["$device_id"]
        if r.payload["event"] == "Consent updated" and latest.get(login, (0, None))[1] is False:
            refused.add(world.owners[(r.stream, r.id)])
    audiences = profiled.rows("SELECT profile_id, audience, purpose, purposes FROM views.marketing_audiences")
    advertised = {a["profile_id"] for a in audiences if a["purpose"] == "advertising"}
    assert refused and advertised and not refused & advertised
    assert all(a["purpose"] in a["purposes"] for a in audiences)
    product = {r["profile_id"] for r in profiled.rows("SELECT profile_id FROM views.product_usage_people")}
    assert product and not product & set(
        r["profile_id"] for r in profiled.rows("SELECT profile_id FROM privacy.consent WHERE purpose = 'analytics'"
                                               " AND NOT allowed"))  # fmt: skip


def run_check(warehouse: Path, view: str, check: str) -> dict:
    """Run one view check through Dagster on a warehouse; its evaluation's passed flag and metadata."""
    from cdp_assets.definitions import defs
    from resources import build_resources

    os.environ["CDP_WAREHOUSE"] = str(warehouse)
    key = AssetCheckKey(AssetKey(["views", view]), check)
    result = materialize(
        [*(defs.assets or []), *(defs.asset_checks or [])],
        resources=build_resources(),
        instance=DagsterInstance.ephemeral(),
        selection=AssetSelection.checks(key),
        raise_on_error=False,
    )
    [evaluation] = result.get_asset_check_evaluations()
    return {"passed": evaluation.passed, **{k: v.value for k, v in evaluation.metadata.items()}}


@pytest.fixture
def planted(profiled: Profiled, tmp_path: Path) -> Path:
    """A copy of the built warehouse that a test may plant bad rows and columns in."""
    copy = tmp_path / "warehouse.duckdb"
    shutil.copy(profiled.pipeline.warehouse, copy)
    return copy


def test_policy_and_consent_checks_fail_on_planted_data(planted: Path) -> None:
    assert run_check(planted, "product_usage_people", "policy_columns")["passed"]
    assert run_check(planted, "marketing_audiences", "consent")["passed"]
    with duckdb.connect(str(planted)) as conn:
        conn.execute("ALTER TABLE views.product_usage_people ADD COLUMN email VARCHAR")
        conn.execute("ALTER TABLE views.executive_cohorts ADD COLUMN median_signup_age DOUBLE")
        [(refuser,)] = conn.execute(
            "SELECT profile_id FROM privacy.consent WHERE purpose = 'advertising' AND state = 'denied'"
            " ORDER BY profile_id LIMIT 1"
        ).fetchall()
        conn.execute(
            "INSERT INTO views.marketing_audiences (profile_id, audience, purpose, purposes)"
            " VALUES (?, 'high_value', 'advertising', ['advertising'])",
            [refuser],
        )
    failed = run_check(planted, "product_usage_people", "policy_columns")
    assert (failed["passed"], failed["disallowed_columns"]) == (False, "email")
    assert not run_check(planted, "executive_cohorts", "policy_columns")["passed"]
    consent = run_check(planted, "marketing_audiences", "consent")
    assert (consent["passed"], consent["rows_without_consent"], consent["profiles"]) == (False, 2, refuser)


SAMPLE_ROWS = 5
WITHHELD = "withheld: the view holds direct identifiers"


def views_policy() -> dict:
    from cdp_assets.views import policy

    return yaml.safe_load((Path(policy.__file__).parent / "policy.yaml").read_text())["views"]


def test_only_pseudonymous_views_show_sample_rows_and_none_a_direct_identifier(profiled: Profiled) -> None:
    views = views_policy()
    direct = {c for v in views.values() for c, cls in v["columns"].items() if cls == "direct_identifier"}
    emails = [e for (e,) in profiled.pipeline.query(
        "SELECT DISTINCT lower(value) FROM identity.identifiers WHERE id_type = 'email'")]  # fmt: skip
    shown = []
    for name, spec in views.items():
        sample, key = profiled.metadata[f"views/{name}"]["sample"], ", ".join(spec["key"])
        [(rows, keys)] = profiled.pipeline.query(f"SELECT count(*), count(DISTINCT ({key})) FROM views.{name}")
        assert rows == keys, f"{name}: its key {key} does not tell its rows apart, so its sample has no one order"
        if "direct_identifier" in spec["allows"]:
            assert sample == WITHHELD, name
            continue
        columns = [c.name for c in sample.schema.columns]
        assert len(sample.records) == min(rows, SAMPLE_ROWS) and not set(columns) & direct, name
        assert set(columns) <= set(spec["columns"]) and set(spec["key"]) <= set(columns), name
        for record in sample.records:
            assert list(record.data) == columns, name
            text = [str(v).lower() for v in record.data.values() if isinstance(v, str)]
            assert not [e for e in emails if any(e in t for t in text)], (name, record)
        shown.append(name)
    assert {"product_usage_people", "customer_timeline", "executive_cohorts"} <= set(shown)
    ids = [r.data["profile_id"] for r in profiled.metadata["views/product_usage_people"]["sample"].records]
    assert ids == [p for (p,) in profiled.pipeline.query(
        "SELECT profile_id FROM views.product_usage_people ORDER BY profile_id LIMIT 5")]  # fmt: skip


def test_a_column_the_policy_does_not_list_stays_out_of_the_sample(planted: Path) -> None:
    from cdp_assets.views import policy, sample
    from cdp_assets.views.assets import table_schema

    view = policy.load().views["product_usage_people"]
    with duckdb.connect(str(planted)) as conn:
        [(email,)] = conn.execute(
            "SELECT value FROM identity.identifiers WHERE id_type = 'email' ORDER BY value LIMIT 1"
        ).fetchall()
        conn.execute("ALTER TABLE views.product_usage_people ADD COLUMN email VARCHAR")
        conn.execute("UPDATE views.product_usage_people SET email = ?", [email])
        shown = sample.sample(conn, view, table_schema(conn, view))
    assert shown.records and "email" not in {c.name for c in shown.schema.columns}
    assert all("email" not in r.data and email not in r.data.values() for r in shown.records)


def test_every_view_is_built_with_its_row_count_and_passes_its_checks(profiled: Profiled) -> None:
    views = {key: meta for key, meta in profiled.metadata.items() if key.startswith("views/")}
    assert len(views) == 11
    for key, meta in views.items():
        table = key.replace("/", ".")
        [(rows,)] = profiled.pipeline.query(f"SELECT count(*) FROM {table}")
        assert meta["dagster/row_count"] == rows > 0, key
    as_of_values = profiled.rows("SELECT count(DISTINCT as_of) AS n FROM views.customer_360")
    assert as_of_values[0]["n"] == 1
    assert datetime.now(UTC) - profiled.rows("SELECT max(as_of) AS t FROM views.customer_360")[0]["t"] < timedelta(
        hours=1
    )


def test_audience_members_keep_their_start_across_runs(profiled: Profiled) -> None:
    meta = profiled.metadata["views/marketing_audiences"]
    rows = profiled.rows("SELECT member_since, as_of FROM views.marketing_audiences")
    kept = [r for r in rows if r["member_since"] < r["as_of"]]  # members since the first of the fixture's two runs
    assert kept and meta["entered"] == len(rows) - len(kept)
    assert meta["left_out_for_consent"] > 0


def test_an_audience_judged_by_the_moment_without_a_clock_fails_to_load(tmp_path: Path) -> None:
    """An hourly build follows the audiences' changes: one whose condition compares with `as_of` must say when time
    alone changes its verdict, or the people it passes would keep their old rows; one reading the wall clock would
    judge by no moment the views share."""
    from cdp_assets.views import audiences

    data = yaml.safe_load((Path(audiences.__file__).parent / "audiences.yaml").read_text())
    assert "clock" in data["audiences"]["abandoned_checkout"]
    del data["audiences"]["abandoned_checkout"]["clock"]
    path = tmp_path / "audiences.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ValueError, match="abandoned_checkout compares with as_of, so it needs a `clock`"):
        audiences.load(path)
    data["audiences"]["abandoned_checkout"]["when"] = "checkout_started_at > now() - INTERVAL 30 DAY"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ValueError, match="abandoned_checkout reads the wall clock; compare with as_of"):
        audiences.load(path)


def test_a_policy_that_contradicts_itself_fails_to_load() -> None:
    from cdp_assets.views import policy

    data = yaml.safe_load((Path(policy.__file__).parent / "policy.yaml").read_text())
    data["views"]["executive_cohorts"]["columns"]["email"] = "direct_identifier"
    with pytest.raises(ValueError, match="email is direct_identifier, which the view does not allow"):
        policy.parse(data)
    data["views"]["executive_cohorts"]["columns"].pop("email")
    data["views"]["executive_cohorts"]["requires"] = "advertising"
    with pytest.raises(ValueError, match="needs a profile_id column"):
        policy.parse(data)
    data["views"]["executive_cohorts"].pop("requires")
    data["views"]["executive_cohorts"]["key"] = ["cohort"]
    with pytest.raises(ValueError, match="key column 'cohort' is not among the columns"):
        policy.parse(data)


def test_product_executive_and_customer_views_match_the_world(profiled: Profiled, world: World) -> None:
    now = as_of(profiled)
    channel_of, signup = first_touch_and_signup(world, now)
    first_paid, *_ = billing(world)
    days: dict[str, set[int]] = defaultdict(set)
    activated: dict[str, float] = {}
    latest_choice: dict[str, tuple[int, bool, str]] = {}  # login -> (time, analytics, person)
    active: set[str] = set()
    for r in world.staged("mixpanel.events", "staging.mixpanel__events", "insert_id"):
        props, t = r.payload["properties"], r.payload["properties"]["time"]
        if r.archived or not isinstance(t, int) or t > now:
            continue
        person, name = world.owners[(r.stream, r.id)], r.payload["event"]
        if name == "Consent updated":
            login = props.get("$user_id") or props["$device_id"]
            if login not in latest_choice or t > latest_choice[login][0]:
                latest_choice[login] = (t, props["analytics"], person)
            continue
        active.add(person)
        if t > now - 30 * DAY:
            days[person].add(t // DAY)
        if name in ("Report Created", "Invite Sent") and person in signup and t >= signup[person]:
            activated[person] = min(t, activated.get(person, t))
    refused = {person for _, analytics, person in latest_choice.values() if analytics is False}
    # A refusal on a record staging quarantined still binds the login's person: consent fails closed.
    staged = {r.id for r in world.staged("mixpanel.events", "staging.mixpanel__events", "insert_id")}
    owner_of = {props.get("$user_id"): world.owners[(r.stream, r.id)] for r in world.profiled.scan("mixpanel.events")
                if r.id in staged and (props := r.payload["properties"]).get("$user_id")}  # fmt: skip
    refused |= {owner_of[login] for r in world.profiled.scan("mixpanel.events") if r.id not in staged
                and r.payload.get("event") == "Consent updated" and (props := r.payload.get("properties") or {})
                and props.get("analytics") is False and (login := props.get("$user_id")) in owner_of}  # fmt: skip

    usage = {r["profile_id"]: r for r in profiled.rows("SELECT * FROM views.product_usage_people")}
    assert set(usage) == active - refused
    assert all(usage[p]["active_days_30"] == len(days[p]) for p in usage)
    month = lambda t: datetime.fromtimestamp(t, UTC).date().replace(day=1)  # noqa: E731
    funnel: dict = defaultdict(Counter)
    for person in usage:
        if person in signup:
            funnel[month(signup[person])]["signups"] += 1
            funnel[month(signup[person])]["activated"] += person in activated
    rows = profiled.rows("SELECT signup_month, signups, activated FROM views.product_funnel")
    assert {r["signup_month"]: Counter(signups=r["signups"], activated=r["activated"]) for r in rows} == funnel

    cohorts: dict = defaultdict(Counter)
    for person, t in signup.items():
        cell = cohorts[(month(t), channel_of.get(person, "direct"))]
        cell["signups"] += 1
        cell["paid"] += person in first_paid
    rows = profiled.rows("SELECT cohort_month, channel, signups, converted_to_paid FROM views.executive_cohorts"
                         " WHERE cohort_month IS NOT NULL")  # the unattributed row: test_views_reconcile
    assert {(r["cohort_month"], r["channel"]): Counter(signups=r["signups"], paid=r["converted_to_paid"])
            for r in rows} == cohorts  # fmt: skip

    user_of = world.owned("zendesk.users")
    ratings: dict[str, Counter[str]] = defaultdict(Counter)
    for r in world.staged("zendesk.tickets", "staging.zendesk__tickets", "ticket_id"):
        person = user_of.get(str(r.payload["requester_id"]))
        if person and not r.archived and r.payload["status"] != "deleted":
            ratings[person][r.payload["satisfaction_rating"]["score"]] += 1
    people = profiled.rows("SELECT profile_id, good_ratings, bad_ratings, satisfaction_score FROM views.customer_360")
    assert sum(row["bad_ratings"] for row in people) > 0
    for row in people:
        seen = ratings[row["profile_id"]]
        assert (row["good_ratings"], row["bad_ratings"]) == (seen["good"], seen["bad"]), row
        if seen["good"] + seen["bad"]:
            assert row["satisfaction_score"] == pytest.approx(seen["good"] / (seen["good"] + seen["bad"]), abs=5e-5)

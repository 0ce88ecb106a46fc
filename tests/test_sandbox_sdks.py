"""The vendors' own Python SDKs against the sandbox, called the way their documentation calls them.

Every call here reads or writes what the project's connectors read or write; each answer is checked against the
world the sandbox serves, so a sandbox that drifts from what the SDKs send or require fails here.
"""

from __future__ import annotations

import fnmatch
import hashlib
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import stripe
from facebook_business.adobjects.customaudience import CustomAudience
from facebook_business.api import FacebookAdsApi
from facebook_business.session import FacebookSession
from hubspot import HubSpot
from hubspot.crm.contacts import (
    BatchInputSimplePublicObjectBatchInputUpsert,
    Filter,
    FilterGroup,
    PublicObjectSearchRequest,
    SimplePublicObjectBatchInputUpsert,
)
from klaviyo_api import KlaviyoAPI
from zenpy import Zenpy
from zenpy.lib.api_objects import User

from sandbox.config import Credentials
from sandbox.destinations import normalised_email
from sandbox.runner import SandboxServer
from sandbox.store import Record, WorldStore
from tests.conftest import with_config
from tests.test_sandbox_server import LIMITS_OFF

CREDENTIALS = Credentials()
PEOPLE = 120
RETARGETING = "23850000000000001"  # a Meta audience the sandbox's ad account holds


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small world whose history ends today, so Stripe's 30 days of events reach into it."""
    from sandbox.world import build_world

    folder = tmp_path_factory.mktemp("sdk-world")
    build_world(folder, people=PEOPLE, seed=11)
    return folder


@pytest.fixture(scope="module")
def sandbox(world: Path) -> Iterator[SandboxServer]:
    with SandboxServer(world, with_config({"limits": LIMITS_OFF})) as server:
        yield server


def live(world: Path, stream: str, keep: Callable[[Record], bool] = lambda record: not record.archived) -> list[Record]:
    return [record for record in WorldStore(world).scan(stream) if keep(record)]


# -- Stripe --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def stripe_client(sandbox: SandboxServer) -> stripe.StripeClient:
    return stripe.StripeClient(
        CREDENTIALS.stripe.api_key, base_addresses={"api": sandbox.base_urls["stripe"]}, max_network_retries=0
    )


@pytest.mark.parametrize(
    ("resource", "params", "stream", "keep"),
    [
        ("customers", {}, "stripe.customers", lambda record: not record.archived),
        ("subscriptions", {"status": "all"}, "stripe.subscriptions", lambda record: True),
        ("invoices", {}, "stripe.invoices", lambda record: True),
    ],
)
def test_stripe_auto_paging_lists_every_object(
    stripe_client: stripe.StripeClient,
    world: Path,
    resource: str,
    params: dict[str, Any],
    stream: str,
    keep: Callable[[Record], bool],
) -> None:
    listed = getattr(stripe_client.v1, resource).list(params={**params, "limit": 7}).auto_paging_iter()
    ids = [item.id for item in listed]
    assert len(ids) == len(set(ids))
    assert set(ids) == {record.id for record in live(world, stream, keep)}


def test_stripe_event_list_filters_on_time_and_types(stripe_client: stripe.StripeClient, world: Path) -> None:
    events = [record.payload for record in live(world, "stripe.events")]
    since = sorted(event["created"] for event in events)[len(events) // 3]
    types = ["customer.created", "invoice.*"]  # the SDK sends types[0]=..&types[1]=..
    listed = stripe_client.v1.events.list(params={"created": {"gt": since}, "types": types, "limit": 10})
    got = {event.id for event in listed.auto_paging_iter()}
    expected = {
        event["id"]
        for event in events
        if event["created"] > since and any(fnmatch.fnmatchcase(event["type"], pattern) for pattern in types)
    }
    assert got == expected and expected
    assert {event["id"] for event in events if event["created"] > since} - expected, "the filter must leave some out"


def test_stripe_refuses_an_unknown_parameter_as_stripe_does(stripe_client: stripe.StripeClient) -> None:
    for params in ({"colour": "blue"}, {"created": {"after": 1}}):
        with pytest.raises(stripe.InvalidRequestError) as caught:
            stripe_client.v1.customers.list(params=params)  # type: ignore[arg-type]
        name = "colour" if "colour" in params else "created[after]"
        error = caught.value
        assert error.http_status == 400 and error.error is not None
        assert (error.error.type, error.code, error.error.message, error.param) == (
            "invalid_request_error",
            "parameter_unknown",
            f"Received unknown parameter: {name}",
            name,
        )


def test_stripe_filters_subscriptions_on_a_price(stripe_client: stripe.StripeClient, world: Path) -> None:
    subscriptions = [record.payload for record in live(world, "stripe.subscriptions", lambda record: True)]
    price = subscriptions[0]["items"]["data"][0]["price"]["id"]
    listed = stripe_client.v1.subscriptions.list(params={"price": price, "status": "all", "limit": 100})
    expected = {s["id"] for s in subscriptions if any(item["price"]["id"] == price for item in s["items"]["data"])}
    assert {s.id for s in listed.auto_paging_iter()} == expected and len(expected) < len(subscriptions)


def test_stripe_filters_the_sandbox_cannot_apply_are_refused_as_unsupported(stripe_client: stripe.StripeClient) -> None:
    """Documented filters on fields the sandbox's objects lack: never ignored, never called unknown."""
    calls = [(stripe_client.v1.customers, {"test_clock": "clock_1"}, "test_clock"),
             (stripe_client.v1.invoices, {"due_date": {"gt": 1}}, "due_date"),
             (stripe_client.v1.subscriptions, {"collection_method": "send_invoice"}, "collection_method")]  # fmt: skip
    for service, params, name in calls:
        with pytest.raises(stripe.InvalidRequestError) as caught:
            service.list(params=params)  # type: ignore[arg-type]
        error = caught.value
        assert (error.http_status, error.param, error.code) == (400, name, None)
        assert error.error is not None and "sandbox does not support" in error.error.message


# -- HubSpot -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def hubspot(sandbox: SandboxServer) -> HubSpot:
    return HubSpot(access_token=CREDENTIALS.hubspot.token, host=sandbox.base_urls["hubspot"])


def contacts(world: Path) -> dict[str, dict[str, Any]]:
    """Live contacts' properties by id."""
    return {record.id: record.payload["properties"] for record in live(world, "hubspot.contacts")}


def test_hubspot_get_page_and_get_all_read_every_object(hubspot: HubSpot, world: Path) -> None:
    paged: list[str] = []
    after = None
    while True:
        page = hubspot.crm.contacts.basic_api.get_page(limit=17, after=after, properties=["email", "firstname"])
        paged += [contact.id for contact in page.results]
        if page.paging is None:
            break
        after = page.paging.next.after
    everyone = hubspot.crm.contacts.get_all(properties=["email"])
    assert paged == [contact.id for contact in everyone] == sorted(contacts(world), key=int)
    assert all(set(contact.properties) >= {"email", "hs_object_id"} for contact in everyone)
    companies = {company.id for company in hubspot.crm.companies.get_all()}
    assert companies == {record.id for record in live(world, "hubspot.companies")}


def search(hubspot: HubSpot, **request: Any) -> list[str]:
    """Every id a search finds, paging by `after` in small pages."""
    found: list[str] = []
    after = None
    while True:
        body = PublicObjectSearchRequest(limit=7, after=after, **request)
        page = hubspot.crm.contacts.search_api.do_search(public_object_search_request=body)
        found += [contact.id for contact in page.results]
        if page.paging is None:
            return found
        after = page.paging.next.after


def test_hubspot_search_applies_every_filter_operator(hubspot: HubSpot, world: Path) -> None:
    people = contacts(world)
    ids = sorted(people, key=int)
    low, high = ids[len(ids) // 4], ids[len(ids) // 2]
    someone = people[ids[3]]
    domain = someone["email"].split("@")[1]
    names = sorted({p["firstname"] for p in people.values() if p.get("firstname")})[:3]
    modified = sorted(p["lastmodifieddate"] for p in people.values())
    start, end = modified[len(modified) // 4], modified[len(modified) // 2]

    def where(test: Callable[[str, dict[str, Any]], bool]) -> list[str]:
        return [i for i in ids if test(i, people[i])]

    cases: list[tuple[Filter, list[str]]] = [
        (Filter(property_name="email", operator="EQ", value=someone["email"]),
         where(lambda i, p: p.get("email") == someone["email"])),
        (Filter(property_name="hs_object_id", operator="GT", value=low), where(lambda i, p: int(i) > int(low))),
        (Filter(property_name="hs_object_id", operator="GTE", value=low), where(lambda i, p: int(i) >= int(low))),
        (Filter(property_name="hs_object_id", operator="LT", value=high), where(lambda i, p: int(i) < int(high))),
        (Filter(property_name="hs_object_id", operator="LTE", value=high), where(lambda i, p: int(i) <= int(high))),
        (Filter(property_name="hs_object_id", operator="BETWEEN", value=low, high_value=high),
         where(lambda i, p: int(low) <= int(i) <= int(high))),
        (Filter(property_name="lastmodifieddate", operator="BETWEEN", value=start, high_value=end),
         where(lambda i, p: start <= p["lastmodifieddate"] <= end)),
        (Filter(property_name="firstname", operator="IN", values=names),
         where(lambda i, p: p.get("firstname") in names)),
        (Filter(property_name="firstname", operator="NOT_IN", values=names),
         where(lambda i, p: p.get("firstname") not in names)),
        (Filter(property_name="phone", operator="HAS_PROPERTY"), where(lambda i, p: bool(p.get("phone")))),
        (Filter(property_name="phone", operator="NOT_HAS_PROPERTY"), where(lambda i, p: not p.get("phone"))),
        (Filter(property_name="email", operator="CONTAINS_TOKEN", value=f"*@{domain}"),
         where(lambda i, p: any(t.endswith(f"@{domain}") for t in (p.get("email") or "").lower().split()))),
    ]  # fmt: skip
    for condition, expected in cases:
        assert expected, f"{condition.operator}: the world must hold a match"
        assert search(hubspot, filter_groups=[FilterGroup(filters=[condition])]) == expected, condition.operator
    assert set(cases[-3][1]) | set(cases[-2][1]) == set(ids)


def test_hubspot_search_query_finds_text_in_default_properties(hubspot: HubSpot, world: Path) -> None:
    people = contacts(world)
    word = next(p["lastname"] for p in people.values() if p.get("lastname"))[1:4].upper()  # part of a word, any case
    searched = ("firstname", "lastname", "email", "phone", "company")
    expected = {i for i, p in people.items() if any(word.lower() in str(p.get(k) or "").lower() for k in searched)}
    assert set(search(hubspot, query=word)) == expected and len(expected) < len(people)


@pytest.mark.parametrize(
    ("sorts", "key", "descending"),
    [
        (["hs_object_id"], lambda p: int(p["hs_object_id"]), False),  # the SDK's declared type: property names
        (["-createdate"], lambda p: (p["createdate"], int(p["hs_object_id"])), True),
        ([{"propertyName": "lastmodifieddate", "direction": "DESCENDING"}],
         lambda p: (p["lastmodifieddate"], int(p["hs_object_id"])), True),
    ],
)  # fmt: skip
def test_hubspot_search_sorts_as_names_and_as_objects(
    hubspot: HubSpot, world: Path, sorts: list[Any], key: Callable[[dict[str, Any]], Any], descending: bool
) -> None:
    people = contacts(world)
    expected = [p["hs_object_id"] for p in sorted(people.values(), key=key, reverse=descending)]
    assert search(hubspot, sorts=sorts) == expected


def test_hubspot_batch_upsert_updates_by_email_and_creates(hubspot: HubSpot, world: Path) -> None:
    people = contacts(world)
    held = Counter(normalised_email(p.get("email")) for p in people.values())
    # An address one live contact holds: the world also has contacts sharing one, which an upsert cannot tell apart.
    known = next(p for p in people.values()
                 if "@" in (p.get("email") or "") and held[normalised_email(p["email"])] == 1)
    fresh = "sdk.newcomer@example.org"
    inputs = [
        SimplePublicObjectBatchInputUpsert(id=known["email"], id_property="email", properties={"firstname": "Ada"}),
        SimplePublicObjectBatchInputUpsert(id=fresh, id_property="email", properties={"lifecyclestage": "lead"}),
    ]
    answer = hubspot.crm.contacts.batch_api.upsert(BatchInputSimplePublicObjectBatchInputUpsert(inputs=inputs))
    assert answer.status == "COMPLETE"
    assert [(r.new, r.properties.get("email")) for r in answer.results] == [(False, known["email"]), (True, fresh)]
    found = search(
        hubspot, filter_groups=[FilterGroup(filters=[Filter(property_name="email", operator="EQ", value=fresh)])]
    )
    assert found == [answer.results[1].id]
    assert contacts(world)[known["hs_object_id"]]["firstname"] == "Ada"


# -- Klaviyo -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def klaviyo(sandbox: SandboxServer) -> KlaviyoAPI:
    """The SDK as it runs behind a TLS-terminating proxy, which tells the server the scheme the client used."""
    client = KlaviyoAPI(CREDENTIALS.klaviyo.api_key, max_delay=0, max_retries=0, test_host=sandbox.base_urls["klaviyo"])
    client.api_client.default_headers["X-Forwarded-Proto"] = "https"
    return client


def klaviyo_pages(call: Callable[..., Any], **params: Any) -> Iterator[Any]:
    """Every page of a listing, handing the SDK each `links.next` as its documentation says."""
    page = call(**params)
    yield page
    while page.links.next:
        page = call(**params, page_cursor=page.links.next)
        yield page


def test_klaviyo_profiles_page_by_the_sdks_cursor_with_subscriptions(klaviyo: KlaviyoAPI, world: Path) -> None:
    profiles = [
        profile
        for page in klaviyo_pages(
            klaviyo.Profiles.get_profiles, additional_fields_profile=["subscriptions"], page_size=9
        )
        for profile in page.data
    ]
    stored = {record.id: record.payload for record in live(world, "klaviyo.profiles")}
    assert [profile.id for profile in profiles] == sorted(stored)
    for profile in profiles:
        marketing = profile.attributes.subscriptions.email.marketing
        consent = stored[profile.id]["attributes"]["subscriptions"]["email"]["marketing"]["consent"]
        assert (marketing.consent, marketing.can_receive_email_marketing) == (consent, consent != "UNSUBSCRIBED")


def test_klaviyo_events_and_metrics_parse_in_the_sdks_models(klaviyo: KlaviyoAPI, world: Path) -> None:
    events = [event.id for page in klaviyo_pages(klaviyo.Events.get_events) for event in page.data]
    assert events == sorted(record.id for record in live(world, "klaviyo.events"))
    metrics = klaviyo.Metrics.get_metrics()
    assert {metric.id for metric in metrics.data} == {record.id for record in live(world, "klaviyo.metrics")}
    assert all(metric.links.var_self.endswith(f"/metrics/{metric.id}/") for metric in metrics.data)


def test_klaviyo_links_follow_the_scheme_the_client_used(sandbox: SandboxServer) -> None:
    """Our connector calls the sandbox over plain http and follows `links.next` as given."""
    import requests

    headers = {"Authorization": f"Klaviyo-API-Key {CREDENTIALS.klaviyo.api_key}", "revision": "2024-10-15"}
    url = sandbox.base_urls["klaviyo"] + "/api/profiles"
    plain = requests.get(url, params={"page[size]": 5}, headers=headers, timeout=10).json()["links"]
    forwarded = {**headers, "X-Forwarded-Proto": "https", "X-Forwarded-Host": "a.klaviyo.example"}
    proxied = requests.get(url, params={"page[size]": 5}, headers=forwarded, timeout=10).json()["links"]
    assert plain["next"].startswith(sandbox.base_urls["klaviyo"] + "/api/profiles?")
    assert proxied["next"].startswith("https://a.klaviyo.example/klaviyo/api/profiles?")


# -- Zendesk (zenpy) -----------------------------------------------------------------
@pytest.fixture
def zendesk(sandbox: SandboxServer, monkeypatch: pytest.MonkeyPatch) -> Zenpy:
    """zenpy builds `https://{subdomain}.zendesk.com/api/v2/...`; its own overrides point it at the sandbox."""
    monkeypatch.setenv("ZENPY_FORCE_NETLOC", f"{sandbox.host}:{sandbox.port}")
    monkeypatch.setenv("ZENPY_FORCE_SCHEME", "http")
    creds = CREDENTIALS.zendesk
    client = Zenpy(subdomain="sandbox", email=creds.email, token=creds.api_token)
    for api in (client.users, client.tickets, client.job_status):
        api.api_prefix = "zendesk/api/v2"
    return client


def test_zenpy_incremental_exports_resume_from_a_stored_cursor(zendesk: Zenpy, world: Path) -> None:
    tickets = [ticket.id for ticket in zendesk.tickets.incremental(start_time=0, per_page=25)]
    assert sorted(tickets) == sorted(int(record.id) for record in live(world, "zendesk.tickets", lambda r: True))
    export = zendesk.users.incremental(start_time=0, per_page=25)
    users = [user.id for user in export]
    assert sorted(users) == sorted(int(record.id) for record in live(world, "zendesk.users", lambda r: True))
    stored_cursor = export.after_cursor

    someone = next(r.payload for r in live(world, "zendesk.users") if r.payload.get("email"))
    job = zendesk.users.create_or_update([User(email=someone["email"], name="Renamed"),
                                          User(email="sdk.newcomer@example.org", name="New")])  # fmt: skip
    deadline = time.monotonic() + 10
    while job.status not in ("completed", "failed") and time.monotonic() < deadline:
        time.sleep(0.05)
        job = zendesk.job_status(id=job.id)
    assert job.status == "completed"
    assert [result.status for result in job.results] == ["Updated", "Created"]

    changed = list(zendesk.users.incremental(cursor=stored_cursor))
    assert [user.id for user in changed] == [someone["id"], job.results[1].id]
    assert changed[0].name == "Renamed"


# -- Meta (facebook-business) --------------------------------------------------------
def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def test_facebook_business_adds_and_removes_audience_users(sandbox: SandboxServer) -> None:
    session = FacebookSession(access_token=CREDENTIALS.meta.access_token)
    session.GRAPH = sandbox.base_urls["meta"]  # documented as the Graph API URL the session calls
    audience = CustomAudience(RETARGETING, api=FacebookAdsApi(session))

    def members() -> set[tuple[str, str]]:
        return {tuple(member) for member in sandbox.control("destinations/meta").get(RETARGETING, [])}

    audience.add_users(CustomAudience.Schema.email_hash, ["one@example.com", "two@example.com"])
    schema = [CustomAudience.Schema.MultiKeySchema.email, CustomAudience.Schema.MultiKeySchema.phone]
    audience.add_users(schema, [["three@example.com", "14155550101"], ["four@example.com", ""]], is_raw=True)
    audience.add_users(schema, [["", "14155550102"]], is_raw=True)
    one, two, three, four = (sha256(f"{n}@example.com") for n in ("one", "two", "three", "four"))
    phone1, phone2 = sha256("14155550101"), sha256("14155550102")
    assert members() == {(one, ""), (two, ""), (three, phone1), (four, ""), ("", phone2)}

    answer = audience.remove_users(CustomAudience.Schema.email_hash, ["one@example.com"])  # payload in the query
    assert answer.json()["num_received"] == 1
    assert members() == {(two, ""), (three, phone1), (four, ""), ("", phone2)}
    # A row's empty field is sent as the empty string's hash and matches nobody, however many lack that field.
    audience.remove_users(schema, [["", "14155550101"], ["nobody@example.com", ""]], is_raw=True)
    assert members() == {(two, ""), (four, ""), ("", phone2)}

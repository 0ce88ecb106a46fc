"""Chains and strong ids through the real pipeline: records planted in the test world, one run, then the profiles.

A chain joins records through identifiers of different types (A and B share an email, B and C a phone); it holds
only when its ends agree by the probabilistic score. Two records with different product user ids join when the
score says one person, and the one-user-id limit decides which id the profile keeps.
"""

from __future__ import annotations

import copy
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dagster import AssetSelection

from cdp_assets.identity.assets import GRAPH_KEY
from sandbox.runner import SandboxServer
from sandbox.store import Record, WorldStore
from tests.conftest import TEST_SANDBOX_CONFIG, Pipeline

DAY = 86_400


class Planter:
    """Writes person records into a world, each shaped like a record the world already serves."""

    def __init__(self, world: Path) -> None:
        self.store = WorldStore(world)
        self.templates = {stream: next(iter(self.store.scan(stream)))
                          for stream in ("stripe.customers", "hubspot.contacts", "klaviyo.profiles", "zendesk.users")}
        self.created = int(time.time()) - 400 * DAY  # each record a day younger than the last: a fixed link order
        self.records: list[Record] = []

    def _record(self, stream: str, record_id: str, payload: dict[str, Any]) -> str:
        self.created += DAY
        self.records.append(Record(stream, record_id, self.created, self.created * 1000, payload))
        return f"{stream}:{record_id}"

    def _payload(self, stream: str) -> dict[str, Any]:
        return copy.deepcopy(self.templates[stream].payload)

    def _iso(self) -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.created + DAY))

    def stripe(self, n: int, name: str | None, email: str | None, phone: str | None, city: str | None = None,
               user_id: str | None = None) -> str:
        record_id = f"cus_G2chain{n:07d}"
        payload = self._payload("stripe.customers")
        payload.update(id=record_id, created=self.created + DAY, name=name, email=email, phone=phone,
                       metadata={"product_user_id": user_id} if user_id else {},
                       address={"line1": None, "city": city, "postal_code": None, "country": "US" if city else None})
        return self._record("stripe.customers", record_id, payload)

    def hubspot(self, n: int, first: str, last: str, email: str | None, phone: str | None = None,
                city: str | None = None, company: str | None = None) -> str:
        record_id = str(9_100_000 + n)
        payload = self._payload("hubspot.contacts")
        stamp = self._iso()
        payload.update(id=record_id, createdAt=stamp, updatedAt=stamp)
        payload["properties"] = {
            **payload["properties"], "email": email, "firstname": first, "lastname": last, "phone": phone,
            "company": company, "city": city, "country": "United States" if city else None, "hs_object_id": record_id,
            "createdate": stamp, "lastmodifieddate": stamp, "address": None, "zip": None, "date_of_birth": None,
        }
        return self._record("hubspot.contacts", record_id, payload)

    def klaviyo(self, n: int, first: str | None, last: str | None, email: str | None, phone: str | None,
                city: str | None = None, user_id: str | None = None) -> str:
        record_id = f"01G2C{n:021d}"
        payload = self._payload("klaviyo.profiles")
        stamp = self._iso()
        payload.update(id=record_id, links={"self": f"https://a.klaviyo.com/api/profiles/{record_id}/"})
        payload["attributes"] = {
            **payload["attributes"], "email": email, "phone_number": phone, "external_id": user_id,
            "first_name": first, "last_name": last, "organization": None, "locale": "en-US",
            "created": stamp, "updated": stamp, "last_event_date": None,
            "location": {"city": city, "country": "United States" if city else None, "region": None, "zip": None,
                         "timezone": None, "address1": None},
        }
        return self._record("klaviyo.profiles", record_id, payload)

    def zendesk(self, n: int, name: str, email: str | None, phone: str | None, user_id: str | None = None) -> str:
        record_id = str(360_000_900_000 + n)
        payload = self._payload("zendesk.users")
        stamp = self._iso()
        payload.update(id=int(record_id), url=f"https://sandbox.zendesk.com/api/v2/users/{record_id}.json",
                       name=name, email=email, phone=phone, external_id=user_id, locale="en-US",
                       created_at=stamp, updated_at=stamp)
        return self._record("zendesk.users", record_id, payload)

    def save(self) -> None:
        self.store.upsert(self.records)


# Three people: A's CRM contact shares an email with a nameless billing customer that shares a phone with C.
CHAIN = {"a": ("Marisol", "Brackenridge"), "c": ("Ingrid", "Halvorsen")}
# Six people in one chain of emails and phones, through nameless billing customers between them.
SIX = [("Osric", "Tamblyn"), ("Perpetua", "Vanstone"), ("Quillon", "Ashbury"), ("Rosalind", "Ekwueme"),
       ("Sigurd", "Fairbrother"), ("Theodora", "Gallacher")]


@pytest.fixture(scope="module")
def planted(world_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Pipeline, dict]]:
    """The test world with the chains, an ordinary person and two product accounts of one person planted, run once
    up to the identity graph."""
    folder = tmp_path_factory.mktemp("chains") / "world"
    shutil.copytree(world_template, folder)
    plant = Planter(folder)
    ids: dict[str, Any] = {}
    ids["a"] = plant.hubspot(1, *CHAIN["a"], email="m.brackenridge@quillmarsh.org", city="Duluth")
    ids["b"] = plant.stripe(1, None, email="m.brackenridge@quillmarsh.org", phone="+1 312 780 4411")
    ids["c"] = plant.klaviyo(1, *CHAIN["c"], email=None, phone="+1 312 780 4411", city="Tacoma")
    named = []
    for i, (first, last) in enumerate(SIX):
        email = f"{first.lower()}.{last.lower()}@fenwold.org"
        phone = f"+1 206 784 33{i + 20}" if i < len(SIX) - 1 else None
        previous_phone = f"+1 206 784 33{i + 19}" if i else None
        if i == 0:
            named.append(plant.hubspot(10 + i, first, last, email=email, city="Spokane"))
        else:
            named.append(plant.klaviyo(10 + i, first, last, email=email, phone=previous_phone, city="Spokane"))
        if phone:
            plant.stripe(10 + i, None, email=email, phone=phone)
    ids["six"] = named
    # One person as CRM, billing and email marketing know her: a work email, a phone, a home email.
    ids["ordinary"] = [
        plant.hubspot(30, "Philippa", "Quennell", email="pquennell@harrowgate-labs.com", city="Boise",
                      company="Harrowgate Labs"),
        plant.stripe(30, "Philippa Quennell", email="pquennell@harrowgate-labs.com", phone="+1 208 641 7730",
                     city="Boise"),
        plant.klaviyo(30, "Philippa", "Quennell", email="philippa.quennell@gmail.com", phone="+1 208 641 7730",
                      city="Boise"),
    ]
    # One person with two product accounts: support and email marketing each know one of them, no email.
    ids["accounts"] = {
        "g2-user-4401": plant.zendesk(40, "Evander Pelletier", email=None, phone="+1 617 902 3318",
                                      user_id="g2-user-4401"),
        "g2-user-4402": plant.klaviyo(40, "Evander", "Pelletier", email=None, phone="+1 617 902 3318",
                                      user_id="g2-user-4402"),
    }
    # A household: the partner's billing customer (a company's name, so no person's name) carries the couple's
    # landline before the other partner's records do; the partner's CRM contact names him but has no phone.
    ids["household"] = {
        "partner": [plant.stripe(50, "Lindqvist & Sons", email="tobias@lindqvist-joinery.se",
                                 phone="+1 651 238 9047", city="St Paul"),
                    plant.hubspot(50, "Tobias", "Lindqvist", email="tobias@lindqvist-joinery.se", city="St Paul",
                                  company="Lindqvist Joinery")],
        "other": [plant.hubspot(51, "Greta", "Lindqvist", email="greta.lindqvist@northmere.edu",
                                phone="+1 651 238 9047", city="St Paul", company="Northmere College"),
                  plant.stripe(51, "Greta Lindqvist", email="greta.lindqvist@northmere.edu", phone="+1 651 238 9047",
                               city="St Paul")],
    }
    plant.save()
    with SandboxServer(folder, TEST_SANDBOX_CONFIG) as server:
        pipeline = Pipeline(server.url, folder.parent / "warehouse.duckdb")
        # Every staging table (the matcher reads more of them than the graph's declared inputs), then the graph.
        upto_graph = AssetSelection.groups("raw", "staging") | AssetSelection.assets(GRAPH_KEY).upstream()
        assert pipeline.run(selection=upto_graph).success
        yield pipeline, ids


def profile_of(pipeline: Pipeline, records: list[str]) -> dict[str, str]:
    rows = pipeline.query(
        "SELECT stream || ':' || record_id, profile_id FROM identity.record_profiles "
        "WHERE list_contains($records, stream || ':' || record_id)", {"records": records},
    )
    found = dict(rows)
    assert set(found) == set(records), f"records missing from the graph: {set(records) - set(found)}"
    return found


def test_a_chain_whose_ends_disagree_is_refused(planted: tuple[Pipeline, dict]) -> None:
    pipeline, ids = planted
    profiles = profile_of(pipeline, [ids["a"], ids["b"], ids["c"]])
    assert profiles[ids["a"]] == profiles[ids["b"]], "A and the billing customer share an email"
    assert profiles[ids["a"]] != profiles[ids["c"]], "A and C are two people joined only through a chain"
    refusals = pipeline.query(
        "SELECT refused_by FROM identity.refused_links WHERE profile_a IN ($a, $c) AND profile_b IN ($a, $c)",
        {"a": profiles[ids["a"]], "c": profiles[ids["c"]]},
    )
    assert ("chain",) in refusals, f"the refused link is logged with its rule: {refusals}"


def test_a_six_person_chain_makes_no_profile_of_several_people(planted: tuple[Pipeline, dict]) -> None:
    pipeline, ids = planted
    profiles = profile_of(pipeline, ids["six"])
    assert len(set(profiles.values())) == len(SIX), f"six people in {len(set(profiles.values()))} profiles"
    (chains,), = pipeline.query(
        "SELECT count(*) FROM identity.refused_links WHERE refused_by = 'chain' "
        "AND (list_contains($p, profile_a) OR list_contains($p, profile_b))", {"p": list(profiles.values())},
    )
    assert chains >= len(SIX) - 1, "each link between two of the six is refused as a chain"


def test_an_ordinary_person_with_a_work_and_a_home_email_is_one_profile(planted: tuple[Pipeline, dict]) -> None:
    """Joined through an email and a phone, so the chain check runs; her records agree, so it keeps them."""
    pipeline, ids = planted
    profiles = profile_of(pipeline, ids["ordinary"])
    assert len(set(profiles.values())) == 1, profiles
    (refused,), = pipeline.query(
        "SELECT count(*) FROM identity.refused_links WHERE profile_a = $p OR profile_b = $p",
        {"p": profiles[ids["ordinary"][0]]},
    )
    assert refused == 0


def test_two_product_accounts_of_one_person_join_and_the_limit_keeps_one_id(planted: tuple[Pipeline, dict]) -> None:
    pipeline, ids = planted
    accounts = ids["accounts"]
    profiles = profile_of(pipeline, list(accounts.values()))
    assert len(set(profiles.values())) == 1, "the score says one person: the records join despite two user ids"
    profile = next(iter(profiles.values()))
    held = [value for (value,) in pipeline.query(
        "SELECT value FROM identity.identifier_profiles WHERE id_type = 'user_id' AND profile_id = $p", {"p": profile}
    )]
    assert len(held) == 1 and held[0] in accounts, f"one user id stays on the profile: {held}"
    (other,) = set(accounts) - set(held)
    refusals = pipeline.query(
        "SELECT refused_by FROM identity.refused_links "
        "WHERE 'user_id' IN (type_a, type_b) AND $v IN (value_a, value_b)",
        {"v": other},
    )
    assert ("limit user_id 1",) in refusals, f"the other id's link is refused by its limit: {refusals}"
    (linked,), = pipeline.query(
        "SELECT count(*) FROM identity.profile_edges WHERE profile_id = $p AND method = 'probabilistic'", {"p": profile}
    )
    assert linked == 1


def test_a_household_phone_first_on_a_nameless_record_joins_no_partners(
    planted: tuple[Pipeline, dict],
) -> None:
    """The partner's nameless billing record got the landline first. The records that both carry it agree on it by
    their data, so their agreement is not the chain's ends agreeing; and once the chain check refuses the link, the
    number is no evidence for the matcher either, which would otherwise join the partners again through it."""
    pipeline, ids = planted
    partner, other = ids["household"]["partner"], ids["household"]["other"]
    profiles = profile_of(pipeline, partner + other)
    assert len({profiles[r] for r in partner}) == 1 and len({profiles[r] for r in other}) == 1, profiles
    assert profiles[partner[0]] != profiles[other[0]], "two partners on one landline are two profiles"

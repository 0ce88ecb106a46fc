"""Shared values through the real pipeline: records planted in the test world, one run up to the identity graph.

A value several people use (a team's mailbox, a household's phone, a family laptop) links no one: each person keeps
a profile of their own holding the value, marked shared, and `identity.shared_values` reports it. A person's own
address on records whose names differ by a typing slip is no shared value, and their records stay one profile.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dagster import AssetSelection

from cdp_assets.identity.assets import GRAPH_KEY
from sandbox.runner import SandboxServer
from tests.conftest import TEST_SANDBOX_CONFIG, Pipeline
from tests.test_identity_chains import Planter

ROLE = "info@quarrymint-tools.com"  # a team's mailbox: on the list
TEAM = "reception@marrowfield-dental.com"  # a team's address not on the list: shared by what its records say
HOUSEHOLD_PHONE = "+1 503 784 2290"
OWN = "k.ulvestad@brightmoor.net"


@pytest.fixture(scope="module")
def planted(world_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Pipeline, dict, Any]]:
    folder = tmp_path_factory.mktemp("shared") / "world"
    shutil.copytree(world_template, folder)
    plant = Planter(folder)
    ids: dict[str, Any] = {}
    ids["colleagues"] = [
        plant.hubspot(60, "Aurelio", "Fenwick", email=ROLE, city="Reno", company="Quarrymint Tools"),
        plant.zendesk(61, "Brunhilde Okafor", email=ROLE, phone=None),
        plant.klaviyo(62, "Casimir", "Lindqvist", email=ROLE, phone=None, city="Reno"),
    ]
    ids["team"] = [
        plant.hubspot(63, "Leontyne", "Marchetti", email=TEAM, city="Fresno", company="Marrowfield Dental"),
        plant.zendesk(64, "Osvaldo Tremblay", email=TEAM, phone=None),
    ]
    ids["household"] = [
        plant.klaviyo(65, "Tobias", "Wrenfield", email="tobias.wrenfield@lumenhollow.org", phone=HOUSEHOLD_PHONE,
                      city="Salem"),
        plant.stripe(65, "Greta Wrenfield", email="greta.w@fernquill.net", phone=HOUSEHOLD_PHONE, city="Salem"),
    ]
    ids["own"] = [
        plant.hubspot(66, "Katherine", "Ulvestad", email=OWN, city="Tulsa"),
        plant.zendesk(66, "Kathreine Ulvestad", email=OWN, phone=None),
    ]
    plant.save()
    with SandboxServer(folder, TEST_SANDBOX_CONFIG) as server:
        pipeline = Pipeline(server.url, folder.parent / "warehouse.duckdb")
        upto_graph = AssetSelection.groups("raw", "staging") | AssetSelection.assets(GRAPH_KEY).upstream()
        outcome = pipeline.run(selection=upto_graph)
        assert outcome.success
        yield pipeline, ids, outcome


def profiles_of(pipeline: Pipeline, records: list[str]) -> dict[str, str]:
    found = dict(pipeline.query(
        "SELECT stream || ':' || record_id, profile_id FROM identity.record_profiles "
        "WHERE list_contains($records, stream || ':' || record_id)", {"records": records},
    ))
    assert set(found) == set(records), f"records missing from the graph: {set(records) - set(found)}"
    return found


def reported(pipeline: Pipeline, id_type: str, value: str) -> tuple[str, int, int] | None:
    rows = pipeline.query("SELECT reason, records, profiles FROM identity.shared_values WHERE id_type = $t AND "
                          "value = $v", {"t": id_type, "v": value})  # fmt: skip
    return rows[0] if rows else None


def holders(pipeline: Pipeline, id_type: str, value: str) -> dict[str, bool]:
    return dict(pipeline.query("SELECT profile_id, shared FROM identity.identifier_profiles WHERE id_type = $t "
                               "AND value = $v", {"t": id_type, "v": value}))  # fmt: skip


def test_colleagues_on_a_team_mailbox_keep_a_profile_each(planted: tuple[Pipeline, dict, Any]) -> None:
    pipeline, ids, outcome = planted
    for records, value, reason in ((ids["colleagues"], ROLE, "role mailbox"), (ids["team"], TEAM, "names differ")):
        profiles = profiles_of(pipeline, records)
        assert len(set(profiles.values())) == len(records), f"{value}: {profiles}"
        assert reported(pipeline, "email", value) == (reason, len(records), len(records))
        assert holders(pipeline, "email", value) == dict.fromkeys(profiles.values(), True), "kept on each, shared"
    refusals = {r for (r,) in pipeline.query(
        "SELECT DISTINCT refused_by FROM identity.refused_links WHERE $v IN (value_a, value_b)", {"v": ROLE})}
    assert refusals == {"shared (role mailbox)"}
    assert outcome.metadata["identity/identity_graph"]["shared_values"] >= 3


def test_two_people_on_one_household_phone_keep_a_profile_each(planted: tuple[Pipeline, dict, Any]) -> None:
    pipeline, ids, _ = planted
    profiles = profiles_of(pipeline, ids["household"])
    assert len(set(profiles.values())) == 2, profiles
    assert reported(pipeline, "phone", "+15037842290") == ("names differ", 2, 2)


def test_a_persons_own_address_under_a_mistyped_name_is_not_shared(planted: tuple[Pipeline, dict, Any]) -> None:
    pipeline, ids, _ = planted
    profiles = profiles_of(pipeline, ids["own"])
    assert len(set(profiles.values())) == 1, profiles
    assert reported(pipeline, "email", OWN) is None
    assert holders(pipeline, "email", OWN) == {next(iter(profiles.values())): False}


def test_events_of_a_shared_device_follow_their_login_and_found_no_profile(planted: tuple[Pipeline, dict, Any]
                                                                           ) -> None:
    """The test world's family devices: each is seen with several logins, so it is shared; an event carrying one
    goes to its login's profile, and one without a login to a profile that holds a person's login."""
    pipeline, _, _ = planted
    devices = [v for (v,) in pipeline.query("SELECT value FROM identity.shared_values WHERE reason = 'device'")]
    assert devices, "the test world should hold a device used by several logins"
    misplaced = pipeline.query("""
        SELECT d.value, e.record_id FROM identity.identifiers d
        JOIN identity.record_profiles e USING (stream, record_id)
        LEFT JOIN identity.identifiers u ON u.stream = d.stream AND u.record_id = d.record_id AND u.id_type = 'user_id'
        LEFT JOIN identity.identifier_profiles up ON up.id_type = 'user_id' AND up.value = u.value
        WHERE d.id_type = 'device_id' AND list_contains($devices, d.value)
          AND NOT coalesce(CASE WHEN u.value IS NOT NULL THEN up.profile_id = e.profile_id
                        ELSE EXISTS (SELECT 1 FROM identity.identifier_profiles p
                                     WHERE p.profile_id = e.profile_id AND p.id_type = 'user_id') END, false)
    """, {"devices": devices})
    assert not misplaced, f"events of shared devices placed apart from their login: {misplaced[:5]}"
    alone = pipeline.query("""
        SELECT profile_id FROM identity.identifier_profiles GROUP BY profile_id HAVING bool_and(shared)
    """)
    assert not alone, f"profiles holding nothing but shared values: {alone[:5]}"


def test_explain_shows_a_profiles_shared_values_and_refused_links(planted: tuple[Pipeline, dict, Any]) -> None:
    pipeline, ids, _ = planted
    profiles = profiles_of(pipeline, ids["colleagues"])
    first, *others = ids["colleagues"]

    def explain(*options: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "cdp_assets.cli", "profile", "--warehouse",
                               str(pipeline.warehouse), "explain", *options],
                              capture_output=True, text=True)  # fmt: skip

    shown = explain("--record", first, "--json")
    assert shown.returncode == 0, shown.stderr
    explanation = json.loads(shown.stdout)
    (value,) = [v for v in explanation["shared"] if v["value"] == ROLE]
    assert (value["reason"], value["profiles"]) == ("role mailbox", 3)
    assert sorted(value["other_profiles"]) == sorted(profiles[r] for r in others)
    assert {r["refused_by"] for r in explanation["refused"]} >= {"shared (role mailbox)"}
    text = explain("--record", first).stdout
    assert "shared values" in text and ROLE in text and "role mailbox" in text
    ambiguous = explain("--email", ROLE)
    assert ambiguous.returncode != 0 and "shared value held by 3 profiles" in ambiguous.stderr

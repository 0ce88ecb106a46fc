"""Deletions at the source that no incremental answer shows (Klaviyo profiles) reach consent and the destinations
within the hourly run, through the listing of every id the stream declares; the listing's safety guard is the full
pull's."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from pathlib import Path

import duckdb
import pytest
from klaviyo_api import KlaviyoAPI
from openapi_client.exceptions import ApiException

from cdp_assets import landing
from cdp_assets.definitions import jobs
from resources.klaviyo import ENDPOINTS, STREAMS
from resources.source import Page, SourceRecord
from sandbox.config import Credentials
from sandbox.runner import SandboxServer
from sandbox.store import WorldStore
from tests.conftest import Env

HOURLY = next(job for job in jobs if job.name == "hourly_pipeline").selection


def only_klaviyo_grants(env: Env) -> list[tuple[str, str]]:
    """(profile id, Klaviyo profile id) of people in Braze whose email consent is granted by exactly one current
    statement, from one Klaviyo profile: deleting that profile leaves them with no grant."""
    synced = set(env.state("braze_users"))
    rows = env.pipeline.query(
        "SELECT profile_id, any_value(record_id) FROM privacy.consent_ledger"
        " WHERE purpose = 'email_marketing' AND is_current GROUP BY profile_id"
        " HAVING count(*) = 1 AND bool_and(choice = 'granted' AND source = 'klaviyo.profiles')"
        " ORDER BY profile_id"
    )
    return [(profile_id, record_id) for profile_id, record_id in rows if profile_id in synced]


def test_a_profile_deleted_at_klaviyo_loses_its_consent_in_the_hourly_run(start: Callable[..., Env]) -> None:
    env = start()
    assert env.sync("braze_users").success
    chosen = only_klaviyo_grants(env)
    assert chosen, "no one in Braze owes their email consent to one Klaviyo profile; the test proves nothing"
    profile_id, klaviyo_id = chosen[0]
    assert env.sandbox.control("destinations/braze")[profile_id]["email_subscribe"] == "opted_in"  # control

    store = WorldStore(env.world)
    record = store.get("klaviyo.profiles", klaviyo_id)
    assert record is not None and not record.archived
    store.upsert([dataclasses.replace(record, archived=True)])  # deleted: Klaviyo lists it no more, anywhere
    live = sum(1 for r in store.scan("klaviyo.profiles") if not r.archived)

    outcome = env.pipeline.run(selection=HOURLY)
    assert outcome.success
    pulled = outcome.metadata["raw/klaviyo_profiles"]
    assert pulled["full_pull"] is False and pulled["rows_marked_deleted"] == 1
    # The listing costs one request a page of 100 ids, beside the incremental pull's own.
    assert pulled["requests"] >= math.ceil(live / ENDPOINTS["profiles"].page_size) + 1

    [(deleted,)] = env.pipeline.query(
        "SELECT is_deleted FROM staging.klaviyo__profiles WHERE profile_id = $id", {"id": klaviyo_id}
    )
    assert deleted
    granted = env.pipeline.query(
        "SELECT count(*) FROM privacy.consent_ledger WHERE record_id = $id AND purpose = 'email_marketing'"
        " AND choice = 'granted' AND is_current",
        {"id": klaviyo_id},
    )
    assert granted == [(0,)]
    braze = env.sandbox.control("destinations/braze").get(profile_id, {})
    assert braze.get("email_subscribe") != "opted_in"


def test_a_listing_that_misses_most_records_marks_none_deleted(tmp_path: Path) -> None:
    """The id listing refuses, as a full pull does, to mark more than MAX_TOMBSTONE_SHARE of live records deleted;
    below it, exactly the unlisted ones are marked."""
    table = "raw.klaviyo_profiles"
    ids = [f"01PROFILE{n:04d}" for n in range(10)]
    with duckdb.connect(str(tmp_path / "warehouse.duckdb")) as conn:
        landing.setup(conn, table)
        page = Page([SourceRecord(i, {"id": i, "type": "profile"}) for i in ids], {"changed_since": "x"})
        landing.land_stream(conn, table=table, source="klaviyo", stream="profiles", tombstone_missing=True,
                            pages=iter([page]), full_pull=False, run_id="first")  # fmt: skip

        def tombstone(listed: list[str]) -> int:
            pages = iter([listed[:4], listed[4:]])  # in pages, as a listing comes
            return landing.tombstone_unlisted(conn, table=table, source="klaviyo", stream="profiles", ids=pages,
                                              run_id="hourly")  # fmt: skip

        def deleted() -> set[str]:
            rows = conn.execute(f"SELECT record_id FROM {table} GROUP BY 1 HAVING arg_max(deleted, landing_id)")
            return {row[0] for row in rows.fetchall()}

        share = landing.MAX_TOMBSTONE_SHARE
        with pytest.raises(RuntimeError, match="refusing"):
            tombstone(ids[: math.floor(len(ids) * (1 - share)) - 1])
        assert deleted() == set()
        assert tombstone(ids[2:]) == 2
        assert deleted() == set(ids[:2])
        assert tombstone(ids[2:]) == 0  # already marked: nothing twice
        assert conn.execute("SELECT count(*) FROM raw._full_pull_seen").fetchone() == (0,)


def test_the_sandbox_serves_klaviyos_sparse_fieldsets(sandbox: SandboxServer, world: Path) -> None:
    """The id listing's request, as Klaviyo's own SDK sends it, answered per the documented contract: only the
    named attributes, every live profile once, by id; a field Get Profiles does not document is refused."""
    key = Credentials().klaviyo.api_key
    client = KlaviyoAPI(key, max_delay=0, max_retries=0, test_host=sandbox.base_urls["klaviyo"])
    client.api_client.default_headers["X-Forwarded-Proto"] = "https"  # the SDK takes cursors from https links only
    fields = ENDPOINTS["profiles"].id_listing or {}
    assert STREAMS["profiles"].list_ids_each_pull and fields
    params = {"fields_profile": fields["fields[profile]"].split(","), "sort": fields["sort"], "page_size": 100}
    page = client.Profiles.get_profiles(**params)  # the SDK answers a sparse fieldset with the JSON as a dict
    listed = []
    while True:
        for profile in page["data"]:
            assert profile["type"] == "profile" and profile["attributes"].keys() == {"updated"}
            listed.append(profile["id"])
        if not page["links"]["next"]:
            break
        page = client.Profiles.get_profiles(**params, page_cursor=page["links"]["next"])
    store = WorldStore(world)
    assert listed == sorted(r.id for r in store.scan("klaviyo.profiles") if not r.archived)

    with pytest.raises(ApiException) as refused:
        client.Profiles.get_profiles(fields_profile=["updated", " email"])
    assert refused.value.status == 400

"""Zendesk users through `create_or_update_many`: a bulk job per batch, polled until it finishes.

`POST /api/v2/users/create_or_update_many` takes up to 100 users, matched by email,
and answers with a queued `job_status`; `GET /api/v2/job_statuses/{id}` tells when it
completed and what became of each user (by index). Several jobs may be in flight at
once (an account may hold 30), so the engine submits a few before collecting the first.
A job's id is kept with the batch's intent, so a run killed while waiting has its jobs
collected by the next run instead of sent again.
Fields named `user_fields.<name>` go into the user's custom fields.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from pydantic import Field

from resources.destinations import UPSERT, Delivery, DestinationResource, Erasure, SyncRecord
from resources.http import ServiceError
from resources.zendesk import PACE

SUBMIT_PATH = "/api/v2/users/create_or_update_many"
STATUS_PATH = "/api/v2/job_statuses/{id}"
DELETE_PATH, PERMANENT_DELETE_PATH = "/api/v2/users/{id}", "/api/v2/deleted_users/{id}"
BATCH_SIZE = 100  # users per bulk call
IN_FLIGHT = 10  # jobs submitted ahead; the account limit is 30 queued or running
POLL_SECONDS, POLL_MAX_SECONDS, JOB_TIMEOUT_SECONDS = 0.2, 5.0, 600.0
USER_FIELDS = "user_fields."


class ZendeskUsersDestination(DestinationResource):
    """Zendesk with an agent email and API token (the same account as the source)."""

    service_name = "zendesk"
    credential_env = "ZENDESK_API_TOKEN"
    modes = frozenset({"upsert"})
    batch_size = BATCH_SIZE
    pace = PACE  # the account's, which the source's exports share
    echo_stream = "zendesk.users"  # `user_fields.<name>` is where the export shows it too
    max_in_flight = IN_FLIGHT

    email: str = Field(description="Agent email the API token belongs to, from ZENDESK_EMAIL.")
    api_token: str = Field(description="API token, from ZENDESK_API_TOKEN.")

    def basic_auth(self) -> tuple[str, str]:
        return (f"{self.email}/token", self.api_token)

    def submit(self, operation: str, records: list[SyncRecord], options: Mapping[str, str]) -> Any:
        if operation != UPSERT:
            raise ValueError(f"zendesk users take upserts only, not {operation}")
        users = [_user(record) for record in records]
        body = self.client.fetch_json("POST", SUBMIT_PATH, json={"users": users})
        return body["job_status"]["id"], records

    def collect(self, ticket: Any) -> Delivery:
        job_id, records = ticket
        job = self._finished(job_id)
        if job is None:
            raise ServiceError(f"zendesk: job {job_id} is unknown to the account")
        if job["status"] == "failed":
            raise ServiceError(f"zendesk: job {job_id} failed: {job.get('message')}")
        return _delivery(records, job.get("results") or [])

    def receipt(self, ticket: Any) -> str:
        return str(ticket[0])

    def recover(self, operation: str, records: list[SyncRecord], receipt: str | None) -> Delivery | None:
        """A killed run's job, by its id: its results by index, for as long as Zendesk keeps them (a day); a job that
        failed whole took nothing (sent again). Without an id (killed while submitting) or past that day, Zendesk
        cannot say."""
        job = self._finished(receipt) if receipt else None
        if job is None:
            return None
        return _delivery(records, job.get("results") or []) if job["status"] == "completed" else Delivery()

    def _finished(self, job_id: str) -> dict[str, Any] | None:
        """The job once it completed or failed, polled with growing pauses; None when Zendesk does not know it."""
        started, pause = time.monotonic(), POLL_SECONDS
        while True:
            response, body = self.client.fetch("GET", STATUS_PATH.format(id=job_id), tolerate=(404,))
            if response.status_code == 404:
                return None
            job = body["job_status"]
            if job["status"] in ("completed", "failed"):
                return job
            if time.monotonic() - started > JOB_TIMEOUT_SECONDS:
                raise ServiceError(f"zendesk: job {job_id} still {job['status']} after {JOB_TIMEOUT_SECONDS:.0f}s")
            time.sleep(pause)
            pause = min(POLL_MAX_SECONDS, pause * 2)


    def erase(self, erasure: Erasure) -> dict[str, int]:
        """Delete each of the person's users, then delete them permanently (what GDPR asks of Zendesk)."""
        done = {"users_deleted": 0, "already_gone": 0}
        for user_id in erasure.records.get("zendesk.users", []):
            self.client.request("DELETE", DELETE_PATH.format(id=user_id), tolerate=(404,))
            gone = self.client.request("DELETE", PERMANENT_DELETE_PATH.format(id=user_id), tolerate=(404,))
            done["already_gone" if gone.status_code == 404 else "users_deleted"] += 1
        return done


def _user(record: SyncRecord) -> dict[str, Any]:
    user: dict[str, Any] = {"email": record.key}
    for name, value in record.values.items():
        if name.startswith(USER_FIELDS):
            user.setdefault("user_fields", {})[name.removeprefix(USER_FIELDS)] = value
        else:
            user[name] = value
    return user


def _delivery(records: list[SyncRecord], results: list[dict[str, Any]]) -> Delivery:
    delivery = Delivery()
    by_index = {result["index"]: result for result in results if "index" in result}
    for index, record in enumerate(records):
        result = by_index.get(index)
        if result is None:
            delivery.rejected[record.key] = "Zendesk's job results did not include this user"
        elif result.get("status") in ("Created", "Updated"):
            delivery.acknowledged[record.key] = str(result["id"])
        else:
            delivery.rejected[record.key] = f"Zendesk {result.get('error')}: {result.get('details')}"
    return delivery

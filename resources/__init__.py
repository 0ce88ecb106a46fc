"""Source and destination connectors and the warehouse, configured from environment variables.

Every base URL defaults to the embedded sandbox; pointing a connector at the real
service means setting its base URL and secret, nothing else (see README).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb
from dagster import EnvVar
from dagster_duckdb import DuckDBResource
from pydantic import Field

from resources.destinations import DestinationResource
from resources.destinations.braze import BrazeUsersDestination
from resources.destinations.hubspot import HubSpotContactsDestination
from resources.destinations.meta import MetaAudienceDestination
from resources.destinations.zendesk import ZendeskUsersDestination
from resources.hubspot import HubSpotResource
from resources.klaviyo import KlaviyoResource
from resources.mixpanel import MixpanelResource
from resources.privacy import PrivacyResource
from resources.source import SourceResource
from resources.stripe import StripeResource
from resources.zendesk import ZendeskResource

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SANDBOX_URL = "http://127.0.0.1:8765"
DEFAULT_WAREHOUSE = PROJECT_ROOT / "data" / "warehouse.duckdb"

SOURCES: dict[str, type[SourceResource]] = {
    "stripe": StripeResource,
    "hubspot": HubSpotResource,
    "zendesk": ZendeskResource,
    "klaviyo": KlaviyoResource,
    "mixpanel": MixpanelResource,
}
DESTINATIONS: dict[str, type[DestinationResource]] = {
    "hubspot": HubSpotContactsDestination,
    "zendesk": ZendeskUsersDestination,
    "braze": BrazeUsersDestination,
    "meta": MetaAudienceDestination,
}


class WarehouseResource(DuckDBResource):
    """The DuckDB warehouse file; its folder is created on first use."""

    memory_limit: str = Field(
        default="3GB",
        pattern=r"^\d+(\.\d+)?\s*[KMGT]i?B$",
        description="DuckDB's memory for the run (it spills to disk past it), so memory does not grow with data.",
    )

    @contextmanager
    def get_connection(self) -> Iterator[duckdb.DuckDBPyConnection]:
        Path(self.database).parent.mkdir(parents=True, exist_ok=True)
        with super().get_connection() as conn:
            try:
                conn.execute(f"SET memory_limit = '{self.memory_limit}'")  # checked by the field's pattern
                yield conn
            finally:
                conn.close()  # DuckDBResource leaves it open when the body raises, and the file with it


def _base_url(variable: str, service: str) -> str:
    sandbox = os.getenv("CDP_SANDBOX_URL", DEFAULT_SANDBOX_URL).rstrip("/")
    return os.getenv(variable, f"{sandbox}/{service}")


def pacing_variable(resource: str) -> str:
    """The variable setting the calls per window of a connector that paces itself (an account on a higher plan,
    such as Stripe's live mode); the others follow the service's 429s and need no setting."""
    return f"{resource.upper()}_REQUESTS_PER_WINDOW"


def _pacing(resource: str) -> dict[str, int]:
    value = os.getenv(pacing_variable(resource))
    return {"requests_per_window": int(value)} if value else {}


def privacy_folders() -> tuple[Path, Path]:
    """The request inbox and the access exports folder: beside the warehouse unless set."""
    privacy = Path(os.getenv("CDP_WAREHOUSE", str(DEFAULT_WAREHOUSE))).parent / "privacy"
    return (
        Path(os.getenv("CDP_PRIVACY_INBOX", str(privacy / "inbox"))),
        Path(os.getenv("CDP_PRIVACY_EXPORTS", str(privacy / "exports"))),
    )


def build_resources() -> dict[str, object]:
    """The resources of every job: each source and destination (secrets as `EnvVar`), the warehouse and privacy.

    HubSpot and Zendesk are written on the same accounts they are read from, with the same credentials.
    """
    hubspot_url, zendesk_url = _base_url("HUBSPOT_BASE_URL", "hubspot"), _base_url("ZENDESK_BASE_URL", "zendesk")
    inbox, exports = privacy_folders()
    return {
        "stripe": StripeResource(
            base_url=_base_url("STRIPE_BASE_URL", "stripe"), api_key=EnvVar("STRIPE_API_KEY"), **_pacing("stripe")
        ),
        "hubspot": HubSpotResource(
            base_url=hubspot_url, access_token=EnvVar("HUBSPOT_ACCESS_TOKEN"), **_pacing("hubspot")
        ),
        "zendesk": ZendeskResource(
            base_url=zendesk_url, email=EnvVar("ZENDESK_EMAIL"), api_token=EnvVar("ZENDESK_API_TOKEN")
        ),
        "klaviyo": KlaviyoResource(
            base_url=_base_url("KLAVIYO_BASE_URL", "klaviyo"), api_key=EnvVar("KLAVIYO_API_KEY")
        ),
        "mixpanel": MixpanelResource(
            base_url=_base_url("MIXPANEL_BASE_URL", "mixpanel"),
            service_account_username=EnvVar("MIXPANEL_SERVICE_ACCOUNT"),
            service_account_secret=EnvVar("MIXPANEL_SERVICE_ACCOUNT_SECRET"),
            project_id=EnvVar("MIXPANEL_PROJECT_ID"),
            start_date=os.getenv("MIXPANEL_START_DATE", "2023-01-01"),
        ),
        "destination_hubspot": HubSpotContactsDestination(
            base_url=hubspot_url, access_token=EnvVar("HUBSPOT_ACCESS_TOKEN"), **_pacing("destination_hubspot")
        ),
        "destination_zendesk": ZendeskUsersDestination(
            base_url=zendesk_url, email=EnvVar("ZENDESK_EMAIL"), api_token=EnvVar("ZENDESK_API_TOKEN"),
            **_pacing("destination_zendesk"),
        ),
        "destination_braze": BrazeUsersDestination(
            base_url=_base_url("BRAZE_BASE_URL", "braze"), api_key=EnvVar("BRAZE_API_KEY"),
            **_pacing("destination_braze"),
        ),
        "destination_meta": MetaAudienceDestination(
            base_url=_base_url("META_BASE_URL", "meta"),
            access_token=EnvVar("META_ACCESS_TOKEN"),
            api_version=os.getenv("META_API_VERSION", "v21.0"),
            **_pacing("destination_meta"),
        ),
        "warehouse": WarehouseResource(
            database=os.getenv("CDP_WAREHOUSE", str(DEFAULT_WAREHOUSE)),
            memory_limit=os.getenv("CDP_DUCKDB_MEMORY_LIMIT", "3GB"),
        ),
        "privacy": PrivacyResource(salt=EnvVar("CDP_PRIVACY_SALT"), inbox=str(inbox), exports=str(exports)),
    }

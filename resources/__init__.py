"""Source and destination connectors and the warehouse, configured from environment variables.

Each connector needs its base URL and secret; pointing it at the real service means setting them, nothing
else (see README). Only a local launcher (`cdp run`, `cdp env`, `cdp pipeline`, `cdp bench`, the tests) makes
the sandbox the default, by setting CDP_SANDBOX_URL: anywhere else a missing base URL, secret or privacy key
stops the definitions from loading, with an error naming them, rather than calling localhost or hashing with
a key nobody chose.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb
from dagster import EnvVar, InitResourceContext
from dagster_duckdb import DuckDBResource
from pydantic import Field, PrivateAttr

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
SANDBOX_URL = "CDP_SANDBOX_URL"
PRIVACY_KEY = "CDP_PRIVACY_SALT"
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


# A run with this tag set to COMPACTION_DEFERRED leaves the compaction of thinned tables to a later run.
COMPACTION_TAG, COMPACTION_DEFERRED = "cdp/compaction", "deferred"
LOOKBACK_VARIABLE = "CDP_LOOKBACK_SECONDS"


class WarehouseResource(DuckDBResource):
    """The DuckDB warehouse file; its folder is created on first use.

    A write that deletes rows scattered through a table (a following build replacing the rows of the profiles it
    made again) leaves its row groups thinned, and DuckDB's checkpoint, as a step's connection closes, compacts them
    by writing the table again: seconds for a table of a hundred thousand profiles, whatever share of it changed. A
    run tagged COMPACTION_TAG = COMPACTION_DEFERRED (the hourly job's) checkpoints without compacting
    (`max_vacuum_tasks` 0), so its cost follows its change; every other run compacts, the nightly one included,
    which writes its tables again anyway."""

    memory_limit: str = Field(
        default="3GB",
        pattern=r"^\d+(\.\d+)?\s*[KMGT]i?B$",
        description="DuckDB's memory for the run (it spills to disk past it), so memory does not grow with data.",
    )
    _compact: bool = PrivateAttr(default=True)

    def setup_for_execution(self, context: InitResourceContext) -> None:
        run = context.dagster_run
        self._compact = run is None or run.tags.get(COMPACTION_TAG) != COMPACTION_DEFERRED

    @contextmanager
    def get_connection(self) -> Iterator[duckdb.DuckDBPyConnection]:
        Path(self.database).parent.mkdir(parents=True, exist_ok=True)
        with super().get_connection() as conn:
            try:
                conn.execute(f"SET memory_limit = '{self.memory_limit}'")  # checked by the field's pattern
                # Set either way: the setting is the database's, and outlives this connection while another holds
                # the file open.
                conn.execute("RESET max_vacuum_tasks" if self._compact else "SET max_vacuum_tasks = 0")
                yield conn
            finally:
                conn.close()  # DuckDBResource leaves it open when the body raises, and the file with it


class SettingsMissing(RuntimeError):
    """Variables the resources need are not set; raised when the definitions load, before any run starts."""


class _Settings:
    """Reads the variables the resources need, noting each one missing, so that one error names them all."""

    def __init__(self) -> None:
        self.sandbox = os.getenv(SANDBOX_URL, "").rstrip("/")
        self.missing: list[str] = []

    def base_url(self, variable: str, service: str) -> str:
        """The service's base URL from `variable`; the sandbox's route for it only when a launcher set
        CDP_SANDBOX_URL."""
        url = os.getenv(variable) or (f"{self.sandbox}/{service}" if self.sandbox else "")
        if not url and variable not in self.missing:
            self.missing.append(variable)
        return url

    def secret(self, variable: str) -> EnvVar:
        """A secret, read by Dagster at run time (so never shown or logged), but required to be set now."""
        if not os.getenv(variable) and variable not in self.missing:
            self.missing.append(variable)
        return EnvVar(variable)

    def check(self) -> None:
        if not self.missing:
            return
        problem = f"not set: {', '.join(self.missing)}."
        if any(name != PRIVACY_KEY for name in self.missing):
            problem += (" Each service needs its base URL and secret (README, \"Pointing at the real services\");"
                        f" nothing defaults to the local sandbox unless {SANDBOX_URL} says where it is.")
        if PRIVACY_KEY in self.missing:
            problem += (f" {PRIVACY_KEY} is the secret key of the suppression digests that keep deleted people "
                        "from coming back: choose a long random one, keep it secret, and never change it.")
        raise SettingsMissing(
            f"{problem} For the local sandbox, run through `make run` (`cdp run`), `cdp pipeline` or `cdp bench`, "
            "or take their environment with `make shell` (`eval \"$(.venv/bin/cdp env)\"`): they set all of these."
        )


def primary_key(entity: str) -> str:
    """The key column of a staging entity ("<source>__<entity>")."""
    source, name = entity.split("__", 1)
    return next(stream.primary_key for stream in SOURCES[source].streams.values() if stream.entity == name)


def pacing_variable(service: str) -> str:
    """The variable setting the calls per window of an account (on a higher plan, such as Stripe's live mode) whose
    connectors pace themselves: one per service, as a source and a destination on one account share one pacer."""
    return f"{service.upper()}_REQUESTS_PER_WINDOW"


def lookback_seconds() -> int:
    """The overlap the incremental pulls read again before their last high-water mark: CDP_LOOKBACK_SECONDS, or the
    connectors' default."""
    value = os.getenv(LOOKBACK_VARIABLE) or str(SourceResource.model_fields["lookback_seconds"].default)
    if not value.isdigit():
        raise ValueError(f"{LOOKBACK_VARIABLE} is a whole number of seconds, not {value!r}")
    return int(value)


def _pacing(service: str) -> dict[str, int]:
    value = os.getenv(pacing_variable(service))
    return {"requests_per_window": int(value)} if value else {}


def privacy_folders() -> tuple[Path, Path]:
    """The request inbox and the access exports folder: beside the warehouse unless set."""
    privacy = Path(os.getenv("CDP_WAREHOUSE", str(DEFAULT_WAREHOUSE))).parent / "privacy"
    return (
        Path(os.getenv("CDP_PRIVACY_INBOX", str(privacy / "inbox"))),
        Path(os.getenv("CDP_PRIVACY_EXPORTS", str(privacy / "exports"))),
    )


def build_resources() -> dict[str, object]:
    """The resources of every job: each source and destination (secrets as `EnvVar`), the warehouse and privacy;
    `SettingsMissing` names every variable missing.

    HubSpot and Zendesk are written on the same accounts they are read from, with the same credentials.
    """
    env = _Settings()
    hubspot_url, zendesk_url = env.base_url("HUBSPOT_BASE_URL", "hubspot"), env.base_url("ZENDESK_BASE_URL", "zendesk")
    inbox, exports = privacy_folders()
    lookback = lookback_seconds()
    resources = {
        "stripe": StripeResource(
            base_url=env.base_url("STRIPE_BASE_URL", "stripe"), api_key=env.secret("STRIPE_API_KEY"),
            lookback_seconds=lookback, **_pacing("stripe"),
        ),
        "hubspot": HubSpotResource(
            base_url=hubspot_url, access_token=env.secret("HUBSPOT_ACCESS_TOKEN"), lookback_seconds=lookback,
            **_pacing("hubspot"),
        ),
        "zendesk": ZendeskResource(
            base_url=zendesk_url, email=env.secret("ZENDESK_EMAIL"), api_token=env.secret("ZENDESK_API_TOKEN"),
            **_pacing("zendesk"),
        ),
        "klaviyo": KlaviyoResource(
            base_url=env.base_url("KLAVIYO_BASE_URL", "klaviyo"), api_key=env.secret("KLAVIYO_API_KEY"),
            lookback_seconds=lookback, **_pacing("klaviyo"),
        ),
        "mixpanel": MixpanelResource(
            base_url=env.base_url("MIXPANEL_BASE_URL", "mixpanel"),
            service_account_username=env.secret("MIXPANEL_SERVICE_ACCOUNT"),
            service_account_secret=env.secret("MIXPANEL_SERVICE_ACCOUNT_SECRET"),
            project_id=env.secret("MIXPANEL_PROJECT_ID"),
        ),
        "destination_hubspot": HubSpotContactsDestination(
            base_url=hubspot_url, access_token=env.secret("HUBSPOT_ACCESS_TOKEN"), **_pacing("hubspot")
        ),
        "destination_zendesk": ZendeskUsersDestination(
            base_url=zendesk_url, email=env.secret("ZENDESK_EMAIL"), api_token=env.secret("ZENDESK_API_TOKEN"),
            **_pacing("zendesk"),
        ),
        "destination_braze": BrazeUsersDestination(
            base_url=env.base_url("BRAZE_BASE_URL", "braze"), api_key=env.secret("BRAZE_API_KEY"),
            **_pacing("braze"),
        ),
        "destination_meta": MetaAudienceDestination(
            base_url=env.base_url("META_BASE_URL", "meta"),
            access_token=env.secret("META_ACCESS_TOKEN"),
            api_version=os.getenv("META_API_VERSION", "v21.0"),
            **_pacing("meta"),
        ),
        "warehouse": WarehouseResource(
            database=os.getenv("CDP_WAREHOUSE", str(DEFAULT_WAREHOUSE)),
            memory_limit=os.getenv("CDP_DUCKDB_MEMORY_LIMIT", "3GB"),
        ),
        "privacy": PrivacyResource(salt=env.secret(PRIVACY_KEY), inbox=str(inbox), exports=str(exports)),
    }
    env.check()
    return resources

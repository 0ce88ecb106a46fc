"""Sandbox settings: credentials, documented rate limits, page sizes, destination accounts, faults and churn.

Defaults are the real services' documented values, so a connector tuned against the
sandbox is tuned for production. The same shape is read from an optional JSON file and
deep-merged at runtime through ``PATCH /_sandbox/config``.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
import tempfile
import threading
import types
import typing
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

SOURCES: tuple[str, ...] = ("stripe", "hubspot", "zendesk", "klaviyo", "mixpanel")
DESTINATIONS: tuple[str, ...] = ("braze", "meta")  # HubSpot and Zendesk take writes on their source accounts
SERVICES: tuple[str, ...] = (*SOURCES, *DESTINATIONS)

_LOCK = threading.Lock()

# The `/_sandbox/*` control routes answer only requests carrying the token their launcher chose and handed the
# server in this variable; the alert webhook receiver takes it in its URL, as chat tools' secret webhook URLs do.
TOKEN_ENV = "CDP_SANDBOX_TOKEN"
TOKEN_HEADER = "X-Sandbox-Token"
WEBHOOK_PATH = "/_sandbox/webhook"
NO_HARD_LINKS = frozenset({errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS})  # os.link's "not here"
# Churn on demand runs inside a request: bounded, so one call cannot hold the server for hours.
MAX_TICKS = 10_000
MAX_CHANGES = 1_000_000  # a tick's changes; the benchmark changes 1% of a million people


def new_token() -> str:
    return secrets.token_urlsafe(32)


def kept_secret(path: Path, make: typing.Callable[[], str] = new_token) -> str:
    """The secret kept in ``path``: made once and written whole (never over one another launcher wrote first),
    readable by its owner alone, then reused, so every launcher of one data folder agrees on it (the sandbox's
    control token, the privacy key). A file others can read, or an empty one, is refused: its secret may be
    known, or lost."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):  # another launcher wrote it first: theirs is kept
            _write_once(path, make() + "\n")
    if path.stat().st_mode & 0o077:
        raise PermissionError(f"{path} can be read by other users, so the secret in it may be known: "
                              f"if it never left this machine, `chmod 600 {path}`")  # fmt: skip
    secret = path.read_text().strip()
    if not secret:
        raise ValueError(f"{path} is empty: restore the secret it held")
    return secret


def _write_once(path: Path, text: str) -> None:
    """Create ``path`` (mode 600) holding ``text``, or raise FileExistsError. A finished draft is hard-linked into
    place, so no reader sees a half-written file; where the file system has no hard links, an exclusive create and
    then the write (a launcher reading in that instant finds it empty and says so)."""
    descriptor, draft = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # mode 600
    try:
        with os.fdopen(descriptor, "w") as file:
            file.write(text)
        os.link(draft, path)
        return
    except OSError as exc:
        if exc.errno not in NO_HARD_LINKS:  # an existing file (FileExistsError) included
            raise
    finally:
        os.unlink(draft)
    with os.fdopen(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600), "w") as file:
        file.write(text)


def control_headers(token: str) -> dict[str, str]:
    return {TOKEN_HEADER: token}


def webhook_url(sandbox_url: str, token: str) -> str:
    """Where alerts are posted on a sandbox: its webhook receiver, the token in the path."""
    return f"{sandbox_url}{WEBHOOK_PATH}/{token}"


@dataclass
class StripeAuth:
    api_key: str = "sk_test_sandbox"


@dataclass
class HubSpotAuth:
    token: str = "pat-sandbox"


@dataclass
class ZendeskAuth:
    """Basic ``{email}/token:{api_token}``; ``Bearer {api_token}`` is accepted too."""

    email: str = "sandbox@example.com"
    api_token: str = "zd-sandbox"


@dataclass
class KlaviyoAuth:
    api_key: str = "pk_sandbox"


@dataclass
class MixpanelAuth:
    username: str = "sandbox.sa"
    secret: str = "mp-sandbox"
    project_id: str = "1"


@dataclass
class BrazeAuth:
    api_key: str = "braze-sandbox"


@dataclass
class MetaAuth:
    access_token: str = "meta-sandbox"


@dataclass
class Credentials:
    stripe: StripeAuth = field(default_factory=StripeAuth)
    hubspot: HubSpotAuth = field(default_factory=HubSpotAuth)
    zendesk: ZendeskAuth = field(default_factory=ZendeskAuth)
    klaviyo: KlaviyoAuth = field(default_factory=KlaviyoAuth)
    mixpanel: MixpanelAuth = field(default_factory=MixpanelAuth)
    braze: BrazeAuth = field(default_factory=BrazeAuth)
    meta: MetaAuth = field(default_factory=MetaAuth)


@dataclass
class Limit:
    """At most ``max`` requests in any rolling ``seconds`` window; ``max <= 0`` disables it."""

    max: int
    seconds: float


def _default_limits() -> dict[str, dict[str, Limit]]:
    return {
        "stripe": {"requests": Limit(25, 1)},
        "hubspot": {"ten_secondly": Limit(100, 10), "search": Limit(4, 1)},
        # Exports have their own limit; every other call counts against the account's (Professional plan).
        "zendesk": {"export": Limit(10, 60), "account": Limit(400, 60)},
        "klaviyo": {"burst": Limit(75, 1), "steady": Limit(750, 60)},
        "mixpanel": {"secondly": Limit(3, 1), "hourly": Limit(60, 3600)},
        "braze": {"users_track": Limit(3000, 3), "users_delete": Limit(20_000, 60)},
        # Meta throttles custom audience calls per ad account by business use case, without a published
        # number; this is the sandbox's own choice.
        "meta": {"custom_audience": Limit(60, 60)},
    }


@dataclass
class PageSizes:
    """Largest page each endpoint serves (documented maxima)."""

    stripe: int = 100
    hubspot_list: int = 100
    hubspot_search: int = 200
    hubspot_batch: int = 1000
    zendesk: int = 1000
    klaviyo_profiles: int = 100
    klaviyo_events: int = 200
    mixpanel: int = 100_000
    hubspot_upsert: int = 100  # inputs per contacts batch upsert
    zendesk_users: int = 100  # users per create_or_update_many
    braze_attributes: int = 75  # attribute objects per /users/track
    meta_users: int = 10_000  # records per custom audience call


SUBSCRIPTION_STATUSES = ["active", "trialing", "past_due", "unpaid", "paused", "canceled", "incomplete",
                         "incomplete_expired"]  # fmt: skip


def _contact_properties() -> dict[str, list[str]]:
    """Custom contact properties an account has defined for the CDP's syncs: name -> options ([]: free text)."""
    return {
        "cdp_profile_id": [],
        "cdp_plan": [],
        "cdp_subscription_status": list(SUBSCRIPTION_STATUSES),
        "cdp_mrr": [],
        "cdp_lifetime_revenue": [],
        "cdp_currency": [],
        "cdp_open_tickets": [],
        "cdp_satisfaction_score": [],
        "cdp_last_product_activity": [],
    }  # fmt: skip


def _user_fields() -> dict[str, list[str]]:
    """Custom user fields a Zendesk account has defined: name -> dropdown options ([]: free text)."""
    names = ("cdp_profile_id", "cdp_plan", "cdp_subscription_status", "cdp_mrr", "cdp_lifetime_revenue", "cdp_currency")
    return {name: _contact_properties()[name] for name in names}


@dataclass
class Accounts:
    """What the destination accounts hold besides records: defined fields, audiences and job timing.

    A write naming a HubSpot property or Zendesk user field the account has not defined, or a value
    outside its options, is refused as the real services refuse it.
    """

    hubspot_contact_properties: dict[str, list[str]] = field(default_factory=_contact_properties)
    zendesk_user_fields: dict[str, list[str]] = field(default_factory=_user_fields)
    zendesk_job_seconds: float = 0.5  # how long a bulk job waits queued before it runs
    zendesk_max_jobs: int = 30  # queued or working jobs an account may have
    meta_audiences: list[str] = field(default_factory=lambda: ["23850000000000001", "23850000000000002"])


@dataclass
class Faults:
    """Injected trouble; ``None`` in a per-service entry means "use the default entry"."""

    error_rate: float | None = None
    burst_429_every: int | None = None
    burst_429_length: int | None = None
    latency_ms: float | None = None
    drop_rate: float | None = None
    truncate_rate: float | None = None  # 200 JSON bodies cut short, with a matching Content-Length
    outage: bool | None = None  # every request answered 503, as by a service that is down


def _default_faults() -> dict[str, Faults]:
    return {"default": Faults(0.0, 0, 0, 0.0, 0.0, 0.0, False)}


@dataclass
class Duplicates:
    """Serve the corpus's designated record twice, as a buggy API does (see ``sandbox/corpus.py``)."""

    stripe: bool = False  # GET /v1/customers
    zendesk: bool = False  # the users incremental export


@dataclass
class SandboxConfig:
    credentials: Credentials = field(default_factory=Credentials)
    limits: dict[str, dict[str, Limit]] = field(default_factory=_default_limits)
    page_sizes: PageSizes = field(default_factory=PageSizes)
    hubspot_search_cap: int = 10_000
    zendesk_recent_exclusion_seconds: float = 60
    faults: dict[str, Faults] = field(default_factory=_default_faults)
    fault_seed: int = 0
    duplicates: Duplicates = field(default_factory=Duplicates)
    accounts: Accounts = field(default_factory=Accounts)
    tick_seconds: float = 0
    changes_per_tick: int = 20

    def to_dict(self) -> dict[str, Any]:
        with _LOCK:
            return asdict(self)

    def update(self, patch: dict[str, Any]) -> dict[str, Any]:
        """Deep-merge ``patch`` into this config in place; invalid patches change nothing."""
        with _LOCK:
            fresh = from_dict(_merge(asdict(self), patch))
            for f in fields(self):
                setattr(self, f.name, getattr(fresh, f.name))
            return asdict(self)

    def faults_for(self, service: str) -> Faults:
        """The default faults overlaid with the service's own non-null entries."""
        faults = self.faults
        merged = asdict(faults["default"])
        own = faults.get(service)
        if own is not None:
            merged.update({k: v for k, v in asdict(own).items() if v is not None})
        return Faults(**merged)


def from_dict(data: dict[str, Any]) -> SandboxConfig:
    """Build a config from (partial) JSON, rejecting unknown keys and wrong types."""
    config = _build(SandboxConfig, _merge(asdict(SandboxConfig()), data), "config")
    for service, limits in config.limits.items():
        known = _default_limits().get(service)
        if known is None or not set(limits) <= set(known):
            raise ValueError(f"unknown limits: {service} {sorted(limits)}")
    unknown = set(config.faults) - {"default", *SERVICES}
    if unknown:
        raise ValueError(f"unknown fault sections: {sorted(unknown)}")
    default = config.faults.get("default")
    if default is None or None in asdict(default).values():
        raise ValueError("faults.default needs every field set")
    if not 0 <= config.changes_per_tick <= MAX_CHANGES:
        raise ValueError(f"changes_per_tick must be between 0 and {MAX_CHANGES}")
    return config


def load(path: str | Path | None = None) -> SandboxConfig:
    """Defaults, overlaid with the JSON file at ``path`` when one is given."""
    return from_dict(json.loads(Path(path).read_text()) if path else {})


def _merge(base: Any, patch: Any) -> Any:
    if isinstance(base, dict) and isinstance(patch, dict):
        return {**base, **{k: _merge(base.get(k), v) for k, v in patch.items()}}
    return patch


def _build(kind: Any, value: Any, where: str) -> Any:
    """Turn plain JSON into ``kind`` (dataclass, dict[str, X], optional or scalar)."""
    origin = typing.get_origin(kind)
    if origin is types.UnionType:
        if value is None:
            return None
        kind = next(a for a in typing.get_args(kind) if a is not type(None))
        origin = typing.get_origin(kind)
    if is_dataclass(kind):
        if not isinstance(value, dict):
            raise ValueError(f"{where}: expected an object")
        hints = typing.get_type_hints(kind)
        unknown = set(value) - set(hints)
        if unknown:
            raise ValueError(f"{where}: unknown keys {sorted(unknown)}")
        try:
            return kind(**{k: _build(hints[k], v, f"{where}.{k}") for k, v in value.items()})
        except TypeError as exc:  # a required field is missing
            raise ValueError(f"{where}: {exc}") from None
    if origin is dict:
        if not isinstance(value, dict):
            raise ValueError(f"{where}: expected an object")
        item = typing.get_args(kind)[1]  # a null entry removes that key
        return {str(k): _build(item, v, f"{where}.{k}") for k, v in value.items() if v is not None}
    if origin is list:
        if not isinstance(value, list):
            raise ValueError(f"{where}: expected a list")
        item = typing.get_args(kind)[0]
        return [_build(item, v, f"{where}[{n}]") for n, v in enumerate(value)]
    if kind is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ValueError(f"{where}: expected {kind.__name__}, got {value!r}")
    return value

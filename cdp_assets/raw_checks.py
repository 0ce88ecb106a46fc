"""The two checks on every raw asset: was the source read to the end, and how long ago was it last read.

A pull whose source fails (its API down past the client's retries, refusing the credentials) still completes, so
that the run goes on with the other sources (`cdp_assets/raw.py`). These checks are what shows the failure: the
first at once, the second as the outage lasts. They stand in for a Dagster freshness policy, which Dagster 1.13
measures from the asset's last materialisation (`dagster/_core/definitions/freshness_evaluator.py`) and so would
call a source that has been down for a day fresh, its failed pulls being materialisations too.
"""

from __future__ import annotations

from datetime import datetime

from dagster import AssetCheckResult, AssetCheckSeverity, AssetCheckSpec, AssetKey

from cdp_assets import freshness
from cdp_assets.privacy.redact import redacted
from resources.http import CallRefused, ServiceConfigurationError, UnpageableAnswer

# The hourly path's windows, as the assets built by it are held to them.
WARN_HOURS = freshness.HOURLY.warn_window.to_timedelta().total_seconds() / 3600
FAIL_HOURS = freshness.HOURLY.fail_window.to_timedelta().total_seconds() / 3600

SOURCE_REACHABLE = (
    "Whether this pull read its source to the end. Passes when it did, also when nothing was new. Fails (error, "
    "not blocking) when the source failed part way: its API stayed down past the connector's retries, refused "
    "the credentials or the call itself (a 4xx), dropped the connection, or answered with a page the connector "
    "cannot page past (no object on it has a readable id: a bug of the source's, not an outage). The run goes on: "
    "staging keeps the source's last good records, and identity, profiles, views and syncs are built from them and "
    "from the other sources. What landed before the failure stays, with its cursor, so the next pull resumes there "
    "and nothing is lost or sent twice. Never warns. Do: read `failure` and `error` in the check's metadata; a "
    "refused credential names the variable to fix; an API that is down needs nothing but its recovery (check the "
    "vendor's status page), and the first run after it catches up; a refused call names what the API would not "
    "take; an unpageable answer stops every pull at the same page until the vendor fixes it: report it with the "
    "`error`."
)
# What stopped a pull, first match wins: (kind, what the failed check says). What to do differs by kind.
FAILURE_KINDS: tuple[tuple[type[Exception], str, str], ...] = (
    (UnpageableAnswer, "unpageable answer",
     "The source answered, but with a page the connector cannot page past (no object on it has a readable id): "
     "a bug of the source's to report to its vendor, not an outage. Every pull stops at that page until it is fixed."),
    (ServiceConfigurationError, "credentials refused",
     "The source refused the credentials: the `error` names the setting to fix."),
    (CallRefused, "call refused",
     "The source answered the call with an error about the call itself (a 4xx: a field or an API version it no "
     "longer serves, a permission the credential lacks), which asking again answers the same: not an outage. Fix "
     "the call or the permission from the `error` (the API's own words); every pull stops there until then."),
    (Exception, "unreachable",
     "The source could not be read to the end: its API stayed down past the connector's retries or dropped the "
     "connection. It needs nothing but its recovery; the first run after it catches up."),
)  # fmt: skip
SOURCE_FRESH = (
    f"Hours since the stream last landed records read from its source (a pull that finds nothing new counts). "
    f"Passes within {WARN_HOURS * 60:.0f} minutes. Warns past them and fails (error, not blocking) past "
    f"{FAIL_HOURS:.0f} hours: the source has been failing for more than one hourly run, or the pulls stopped. Do: "
    "see `source_reachable` on the same asset for the error; if that passes, look for runs that did not start "
    "(the schedules, the daemon)."
)


def error_text(failure: Exception) -> str:
    """The failure as it may be kept and shown: error texts can echo a reply holding personal data."""
    return redacted(f"{type(failure).__name__}: {failure}")


def failure_kind(failure: Exception) -> tuple[str, str]:
    """(kind, what the failed check says) of what stopped a pull."""
    return next((kind, said) for cls, kind, said in FAILURE_KINDS if isinstance(failure, cls))


def check_specs(key: AssetKey) -> list[AssetCheckSpec]:
    return [
        AssetCheckSpec("source_reachable", asset=key, description=SOURCE_REACHABLE),
        AssetCheckSpec("source_fresh", asset=key, description=SOURCE_FRESH),
    ]


def check_results(source: str, failure: Exception | None, last_read_at: datetime | None, now: datetime
                  ) -> list[AssetCheckResult]:  # fmt: skip
    """`failure` is what stopped the pull (None if it read to the end); `last_read_at` when a batch last landed."""
    reachable = {"source": source}
    said = None
    if failure is not None:
        reachable["failure"], said = failure_kind(failure)
        reachable["error"] = error_text(failure)
    hours = (now - last_read_at).total_seconds() / 3600 if last_read_at is not None else None
    fresh = {"hours_since_read": round(hours, 3) if hours is not None else "never read"}
    return [
        AssetCheckResult(
            check_name="source_reachable", passed=failure is None, severity=AssetCheckSeverity.ERROR,
            metadata=reachable, description=said,
        ),
        AssetCheckResult(
            check_name="source_fresh",
            passed=hours is not None and hours <= WARN_HOURS,
            severity=AssetCheckSeverity.WARN if hours is not None and hours <= FAIL_HOURS else AssetCheckSeverity.ERROR,
            metadata=fresh,
        ),
    ]

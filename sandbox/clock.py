"""Time units and the three ISO-8601 spellings the sandbox's APIs use.

Each source formats time its own way, and connectors must parse each one, so the
world renders them exactly: HubSpot with milliseconds and ``Z``, Zendesk whole
seconds with ``Z``, Klaviyo whole seconds with ``+00:00``.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

MINUTE = 60
HOUR = 3600
DAY = 86_400
WEEK = 7 * DAY
YEAR = 365 * DAY


def hubspot_time(ms: int) -> str:
    """HubSpot: ``2024-05-01T12:00:00.123Z``."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + f".{ms % 1000:03d}Z"


def zendesk_time(seconds: int) -> str:
    """Zendesk: ``2024-05-01T12:00:00Z``."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def klaviyo_time(seconds: int) -> str:
    """Klaviyo: ``2024-05-01T12:00:00+00:00``."""
    return time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(seconds))


def today_midnight() -> int:
    """Unix seconds of today's UTC midnight: the default anchor of a new world."""
    now = datetime.now(UTC)
    return int(datetime(now.year, now.month, now.day, tzinfo=UTC).timestamp())

"""Time units and the three ISO-8601 spellings the sandbox's APIs use.

Each source formats time its own way, and connectors must parse each one, so the
world renders them exactly: HubSpot with milliseconds and ``Z``, Zendesk whole
seconds with ``Z``, Klaviyo whole seconds with ``+00:00``.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from functools import cache, lru_cache

MINUTE = 60
HOUR = 3600
DAY = 86_400
WEEK = 7 * DAY
YEAR = 365 * DAY


def hubspot_time(ms: int) -> str:
    """HubSpot: ``2024-05-01T12:00:00.123Z``."""
    return f"{iso_seconds(ms // 1000)}.{ms % 1000:03d}Z"


def zendesk_time(seconds: int) -> str:
    """Zendesk: ``2024-05-01T12:00:00Z``."""
    return f"{iso_seconds(seconds)}Z"


def klaviyo_time(seconds: int) -> str:
    """Klaviyo: ``2024-05-01T12:00:00+00:00``."""
    return f"{iso_seconds(seconds)}+00:00"


def iso_seconds(seconds: int) -> str:
    """``2024-05-01T12:00:00`` in UTC, from cached dates and times of day: strftime is slow by the million."""
    day, rest = divmod(seconds, DAY)
    return f"{_date(day)}T{_time_of_day(rest)}"


@lru_cache(maxsize=8192)
def _date(day: int) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(day * DAY))


@cache  # at most the 86,400 seconds of a day
def _time_of_day(seconds: int) -> str:
    return f"{seconds // HOUR:02d}:{seconds // MINUTE % 60:02d}:{seconds % MINUTE:02d}"


def today_midnight() -> int:
    """Unix seconds of today's UTC midnight: the default anchor of a new world."""
    now = datetime.now(UTC)
    return int(datetime(now.year, now.month, now.day, tzinfo=UTC).timestamp())

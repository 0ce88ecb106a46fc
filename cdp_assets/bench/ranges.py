"""How much of its limit a full pull uses when every answer takes a while: one cursor against ranges side by side.

`python -m cdp_assets.bench.ranges --world data/bench/100000/world --latency-ms 150` serves a built world with each
answer held back by the latency (as a real API's answer time), at the documented limits, and pulls each stream below
in full for at most `--seconds`, walking each of `--widths` ranges at once in turn. It prints calls a second,
their share of the stream's limit and how many the service answered with 429 (each retried). On this machine the
sandbox is one process: with no latency it, not the client, bounds a pull at raised limits, which this measure
keeps apart.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from resources.klaviyo import KlaviyoResource
from resources.source import SourceResource
from resources.stripe import StripeResource
from sandbox.config import Credentials
from sandbox.runner import SandboxServer

# (source, stream, the limit in calls a second that a full pull of it is held to): Stripe's documented test-mode
# limit; for Klaviyo the sandbox's, Get Profiles' documented 750 a minute, which it applies to every Klaviyo route.
STREAMS: tuple[tuple[str, str, float], ...] = (("stripe", "customers", 25.0), ("klaviyo", "events", 750 / 60))


def connector(source: str, sandbox: SandboxServer, **fields: Any) -> SourceResource:
    """A connector of `source` (Stripe or Klaviyo) on the sandbox, with its credentials and any other `fields`."""
    credentials = Credentials()
    known = {"stripe": (StripeResource, credentials.stripe.api_key),
             "klaviyo": (KlaviyoResource, credentials.klaviyo.api_key)}  # fmt: skip
    if source not in known:
        raise ValueError(f"no ranged pull for {source!r}: one of {', '.join(known)}")
    kind, key = known[source]
    return kind(base_url=sandbox.base_urls[source], api_key=key, **fields)


def pull_rate(sandbox: SandboxServer, source: str, stream: str, width: int, seconds: float) -> tuple[float, int]:
    """Calls a second of a full pull of `stream` walking `width` ranges at once, over at most `seconds`; and the
    records it read."""
    pulling = connector(source, sandbox, ranges_at_once=width)
    started, records = time.monotonic(), 0
    pages = pulling.extract(pulling.streams[stream], None, True)
    for page in pages:
        records += len(page.records)
        if time.monotonic() - started > seconds:
            break
    pages.close()
    return pulling.stats.requests / (time.monotonic() - started), records


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cdp_assets.bench.ranges", description=__doc__)
    parser.add_argument("--world", type=Path, required=True, help="a built world (python -m sandbox build)")
    parser.add_argument("--latency-ms", type=float, default=150.0)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--widths", type=int, nargs="+", default=[1, 4, 8], help="ranges walked at once, in turn")
    args = parser.parse_args(argv)
    config = {"faults": {"default": {"latency_ms": args.latency_ms}}, "tick_seconds": 0}
    with SandboxServer(args.world, config) as sandbox:
        for source, stream, limit in STREAMS:
            for width in args.widths:
                sandbox.control("stats", "DELETE")
                rate, records = pull_rate(sandbox, source, stream, width, args.seconds)
                throttled = sandbox.control("stats")["services"][source]["throttled_429"]
                print(f"{source}.{stream}: {width} at once, {rate:.1f} calls/s ({rate / limit:.0%} of {limit:g}/s), "
                      f"{records} records, {throttled} answers of 429", flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""CLI: ``python -m sandbox build`` writes a world, ``python -m sandbox serve`` serves it."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import uvicorn

from sandbox.config import TOKEN_ENV, TOKEN_HEADER, load, new_token
from sandbox.faults import QuietDrops
from sandbox.server import create_app


class _ReadyServer(uvicorn.Server):
    """Announces the bound address once the socket listens (port 0 picks a free one)."""

    async def startup(self, sockets: list | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            host, port = self.servers[0].sockets[0].getsockname()[:2]
            print(f"sandbox ready on http://{host}:{port}", flush=True)


def build(args: argparse.Namespace) -> int:
    from sandbox.hardness import Hardness
    from sandbox.world import build_world  # the generator is optional for serving

    hardness = Hardness.from_dict(json.loads(Path(args.hardness).read_text())) if args.hardness else None
    counts = build_world(args.folder, people=args.people, seed=args.seed, anchor=args.anchor, hardness=hardness)
    for stream, count in counts.items():
        print(f"{stream}\t{count}")
    return 0


def serve(args: argparse.Namespace) -> int:
    config = load(args.config)
    if args.tick_seconds is not None:
        config.update({"tick_seconds": args.tick_seconds})
    token = os.environ.get(TOKEN_ENV)
    if not token:  # started by hand: the one who started it is told the token, as notebook servers do
        token = new_token()
        print(f"control routes (/_sandbox/*) take the header {TOKEN_HEADER}: {token}", flush=True)
    app = create_app(args.folder, config, token)
    server = _ReadyServer(uvicorn.Config(app, host=args.host, port=args.port, access_log=False, log_level="warning"))
    logging.getLogger("uvicorn.error").addFilter(QuietDrops())
    try:
        server.run()
    except KeyboardInterrupt:  # uvicorn has shut down cleanly and passes Ctrl-C on; it is how one stops it
        print("sandbox stopped", flush=True)
    return 0 if server.started else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sandbox", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    b = commands.add_parser("build", help="generate a synthetic world")
    b.add_argument("--folder", default="data/sandbox")
    b.add_argument("--people", type=int, default=5000)
    b.add_argument("--seed", type=int, default=7)
    b.add_argument("--anchor", type=int, default=None, help="unix seconds the world's history ends at")
    b.add_argument("--hardness", default=None,
                   help="JSON file of hard-case rates (sandbox/hardness.py); unset ones keep their defaults")
    b.set_defaults(func=build)
    s = commands.add_parser("serve", help="serve the five fake APIs over a world")
    s.add_argument("--folder", default="data/sandbox")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    s.add_argument("--port", type=int, default=8765)
    s.add_argument("--config", default=None, help="JSON file deep-merged over the defaults")
    s.add_argument("--tick-seconds", type=float, default=None, help="background churn period (0 = off)")
    s.set_defaults(func=serve)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())

"""`python -m sandbox --home DIR --port N --faults SPEC`: serve the vendor sandbox until killed."""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from pathlib import Path
from urllib.parse import urlsplit

from sandbox.server import SandboxServer
from shared.settings import Settings


def main(argv: list[str] | None = None) -> int:
    settings = Settings.from_env()
    default_port = urlsplit(settings.sandbox_url).port or 8086
    parser = argparse.ArgumentParser(prog="python -m sandbox", description=__doc__)
    parser.add_argument("--home", type=Path, default=settings.home, help="holds sandbox.db")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=default_port, help="0 picks a free port")
    parser.add_argument(
        "--faults",
        default="",
        help="e.g. 'jira.error=0.3,slack.rate_limit=0.2,*.latency_ms=50,seed=7,hang_s=5'",
    )
    parser.add_argument("--verbose", action="store_true", help="log every request")
    args = parser.parse_args(argv)

    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        server = SandboxServer(args.home, faults=args.faults, host=args.host, port=args.port)
    except ValueError as exc:
        parser.error(str(exc))
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What the benchmarks share: the dev stack's command, free ports, waiting for a server,
requests, percentiles."""

from __future__ import annotations

import socket
import sys
import time
from pathlib import Path

import requests

from shared.keys import local_credential


def chimera_dev(port: int, *options: str) -> list[str]:
    """The command line of a quiet `chimera dev` on `port`, with further options."""
    return [sys.executable, "-m", "chimera.cli", "-q", "dev", "--port", str(port), *options]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url: str, timeout: float = 30) -> None:
    """Until something answers at `url` (any status), or exit with the reason."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            requests.get(url, timeout=1)
            return
        except requests.ConnectionError:
            time.sleep(0.05)
    raise SystemExit(f"nothing answers at {url}")


def signed_in(home: str | Path) -> requests.Session:
    """A session that sends the CLI's own credential, which `chimera dev` on `home` accepts."""
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {local_credential(Path(home))}"
    return session


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def onboarding(i: int, tag: str, who: str = "Bench") -> dict[str, str]:
    """The i-th client of a benchmark; `tag` keeps request ids apart between runs."""
    slug = who.lower()
    return {
        "company_name": f"{who} Client {i}",
        "domain": f"{slug}{i}.example",
        "contact_email": f"owner@{slug}{i}.example",
        "contact_name": "Margaret Hamilton",
        "goal": f"Survive the {slug} benchmark",
        "request_id": f"{tag}-{i}",
    }

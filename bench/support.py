"""What the benchmarks share: the dev stack's command, free ports, waiting for a server,
requests, percentiles."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import requests

from shared.keys import local_credential

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"


def chimera_dev(port: int, *options: str) -> list[str]:
    """The command line of a quiet `chimera dev` on `port`, with further options."""
    return [sys.executable, "-m", "chimera.cli", "-q", "dev", "--port", str(port), *options]


def start_sandbox(
    home: str | Path, faults: str = "", env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[bytes], str]:
    """The vendor sandbox as its own process on a free port (vendors do not die when the
    stack does), with `faults` (sandbox/faults.py's spec); the process and its URL, once it
    answers."""
    port = free_port()
    command = [sys.executable, "-m", "sandbox", "--home", str(home), "--port", str(port)]
    process = subprocess.Popen(
        command + (["--faults", faults] if faults else []),
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    wait_for(f"{url}/")
    return process, url


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


def save_results(name: str, results: Any) -> Path:
    """Write `results` as bench/results/<name>-<time>.json; the path, as printed."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(results, indent=2, default=str))
    print(f"(results: {path.relative_to(ROOT)})")
    return path


class Table:
    """A plain text table for a benchmark's summary: a title, a header, aligned rows."""

    def __init__(self, title: str, header: list[str]) -> None:
        self.title = title
        self.rows = [header]

    def row(self, *cells: object) -> None:
        self.rows.append([str(c) for c in cells])

    def print(self) -> None:
        widths = [max(len(r[i]) for r in self.rows) for i in range(len(self.rows[0]))]
        print(f"\n{self.title}")
        for n, row in enumerate(self.rows):
            print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
            if n == 0:
                print("  ".join("-" * w for w in widths))

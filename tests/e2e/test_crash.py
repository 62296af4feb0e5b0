"""kill -9 of `chimera dev` with runs in flight: after a restart every run completes, and
every side effect happened exactly once."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from sandbox.effects import side_effects
from shared.keys import local_credential
from tests.e2e.conftest import ONE_ONBOARDING, body

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
RUNS = 12


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class DevStack:
    """`chimera dev` as a separate process, as an operator runs it."""

    def __init__(self, home: Path, *extra: str) -> None:
        self.home = home
        self.port, self.sandbox_port = _free_port(), _free_port()
        self.extra = extra
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> DevStack:
        env = {**os.environ, "CHIMERA_HOME": str(self.home), "CHIMERA_LOCAL_BACKOFF_SCALE": "0.1"}
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "chimera.cli",
                "-q",
                "dev",
                "--port",
                str(self.port),
                "--sandbox-port",
                str(self.sandbox_port),
                *self.extra,
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        end = time.monotonic() + 30
        while time.monotonic() < end:
            try:
                requests.get(f"{self.url}/runs", timeout=1)
                return self
            except requests.ConnectionError:
                time.sleep(0.1)
        raise AssertionError("chimera dev did not come up")

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()

    @property
    def auth(self) -> dict[str, str]:
        """The CLI's own credential, which `chimera dev` accepts (made by whoever is first)."""
        return {"Authorization": f"Bearer {local_credential(self.home)}"}

    def statuses(self, run_ids: list[str]) -> dict[str, str]:
        return {
            r: requests.get(f"{self.url}/runs/{r}", headers=self.auth, timeout=5).json()["status"]
            for r in run_ids
        }


@pytest.fixture
def dev(tmp_path):
    stacks: list[DevStack] = []

    def start(*extra: str) -> DevStack:
        stack = DevStack(tmp_path / "home", *extra).start()
        stacks.append(stack)
        return stack

    yield start
    for stack in stacks:
        stack.stop()


def test_every_run_completes_once_when_the_stack_is_killed_mid_run(dev, tmp_path):
    # Slow vendors keep the runs in flight when the kill comes.
    first = dev("--faults", "*.latency_ms=300")
    answers = [
        requests.post(f"{first.url}/runs", json=body(i), headers=first.auth, timeout=10)
        for i in range(RUNS)
    ]
    assert {a.status_code for a in answers} == {202}
    run_ids = [a.json()["run_id"] for a in answers]
    queue = sqlite3.connect(tmp_path / "home" / "chimera.db", timeout=10)
    in_flight = "SELECT COUNT(*) FROM tasks WHERE state = 'leased'"
    end = time.monotonic() + 10
    while queue.execute(in_flight).fetchone()[0] < 3 and time.monotonic() < end:
        time.sleep(0.02)
    first.kill()
    # Deliveries cut off mid-call: their leases belong to a dispatcher that no longer exists.
    assert queue.execute(in_flight).fetchone()[0] >= 1

    restarted = dev()  # same home; the queued tasks and the vendors' state are on disk
    before = restarted.statuses(run_ids)
    assert any(s != "succeeded" for s in before.values()), "the kill came after every run"

    end = time.monotonic() + 120
    while (statuses := restarted.statuses(run_ids)) and any(
        s not in ("succeeded", "parked") for s in statuses.values()
    ):
        assert time.monotonic() < end, f"runs stuck after the restart: {statuses}"
        time.sleep(0.25)
    assert set(statuses.values()) == {"succeeded"}, statuses
    effects = side_effects(tmp_path / "home")
    assert {r: effects.get(r) for r in run_ids} == {r: ONE_ONBOARDING for r in run_ids}

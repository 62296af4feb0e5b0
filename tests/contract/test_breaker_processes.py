"""A breaker opened by one process is open for another: its state lives in the store."""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path

import pytest

from shared.breaker import BreakerPolicy, CircuitBreaker
from shared.errors import CircuitOpen, VendorTimeout
from shared.sqlite_db import SqliteDatabase
from shared.sqlite_state import SqliteStateStore

# Opens on three failures in a row; one probe decides. The cool-down is long enough for a
# spawned process to exit on a loaded machine before this one looks.
COOLDOWN = 5.0
POLICY = BreakerPolicy(
    failure_rate=1.0,
    window=3,
    minimum_calls=3,
    half_open_calls=1,
    cooldown=COOLDOWN,
    probe_timeout=5,
)


def _breaker(path: str) -> CircuitBreaker:
    return CircuitBreaker(SqliteStateStore(SqliteDatabase(Path(path))), "jira", POLICY)


def _fail_three_times(path: str) -> None:
    breaker = _breaker(path)
    for _ in range(3):
        try:
            with breaker.guard():
                raise VendorTimeout("slow")
        except VendorTimeout:
            pass


def _probe_and_succeed(path: str, result) -> None:  # noqa: ANN001
    breaker = _breaker(path)
    try:
        with breaker.guard():
            pass
        result.put("probed")
    except CircuitOpen:
        result.put("open")


def _run(target, *args) -> None:  # noqa: ANN001
    process = multiprocessing.get_context("spawn").Process(target=target, args=args)
    process.start()
    process.join(30)
    assert process.exitcode == 0


def test_breaker_opens_and_closes_across_two_processes(tmp_path):
    path = str(tmp_path / "state.db")
    _run(_fail_three_times, path)
    with pytest.raises(CircuitOpen):
        _breaker(path).before_call()  # this process never saw a failure itself

    time.sleep(COOLDOWN + 0.1)
    result = multiprocessing.get_context("spawn").Queue()
    _run(_probe_and_succeed, path, result)
    assert result.get(timeout=5) == "probed"
    with _breaker(path).guard():  # closed again, here too
        pass

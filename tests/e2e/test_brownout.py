"""Brownouts on the embedded stack: a flaky vendor slows runs without stalling them, a dead one
is shed. Judged from the sandbox's own records."""

from __future__ import annotations

import logging
import statistics
import time
from collections import Counter
from datetime import UTC, datetime

import pytest

from sandbox.effects import side_effects
from sandbox.records import RecordStore
from shared.breaker import transitions
from shared.model import RunStatus
from shared.queues import QUEUES, tool_queue
from shared.settings import Settings
from tests.e2e.conftest import ONE_ONBOARDING, body, submit, wait_until_settled

pytestmark = pytest.mark.slow

JIRA_QUEUE = QUEUES[tool_queue("jira")]


def _changes(name: str) -> Counter[str]:
    return Counter({to: n for (vendor, to), n in transitions.items() if vendor == name})


def test_fifty_runs_all_succeed_once_each_when_jira_fails_forty_percent(start_stack, tmp_path):
    home = tmp_path / "home"
    before = _changes("jira")
    # The breaker's settings are the defaults: what is measured is what ships.
    stack = start_stack("jira.error=0.4,seed=11", local_backoff_scale=0.01)
    run_ids = [submit(stack, body(i))[1]["run_id"] for i in range(50)]
    runs = wait_until_settled(stack, run_ids, timeout=120)

    assert {r.status for r in runs.values()} == {RunStatus.SUCCEEDED}
    effects = side_effects(home)
    assert all(effects[r] == ONE_ONBOARDING for r in run_ids)  # each side effect once
    jira_calls = RecordStore(home).list(vendor="jira")
    failed = [r for r in jira_calls if r["fault"] == "error"]
    assert 0.3 < len(failed) / len(jira_calls) < 0.5, "the sandbox did not fail 40% of calls"
    # Slowed, never stalled: the breaker stayed closed, no call was shed.
    assert _changes("jira") == before
    assert stack.runtime.store.breaker("jira").version == 0
    shed = [
        e
        for r in run_ids
        for e in stack.runtime.store.events(r)
        if e.kind == "step.retry" and e.detail["code"] == "circuit_open"
    ]
    assert shed == []
    attempts = [run.steps["jira"].attempts for run in runs.values()]
    assert max(attempts) < JIRA_QUEUE.max_attempts
    logging.getLogger(__name__).warning(
        "jira attempts per step: mean %.2f, max %d; %d calls, %d failed",
        statistics.mean(attempts),
        max(attempts),
        len(jira_calls),
        len(failed),
    )


def test_a_dead_vendor_opens_the_breaker_and_is_not_called_while_open(
    start_stack, tmp_path, caplog
):
    home = tmp_path / "home"
    defaults = Settings()
    before = _changes("jira")
    caplog.set_level(logging.WARNING, logger="shared.breaker")
    # Jira answers nothing but 5xx; a short cool-down to see it open, probe and open again.
    stack = start_stack("jira.error=1,seed=3", local_backoff_scale=0.01, breaker_cooldown=2.0)
    run_ids = [submit(stack, body(i))[1]["run_id"] for i in range(20)]
    end = time.monotonic() + 60
    while _changes("jira")["open"] - before["open"] < 2:
        assert time.monotonic() < end, "a dead Jira did not open its breaker twice in 60 s"
        time.sleep(0.05)
    time.sleep(0.5)  # some shedding after the second opening

    changes = [
        (datetime.fromtimestamp(r.created, UTC), r.getMessage())
        for r in caplog.records
        if r.name == "shared.breaker" and r.getMessage().startswith("circuit jira:")
    ]
    kinds = ["half-open" if "half-open" in m else m.split()[2].rstrip(",") for _, m in changes]
    assert kinds[:3] == ["open", "half-open", "open"], changes
    opened = [at for (at, _), kind in zip(changes, kinds, strict=True) if kind == "open"]
    probing = [at for (at, _), kind in zip(changes, kinds, strict=True) if kind == "half-open"]
    until = datetime.now(UTC)
    open_periods = list(zip(opened, [*probing, until][: len(opened)], strict=True))
    calls = [datetime.fromisoformat(r["at"]) for r in RecordStore(home).list(vendor="jira")]
    # It opened once the window held the minimum number of calls (plus those in flight).
    assert len([at for at in calls if at < opened[0]]) <= (
        defaults.breaker_minimum_calls + JIRA_QUEUE.max_concurrent_dispatches
    )
    # While open, only calls already in flight when it opened reached Jira.
    for start, end_ in open_periods:
        reached = [at for at in calls if start <= at < end_]
        assert len(reached) <= JIRA_QUEUE.max_concurrent_dispatches, (start, end_, reached)
    # Between the two openings, the probes: at most those one instance admits.
    probes = [at for at in calls if probing[0] <= at < opened[1]]
    assert 1 <= len(probes) <= defaults.breaker_half_open_calls

    store_events = [e for r in run_ids for e in stack.runtime.store.events(r)]
    shed = [
        e for e in store_events if e.kind == "step.retry" and e.detail["code"] == "circuit_open"
    ]
    assert shed, "no delivery was shed"
    assert not any(r.status is RunStatus.SUCCEEDED for r in stack.runtime.store.list_runs())
    logging.getLogger(__name__).warning(
        "dead jira: %d calls before it opened, %s reached it while open, %d probes, %d shed",
        len([at for at in calls if at < opened[0]]),
        [len([at for at in calls if start <= at < end_]) for start, end_ in open_periods],
        len(probes),
        len(shed),
    )

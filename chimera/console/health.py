"""The health page's numbers, from what the store already keeps: the step summaries of runs
changed in a recent window and their `step.retry` events (no write of its own), each vendor's
breaker, and each queue's depth. It counts tool attempts, not HTTP requests: one attempt may
make several requests, and verifications are not counted."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from shared.history import RETRY
from shared.model import RunState, StepStatus
from shared.registry import TOOLS
from shared.runtime import Runtime
from shared.task_queue import QueueStats, queue_stats

WINDOW = timedelta(minutes=15)
# Runs read for one page at most: the newest changes first.
RUNS_READ = 500
FINISHED = frozenset({StepStatus.SUCCEEDED, StepStatus.FAILED})


@dataclass(frozen=True)
class Attempt:
    vendor: str
    at: datetime  # when it ended
    ok: bool
    latency_ms: float | None


@dataclass(frozen=True)
class VendorHealth:
    vendor: str
    attempts: int
    failures: int
    per_minute: float
    error_rate: float | None  # None without attempts
    p50_ms: float | None
    p99_ms: float | None
    breaker: str


@dataclass(frozen=True)
class Health:
    window: timedelta
    runs_read: int
    vendors: list[VendorHealth]
    queues: list[QueueStats]  # empty: the queue cannot tell


def percentile(values: list[float], p: float) -> float | None:
    """The nearest-rank percentile `p` (0-100) of `values`; None when there are none."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def _vendor(tool: str) -> str:
    spec = TOOLS.get(tool)
    return spec.vendor if spec is not None else tool


def _final_attempts(runs: Iterable[RunState], since: datetime) -> list[Attempt]:
    """Each step's last attempt that ended in the window (from its summary)."""
    found = []
    for run in runs:
        for step in run.steps.values():
            ended = step.finished_at
            if step.status in FINISHED and ended is not None and ended >= since:
                found.append(
                    Attempt(
                        _vendor(step.tool),
                        ended,
                        step.status is StepStatus.SUCCEEDED,
                        step.latency_ms,
                    )
                )
    return found


def _retried(run: RunState) -> bool:
    """Whether the run may hold retries: a step that took several attempts, or is still out."""
    return any(s.attempts > 1 or s.status is StepStatus.DISPATCHED for s in run.steps.values())


def _failed_attempts(rt: Runtime, runs: Iterable[RunState], since: datetime) -> list[Attempt]:
    """Each retried attempt that ended in the window (from its `step.retry` event)."""
    found = []
    for run in runs:
        if not _retried(run):
            continue
        for event in rt.store.events(run.run_id):
            if event.kind != RETRY or event.at < since or event.step_id not in run.steps:
                continue
            started = event.detail.get("started_at")
            latency = None
            if isinstance(started, str):
                try:
                    begun = datetime.fromisoformat(started)
                    latency = (event.at - begun).total_seconds() * 1000
                except ValueError:
                    latency = None
            found.append(Attempt(_vendor(run.steps[event.step_id].tool), event.at, False, latency))
    return found


def health(rt: Runtime, now: datetime, window: timedelta = WINDOW) -> Health:
    since = now - window
    runs = rt.store.recent_runs(since, RUNS_READ)
    attempts = _final_attempts(runs, since) + _failed_attempts(rt, runs, since)
    minutes = window.total_seconds() / 60
    vendors = []
    for vendor in sorted({spec.vendor for spec in TOOLS.values()}):
        mine = [a for a in attempts if a.vendor == vendor]
        failures = sum(not a.ok for a in mine)
        latencies = [a.latency_ms for a in mine if a.latency_ms is not None]
        vendors.append(
            VendorHealth(
                vendor=vendor,
                attempts=len(mine),
                failures=failures,
                per_minute=len(mine) / minutes,
                error_rate=failures / len(mine) if mine else None,
                p50_ms=percentile(latencies, 50),
                p99_ms=percentile(latencies, 99),
                breaker=rt.store.breaker(vendor).state,
            )
        )
    return Health(window, len(runs), vendors, queue_stats(rt.queue))

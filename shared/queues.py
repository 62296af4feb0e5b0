"""The queues between the functions, with Cloud Tasks' retry and rate settings.

The Terraform in terraform/queues.tf mirrors these numbers; a test keeps the two in step.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass

ORCHESTRATOR_QUEUE = "orchestrator"


@dataclass(frozen=True)
class QueueConfig:
    name: str
    # The function that serves this queue's tasks (Cloud Functions name, local target).
    target: str
    max_attempts: int
    min_backoff: float
    max_backoff: float
    max_doublings: int
    max_dispatches_per_second: float
    max_concurrent_dispatches: int

    def backoff(self, retry_count: int) -> float:
        """Cloud Tasks' schedule: double min_backoff max_doublings times, then add linearly."""
        if retry_count <= 0:
            return self.min_backoff
        doublings = min(retry_count - 1, self.max_doublings)
        delay = self.min_backoff * (2**doublings)
        linear_steps = retry_count - 1 - doublings
        if linear_steps > 0:
            delay += linear_steps * self.min_backoff * (2**self.max_doublings)
        return min(delay, self.max_backoff)

    def scaled(self, factor: float) -> QueueConfig:
        """The same queue with its backoffs times `factor` (the local queue, in tests)."""
        return dataclasses.replace(
            self, min_backoff=self.min_backoff * factor, max_backoff=self.max_backoff * factor
        )

    def unlimited(self) -> QueueConfig:
        """The same queue without a dispatch rate (its concurrency limit stays)."""
        return dataclasses.replace(self, max_dispatches_per_second=math.inf)

    def retry_window(self, dispatch_deadline: float) -> float:
        """The longest a task can live: every attempt's deadline plus every backoff."""
        backoffs = _total_backoff(self)
        return backoffs + self.max_attempts * dispatch_deadline


def tool_queue(function: str) -> str:
    return f"tool-{function}"


QUEUES: dict[str, QueueConfig] = {
    q.name: q
    for q in (
        # Decisions are cheap and idempotent: retry fast, many at once.
        QueueConfig(ORCHESTRATOR_QUEUE, "orchestrator", 100, 0.1, 10, 4, 500, 100),
        # Tools: 40 attempts over about 35 minutes (1, 2, 4 ... 32 s, then every 60 s), so a
        # flaky vendor or an open circuit's cool-downs do not park a run; a longer outage does.
        # Sized for a vendor failing 40% of its requests: a Jira attempt that needs three
        # requests succeeds 22% of the time, and 39 failures in a row have odds of 1 in 10,000
        # (with 25 attempts, 1 in 400: a batch of 50 such runs would often park one).
        QueueConfig(tool_queue("clearbit"), "tool-clearbit", 40, 1, 60, 5, 50, 20),
        QueueConfig(tool_queue("jira"), "tool-jira", 40, 1, 60, 5, 10, 10),
        QueueConfig(tool_queue("sendgrid"), "tool-sendgrid", 40, 1, 60, 5, 50, 20),
        # Slack allows about one message per second per channel; its 429s carry Retry-After.
        QueueConfig(tool_queue("slack"), "tool-slack", 40, 1, 60, 5, 20, 10),
    )
}


@functools.lru_cache(maxsize=64)
def _total_backoff(config: QueueConfig) -> float:
    # Asked for each watchdog a dispatch schedules: the sum of up to 100 backoffs, once.
    return sum(config.backoff(n) for n in range(1, config.max_attempts))

"""What a person watching a retrying step wants to know: which attempt failed out of how many,
when the next one comes, and when the step gives up and parks the run.

Written into each `step.retry` event by the tool endpoint, from the queue's own schedule, and
read back by the live views (the CLI and the console). Times are the earliest the queue can
keep: a vendor's Retry-After or a slow attempt moves them later, never earlier.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from shared.queues import QueueConfig


@dataclass(frozen=True)
class RetryOutlook:
    attempt: int  # the attempt that failed, counted from 1
    max_attempts: int
    next_attempt_at: datetime
    gives_up_at: datetime  # when the last attempt fails, if every one fails at once

    @classmethod
    def after_failure(
        cls,
        config: QueueConfig,
        attempt: int,
        now: datetime,
        retry_after: float | None = None,
    ) -> RetryOutlook:
        """The schedule after attempt number `attempt` failed at `now` on `config`'s queue
        (Cloud Tasks' backoff, or the answer's Retry-After when it is longer)."""
        first = max(config.backoff(attempt), retry_after or 0.0)
        later = sum(config.backoff(n) for n in range(attempt + 1, config.max_attempts))
        return cls(
            attempt=attempt,
            max_attempts=config.max_attempts,
            next_attempt_at=now + timedelta(seconds=first),
            gives_up_at=now + timedelta(seconds=first + later),
        )

    def detail(self) -> dict[str, Any]:
        """The fields a `step.retry` event carries."""
        return {
            "attempt": self.attempt,
            "max_attempts": self.max_attempts,
            "next_attempt_at": self.next_attempt_at.isoformat(),
            "gives_up_at": self.gives_up_at.isoformat(),
        }

    @classmethod
    def from_detail(cls, detail: dict[str, Any]) -> RetryOutlook | None:
        """The outlook a `step.retry` event recorded; None for events written before it."""
        try:
            return cls(
                attempt=int(detail["attempt"]),
                max_attempts=int(detail["max_attempts"]),
                next_attempt_at=datetime.fromisoformat(detail["next_attempt_at"]),
                gives_up_at=datetime.fromisoformat(detail["gives_up_at"]),
            )
        except (KeyError, TypeError, ValueError):
            return None

    def says(self, now: datetime) -> str:
        """One line for a live view: `attempt 3/40 failed; next in 4 s; parks at 14:05:31 UTC`."""
        wait = max(0.0, (self.next_attempt_at - now).total_seconds())
        nxt = "next attempt now" if wait < 0.5 else f"next attempt in {_span(wait)}"
        left = self.max_attempts - self.attempt
        parks = f"gives up and parks the run at {self.gives_up_at:%H:%M:%S} UTC at the earliest"
        return f"attempt {self.attempt}/{self.max_attempts} failed; {nxt}; {left} left; {parks}"


def _span(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"

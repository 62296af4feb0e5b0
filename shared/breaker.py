"""Circuit breakers per vendor, their state shared by every instance through the StateStore.

Why not pybreaker: its CircuitBreaker.call holds one process-wide lock for the whole vendor
call, so during a brownout every call to that vendor in an instance waits in line behind a
45-second one. See docs/decisions/0004-circuit-breakers.md.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta

from shared.errors import CircuitOpen, PermanentError, RateLimited, RetryableError
from shared.model import BreakerState, utcnow
from shared.state import StateStore

log = logging.getLogger(__name__)
CAS_TRIES = 5


@dataclass(frozen=True)
class BreakerPolicy:
    failure_threshold: int = 5  # consecutive failures or timeouts that open it
    cooldown: float = 30.0  # seconds open before one probe may try
    probe_timeout: float = 90.0  # a probe silent this long is presumed dead


class CircuitBreaker:
    """closed -> (threshold failures) -> open -> (cool-down) -> half_open: one probe ->
    closed on success, open again on failure. While open, calls fail at once with
    CircuitOpen (retryable, with the time left), so no thread waits on a sick vendor."""

    def __init__(
        self,
        store: StateStore,
        name: str,
        policy: BreakerPolicy,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.store = store
        self.name = name
        self.policy = policy
        self.clock = clock

    @contextmanager
    def guard(self) -> Iterator[None]:
        self.before_call()
        try:
            yield
        except RetryableError as exc:
            if isinstance(exc, RateLimited):
                self.on_success()  # alive, asking us to slow down: the queue waits as asked
            else:
                self.on_failure()
            raise
        except PermanentError:
            self.on_success()  # it answered, if only to say no
            raise
        self.on_success()

    def before_call(self) -> None:
        state = self.store.breaker(self.name)
        if state.state == "closed":
            return
        now = self.clock()
        if state.state == "open":
            assert state.opened_at is not None
            left = (state.opened_at - now).total_seconds() + self.policy.cooldown
            if left > 0:
                raise CircuitOpen(f"{self.name} circuit open", retry_after=left)
        elif state.probe_until and now < state.probe_until:
            raise CircuitOpen(
                f"{self.name} circuit half-open, a probe is out",
                retry_after=min(self.policy.cooldown, (state.probe_until - now).total_seconds()),
            )
        probe = state.model_copy(
            update={
                "state": "half_open",
                "probe_until": now + timedelta(seconds=self.policy.probe_timeout),
            }
        )
        if not self.store.save_breaker(probe, expected_version=state.version):
            raise CircuitOpen(
                f"{self.name} circuit half-open, another probe won",
                retry_after=self.policy.cooldown,
            )
        log.warning("circuit %s: half-open, probing", self.name)

    def on_success(self) -> None:
        self._change(
            lambda s: None if s.state == "closed" and not s.failures else BreakerState(name=s.name)
        )

    def on_failure(self) -> None:
        def fail(s: BreakerState) -> BreakerState:
            failures = s.failures + 1
            if s.state == "half_open" or failures >= self.policy.failure_threshold:
                if s.state != "open":
                    log.error("circuit %s: open after %d failures", self.name, failures)
                return s.model_copy(
                    update={
                        "state": "open",
                        "failures": failures,
                        "opened_at": self.clock(),
                        "probe_until": None,
                    }
                )
            return s.model_copy(update={"failures": failures})

        self._change(fail)

    def _change(self, change: Callable[[BreakerState], BreakerState | None]) -> None:
        for _ in range(CAS_TRIES):
            state = self.store.breaker(self.name)
            new = change(state)
            if new is None or self.store.save_breaker(new, expected_version=state.version):
                return
        log.warning("circuit %s: gave up recording after %d races", self.name, CAS_TRIES)


class ConcurrencyLimit:
    """At most `limit` calls to one vendor at once in this instance; the rest are told to
    come back later instead of queueing threads behind a slow vendor."""

    def __init__(self, limit: int) -> None:
        self._slots = threading.BoundedSemaphore(limit)
        self.limit = limit

    @contextmanager
    def slot(self, vendor: str) -> Iterator[None]:
        if not self._slots.acquire(blocking=False):
            raise RetryableError(
                f"{self.limit} calls to {vendor} already in flight here", code="busy", retry_after=1
            )
        try:
            yield
        finally:
            self._slots.release()

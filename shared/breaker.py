"""Circuit breakers per vendor: each instance counts its own calls, and every instance shares
the decision (closed, open, half-open) through the StateStore.

Why not pybreaker: its CircuitBreaker.call holds one process-wide lock for the whole vendor
call, so during a brownout every call to that vendor in an instance waits in line behind a
45-second one. See docs/decisions/0004-circuit-breakers.md.
"""

from __future__ import annotations

import itertools
import logging
import threading
import weakref
from collections import Counter, deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime

from shared import metrics
from shared.errors import (
    ChimeraError,
    CircuitOpen,
    RetryableError,
)
from shared.model import BreakerState, utcnow
from shared.settings import Settings
from shared.state import StateStore
from shared.vendor_requests import FAILURES, NOT_THE_VENDOR, Tally, counting_into

log = logging.getLogger(__name__)

# State changes this instance wrote, per (vendor, new state): for metrics to export. Summed
# over instances it is the fleet's number of changes, since each change is written once.
transitions: Counter[tuple[str, str]] = Counter()
_transitions_lock = threading.Lock()


@dataclass(frozen=True)
class BreakerPolicy:
    failure_rate: float = 0.6  # share of failed vendor requests in the window that opens it
    window: int = 100  # this instance's last this many calls
    minimum_calls: int = 50  # calls in the window before its rate counts
    half_open_calls: int = 10  # probes each instance admits while half-open
    cooldown: float = 30.0  # seconds open before probes may try
    probe_timeout: float = 60.0  # a probe silent this long is presumed lost, its slot freed
    state_cache: float = 2.0  # seconds an instance trusts its last read of the shared state

    @classmethod
    def from_settings(cls, settings: Settings) -> BreakerPolicy:
        return cls(
            failure_rate=settings.breaker_failure_rate,
            window=settings.breaker_window,
            minimum_calls=settings.breaker_minimum_calls,
            half_open_calls=settings.breaker_half_open_calls,
            cooldown=settings.breaker_cooldown,
            # A delivery is over by its deadline: the queue has moved on from it.
            probe_timeout=settings.dispatch_deadline,
            state_cache=settings.breaker_state_cache,
        )


@dataclass(frozen=True)
class Admission:
    """A call let through: under which shared state (generation), and whether as a probe."""

    generation: int
    ticket: int
    probe: bool


class CircuitBreaker:
    """closed -> (failure rate over the window, after the minimum calls) -> open ->
    (cool-down) -> half_open: each instance admits a few probes -> closed when their failure
    rate is under the threshold, open again otherwise.

    Outcomes are counted in this instance's memory; the store is written only when the state
    changes (compare-and-set, so one instance wins each change) and read at most once per
    `state_cache` seconds. While open, calls fail at once with CircuitOpen (retryable, with
    the cool-down left), so no thread waits on a sick vendor. A call admitted under one state
    that finishes under another (in flight when it opened) is not counted.
    """

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
        self._lock = threading.Lock()  # guards what follows; never held over I/O
        self._shared = BreakerState(name=name)  # the shared state, as last read or written
        self._read_at: datetime | None = None
        self._generation = 0  # bumped whenever a new shared state is adopted
        self._tickets = itertools.count()
        self._changing = False  # one of this instance's threads is writing a change
        self._outcomes: deque[bool] = deque()  # closed: the window, True for a failure
        self._failures = 0
        self._probes_out: dict[int, datetime] = {}  # half-open: ticket -> admitted at
        self._probe_calls = 0
        self._probe_failures = 0

    @property
    def state(self) -> BreakerState:
        """The shared state as this instance last saw it."""
        return self._shared

    @contextmanager
    def guard(self) -> Iterator[None]:
        admission = self.before_call()
        try:
            with counting_into(self, admission) as tally:
                yield
        except FAILURES:
            self.finish(admission, tally, failed=True)
            raise
        except NOT_THE_VENDOR:
            self.release(admission)
            raise
        except ChimeraError:
            self.finish(admission, tally, failed=False)  # it answered, if only to say no
            raise
        except BaseException:
            self.release(admission)  # our bug, not the vendor's answer
            raise
        self.finish(admission, tally, failed=False)

    def count_request(self, admission: Admission, tally: Tally, *, failed: bool) -> None:
        """One vendor request of an admitted call: in the window at once (a probe's requests
        are weighed when the probe finishes)."""
        tally.requests += 1
        tally.failures += failed
        if not admission.probe:
            self.record(admission, failed=failed)

    def finish(self, admission: Admission, tally: Tally, *, failed: bool) -> None:
        """An admitted call is over. Its requests were counted one by one; a call that
        counted none (a client that does not wrap its requests) counts as one. A probe counts
        as failed when its own requests failed at the breaker's rate."""
        if tally.requests and not admission.probe:
            return
        if tally.requests:
            failed = tally.failures / tally.requests >= self.policy.failure_rate
        self.record(admission, failed=failed)

    def before_call(self) -> Admission:
        """Let a call through, or raise CircuitOpen with how long to wait."""
        self._refresh()
        for _ in range(2):  # at most one change (open -> half-open) on the way
            with self._lock:
                now = self.clock()
                state = self._shared
                if state.state == "closed":
                    return Admission(self._generation, next(self._tickets), probe=False)
                if state.state == "half_open":
                    return self._admit_probe(now)
                left = self._cooldown_left(state, now)
                if left > 0 or self._changing:  # changing: another thread is starting probes
                    raise CircuitOpen(
                        f"{self.name} circuit open", retry_after=left if left > 0 else 1.0
                    )
                self._changing = True
            self._write(state, state.model_copy(update={"state": "half_open"}))
        raise CircuitOpen(f"{self.name} circuit changing", retry_after=1.0)

    def record(self, admission: Admission, *, failed: bool) -> None:
        """Count a call's outcome; change the shared state when the count says so."""
        with self._lock:
            if admission.generation != self._generation:
                return  # admitted under a state that has changed since
            state = self._shared
            if admission.probe:
                self._probes_out.pop(admission.ticket, None)
                self._probe_calls += 1
                self._probe_failures += failed
                new = self._probe_verdict(state)
            else:
                new = self._count(state, failed)
            if new is None or self._changing:
                return
            self._changing = True
        self._write(state, new)

    def release(self, admission: Admission) -> None:
        """Forget a call that got no answer from the vendor: it frees its probe slot."""
        with self._lock:
            if admission.generation == self._generation:
                self._probes_out.pop(admission.ticket, None)

    # -- with the lock held --

    def _admit_probe(self, now: datetime) -> Admission:
        timeout = self.policy.probe_timeout
        for ticket, at in list(self._probes_out.items()):
            if (now - at).total_seconds() >= timeout:
                del self._probes_out[ticket]  # presumed lost: its slot goes to another call
        if len(self._probes_out) + self._probe_calls < self.policy.half_open_calls:
            ticket = next(self._tickets)
            self._probes_out[ticket] = now
            return Admission(self._generation, ticket, probe=True)
        # The probes are due back by their timeout; all back means a verdict is being written.
        oldest = min(self._probes_out.values(), default=None)
        wait = timeout - (now - oldest).total_seconds() if oldest else 1.0
        raise CircuitOpen(
            f"{self.name} circuit half-open, its probes are out",
            retry_after=max(1.0, min(self.policy.cooldown, wait)),
        )

    def _count(self, state: BreakerState, failed: bool) -> BreakerState | None:
        self._outcomes.append(failed)
        self._failures += failed
        if len(self._outcomes) > self.policy.window:
            self._failures -= self._outcomes.popleft()
        calls = len(self._outcomes)
        if calls < self.policy.minimum_calls or self._failures / calls < self.policy.failure_rate:
            return None
        return self._opened(state, self._failures, calls)

    def _probe_verdict(self, state: BreakerState) -> BreakerState | None:
        """Open or closed as soon as the probes' outcome is certain, else None."""
        planned, rate = self.policy.half_open_calls, self.policy.failure_rate
        calls, failures = self._probe_calls, self._probe_failures
        if calls >= planned:
            fails = failures / calls >= rate
        elif failures / planned >= rate:
            fails = True  # even if every other probe succeeds
        elif (failures + planned - calls) / planned < rate:
            fails = False  # even if every other probe fails
        else:
            return None
        if fails:
            return self._opened(state, failures, calls)
        return BreakerState(name=self.name, failures=failures, calls=calls)

    def _opened(self, state: BreakerState, failures: int, calls: int) -> BreakerState:
        changes = {"state": "open", "failures": failures, "calls": calls}
        return state.model_copy(update={**changes, "opened_at": self.clock()})

    def _cooldown_left(self, state: BreakerState, now: datetime) -> float:
        if state.opened_at is None:
            return 0.0  # a document open since who knows when: time to probe
        return self.policy.cooldown - (now - state.opened_at).total_seconds()

    def _adopt(self, state: BreakerState) -> None:
        if state.version == self._shared.version and state.state == self._shared.state:
            return
        self._shared = state
        self._generation += 1
        self._outcomes.clear()
        self._failures = 0
        self._probes_out.clear()
        self._probe_calls = self._probe_failures = 0

    # -- without the lock: store I/O --

    def _refresh(self) -> None:
        """Read the shared state when this instance's copy is older than `state_cache`."""
        with self._lock:
            now = self.clock()
            age = (now - self._read_at).total_seconds() if self._read_at else None
            if age is not None and age < self.policy.state_cache:
                return
            self._read_at = now  # the other threads keep the copy while this one reads
            generation = self._generation
        try:
            state = self.store.breaker(self.name)
        except Exception:  # the store is sick: keep the last state rather than fail the call
            log.warning("circuit %s: could not read its state", self.name, exc_info=True)
            return
        with self._lock:
            if self._generation == generation:  # nothing newer was adopted meanwhile
                self._adopt(state)
            seen = self._shared.state
        metrics.breaker_state(self.name, seen)

    def _write(self, expected: BreakerState, new: BreakerState) -> None:
        """Write one state change (with `_changing` set); on a lost race, adopt the winner's."""
        won = False
        current = expected
        try:
            won = self.store.save_breaker(new, expected_version=expected.version)
            current = (
                new.model_copy(update={"version": expected.version + 1})
                if won
                else self.store.breaker(self.name)
            )
        except Exception:  # never fail a call that reached the vendor over our bookkeeping
            log.warning("circuit %s: could not record a change", self.name, exc_info=True)
        with self._lock:
            self._changing = False
            self._adopt(current)
            self._read_at = self.clock()
            seen = self._shared.state
        metrics.breaker_state(self.name, seen)
        if won:
            self._announce(expected, current)

    def _announce(self, old: BreakerState, new: BreakerState) -> None:
        with _transitions_lock:
            transitions[(self.name, new.state)] += 1
        rate = f"{new.failures} of {new.calls} calls failed"
        share = f"{new.failures / new.calls:.0%}" if new.calls else "n/a"
        threshold = f"{self.policy.failure_rate:.0%}"
        if new.state == "open" and old.state == "half_open":
            log.error(
                "circuit %s: open again, %s probes failed (%s, threshold %s); shedding calls "
                "for %gs",
                self.name,
                f"{new.failures} of {new.calls}",
                share,
                threshold,
                self.policy.cooldown,
            )
        elif new.state == "open":
            log.error(
                "circuit %s: open, %s (%s) in this instance's window of the last %d calls "
                "(threshold %s, at least %d calls); shedding calls for %gs",
                self.name,
                rate,
                share,
                self.policy.window,
                threshold,
                self.policy.minimum_calls,
                self.policy.cooldown,
            )
        elif new.state == "half_open":
            log.warning(
                "circuit %s: half-open after %gs open (%s), admitting %d probes per instance",
                self.name,
                self.policy.cooldown,
                rate,
                self.policy.half_open_calls,
            )
        else:
            log.warning(
                "circuit %s: closed, %s of %d probes failed (%s, threshold %s)",
                self.name,
                new.failures,
                new.calls,
                share,
                threshold,
            )


_instances: weakref.WeakKeyDictionary[StateStore, dict[str, CircuitBreaker]] = (
    weakref.WeakKeyDictionary()
)
_instances_lock = threading.Lock()


def breaker_for(store: StateStore, name: str, policy: BreakerPolicy) -> CircuitBreaker:
    """This instance's breaker for vendor `name` on `store`: one per process, so its window
    counts every call the instance makes; a new policy (changed settings) starts a new one."""
    with _instances_lock:
        breakers = _instances.setdefault(store, {})
        breaker = breakers.get(name)
        if breaker is None or breaker.policy != policy:
            breaker = breakers[name] = CircuitBreaker(store, name, policy)
        return breaker


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

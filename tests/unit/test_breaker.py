"""Circuit breakers and concurrency limits, on the in-memory store with a hand-moved clock."""

from __future__ import annotations

from datetime import timedelta

import pytest

from shared.breaker import BreakerPolicy, CircuitBreaker, ConcurrencyLimit
from shared.errors import CircuitOpen, NotFound, RateLimited, RetryableError, VendorTimeout
from shared.model import utcnow
from tests.fakes import FakeStateStore

POLICY = BreakerPolicy(failure_threshold=3, cooldown=30, probe_timeout=60)


class Clock:
    def __init__(self):
        self.now = utcnow()

    def __call__(self):
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def fail(breaker: CircuitBreaker, error: Exception | None = None) -> None:
    with pytest.raises(type(error or VendorTimeout("slow"))), breaker.guard():
        raise error or VendorTimeout("slow")


def test_breaker_opens_after_consecutive_failures_and_fails_fast():
    store, clock = FakeStateStore(), Clock()
    breaker = CircuitBreaker(store, "jira", POLICY, clock)
    for _ in range(3):
        fail(breaker)
    calls = []
    with pytest.raises(CircuitOpen) as caught, breaker.guard():
        calls.append("vendor")
    assert calls == [] and caught.value.retry_after == pytest.approx(30)


def test_a_success_resets_the_count():
    store, clock = FakeStateStore(), Clock()
    breaker = CircuitBreaker(store, "jira", POLICY, clock)
    fail(breaker)
    fail(breaker)
    with breaker.guard():
        pass
    fail(breaker)
    assert store.breaker("jira").state == "closed"


def test_rate_limits_and_permanent_errors_do_not_open_it():
    store = FakeStateStore()
    breaker = CircuitBreaker(store, "slack", POLICY, Clock())
    for _ in range(5):
        fail(breaker, RateLimited("slow down", retry_after=1))
        fail(breaker, NotFound("no such channel"))
    assert store.breaker("slack").state == "closed"


def test_one_probe_after_cool_down_closes_it_on_success():
    store, clock = FakeStateStore(), Clock()
    first = CircuitBreaker(store, "jira", POLICY, clock)
    other_instance = CircuitBreaker(store, "jira", POLICY, clock)
    for _ in range(3):
        fail(first)
    clock.advance(31)
    # The probe is out; a second instance may not probe at the same time.
    with first.guard(), pytest.raises(CircuitOpen):
        other_instance.before_call()
    assert store.breaker("jira").state == "closed"
    with other_instance.guard():
        pass


def test_failed_probe_opens_it_again():
    store, clock = FakeStateStore(), Clock()
    breaker = CircuitBreaker(store, "jira", POLICY, clock)
    for _ in range(3):
        fail(breaker)
    clock.advance(31)
    fail(breaker)
    assert store.breaker("jira").state == "open"
    with pytest.raises(CircuitOpen):
        breaker.before_call()


def test_a_vanished_probe_frees_the_half_open_state():
    store, clock = FakeStateStore(), Clock()
    breaker = CircuitBreaker(store, "jira", POLICY, clock)
    for _ in range(3):
        fail(breaker)
    clock.advance(31)
    breaker.before_call()  # a probe that never reports back (its instance died)
    clock.advance(61)
    with breaker.guard():
        pass
    assert store.breaker("jira").state == "closed"


def test_concurrency_limit_turns_excess_calls_away():
    limit = ConcurrencyLimit(2)
    with limit.slot("gemini"), limit.slot("gemini"):
        with pytest.raises(RetryableError) as caught, limit.slot("gemini"):
            pass
        assert caught.value.code == "busy"
    with limit.slot("gemini"):
        pass

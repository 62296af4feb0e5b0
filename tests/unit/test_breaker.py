"""Circuit breakers and concurrency limits, on the in-memory store with a hand-moved clock."""

from __future__ import annotations

import contextlib
import heapq
import logging
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.breaker import (
    Admission,
    BreakerPolicy,
    CircuitBreaker,
    ConcurrencyLimit,
    breaker_for,
    transitions,
)
from shared.errors import (
    AuthFailed,
    BadVendorReply,
    ChimeraError,
    CircuitOpen,
    Conflict,
    NotFound,
    RateLimited,
    RetryableError,
    VendorTimeout,
    VendorUnavailable,
)
from shared.model import BreakerState, utcnow
from shared.queues import QUEUES, tool_queue
from shared.settings import Settings
from shared.vendor_requests import Tally, vendor_request
from tests.fakes import FakeStateStore

POLICY = BreakerPolicy(
    failure_rate=0.5,
    window=10,
    minimum_calls=4,
    half_open_calls=4,
    cooldown=30,
    probe_timeout=60,
    state_cache=2,
)


class Clock:
    def __init__(self):
        self.start = self.now = utcnow()

    def __call__(self):
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)

    def at(self, seconds: float) -> None:
        self.now = self.start + timedelta(seconds=seconds)


class CountingStore(FakeStateStore):
    """The in-memory store, counting what the breakers read and write."""

    def __init__(self) -> None:
        super().__init__()
        self.breaker_reads = 0
        self.breaker_writes = 0

    def breaker(self, name: str) -> BreakerState:
        self.breaker_reads += 1
        return super().breaker(name)

    def save_breaker(self, state: BreakerState, *, expected_version: int) -> bool:
        reads = self.breaker_reads  # the fake's compare-and-set reads too: not a breaker's
        saved = super().save_breaker(state, expected_version=expected_version)
        self.breaker_reads = reads
        self.breaker_writes += saved
        return saved


# What a vendor call can end in, and whether the breaker counts it as a failure.
ANSWERS: dict[str, tuple[Callable[[], Exception] | None, bool]] = {
    "ok": (None, False),
    "unavailable": (lambda: VendorUnavailable("503"), True),
    "timeout": (lambda: VendorTimeout("slow"), True),
    "garbage": (lambda: BadVendorReply("<html>proxy error</html>"), True),
    "rate_limited": (lambda: RateLimited("slow down", retry_after=1), False),
    "not_found": (lambda: NotFound("no such channel"), False),
    "auth_failed": (lambda: AuthFailed("bad token"), False),
    "pending": (lambda: RetryableError("still looking", code="enrichment_pending"), False),
}
ANSWERING = [k for k, (_, failed) in ANSWERS.items() if not failed]


def call(breaker: CircuitBreaker, answer: str = "ok", vendor: list | None = None) -> None:
    """One call through the breaker that ends in `answer`; CircuitOpen if it was shed."""
    make, _ = ANSWERS[answer]
    error = make() if make else None
    try:
        with breaker.guard():
            if vendor is not None:
                vendor.append(answer)
            if error is not None:
                raise error
    except ChimeraError as exc:
        if exc is not error:
            raise


def fail(breaker: CircuitBreaker, times: int = 1) -> None:
    for _ in range(times):
        call(breaker, "timeout")


def opened(store: FakeStateStore, policy: BreakerPolicy, clock: Clock, name: str = "jira"):
    """A breaker on `store` that has just opened."""
    breaker = CircuitBreaker(store, name, policy, clock)
    fail(breaker, policy.minimum_calls)
    assert store.breaker(name).state == "open"
    return breaker


def test_opens_when_the_failure_rate_reaches_the_threshold_and_then_fails_fast():
    store, clock = FakeStateStore(), Clock()
    breaker = CircuitBreaker(store, "jira", POLICY, clock)
    fail(breaker, POLICY.minimum_calls - 1)
    assert store.breaker("jira").state == "closed"  # too few calls for the rate to count
    fail(breaker)
    state = store.breaker("jira")
    assert (state.state, state.failures, state.calls) == ("open", 4, 4)

    vendor: list[str] = []
    clock.advance(10)
    with pytest.raises(CircuitOpen) as caught:
        call(breaker, vendor=vendor)
    assert vendor == [] and caught.value.retryable
    assert caught.value.retry_after == pytest.approx(20)  # the cool-down left


def test_a_flaky_vendor_under_the_rate_keeps_it_closed():
    store = FakeStateStore()
    breaker = CircuitBreaker(store, "jira", POLICY, Clock())
    for _ in range(50):  # 40% failures, two in every five: never half of the window
        for answer in ("ok", "timeout", "ok", "ok", "unavailable"):
            call(breaker, answer)
    assert store.breaker("jira") == BreakerState(name="jira")


@settings(max_examples=150, deadline=None)
@given(
    policy=st.builds(
        BreakerPolicy,
        failure_rate=st.sampled_from([0.1, 0.25, 0.5, 0.7, 0.9, 1.0]),
        window=st.integers(1, 25),
        minimum_calls=st.integers(1, 25),
        cooldown=st.just(3600.0),
    ).filter(lambda p: p.minimum_calls <= p.window),
    answers=st.lists(st.sampled_from(sorted(ANSWERS)), max_size=80),
)
def test_opens_exactly_when_the_window_rate_reaches_the_threshold(policy, answers):
    # The model: a sliding window of the last `window` outcomes that counted.
    window: deque[bool] = deque(maxlen=policy.window)
    expected_open_after = None
    for i, answer in enumerate(answers):
        window.append(ANSWERS[answer][1])
        if len(window) >= policy.minimum_calls and sum(window) / len(window) >= policy.failure_rate:
            expected_open_after = i
            break

    store = FakeStateStore()
    breaker = CircuitBreaker(store, "jira", policy, Clock())
    vendor: list[str] = []
    shed_at = None
    for i, answer in enumerate(answers):
        try:
            call(breaker, answer, vendor)
        except CircuitOpen:
            shed_at = i
            break
    if expected_open_after is None:
        assert shed_at is None and store.breaker("jira").state == "closed"
        assert len(vendor) == len(answers)
    else:
        assert store.breaker("jira").state == "open"
        assert len(vendor) == expected_open_after + 1  # nothing reached it once open
        assert shed_at in (None, expected_open_after + 1)


@settings(max_examples=60, deadline=None)
@given(answers=st.lists(st.sampled_from(ANSWERING), min_size=1, max_size=200))
def test_rate_limits_and_permanent_answers_never_open_it(answers):
    store = FakeStateStore()
    breaker = CircuitBreaker(store, "slack", POLICY, Clock())
    for answer in answers:
        call(breaker, answer)
    assert store.breaker("slack").state == "closed"


def test_rate_limits_count_as_answers_so_they_dilute_the_failure_rate():
    store = FakeStateStore()
    breaker = CircuitBreaker(store, "slack", POLICY, Clock())
    for _ in range(20):  # two failures in five: 40% of the window
        for answer in ("rate_limited", "timeout", "not_found", "rate_limited", "unavailable"):
            call(breaker, answer)
    assert store.breaker("slack").state == "closed"


def test_our_own_shedding_and_store_conflicts_inside_are_not_counted():
    store = FakeStateStore()
    breaker = CircuitBreaker(store, "gemini", POLICY, Clock())
    for error in [CircuitOpen("nested", retry_after=1), Conflict("raced")] * 10:
        with pytest.raises(type(error)), breaker.guard():
            raise error
    fail(breaker, POLICY.minimum_calls - 1)
    assert store.breaker("gemini").state == "closed"  # the 20 did not count as answers either
    fail(breaker)
    assert store.breaker("gemini").state == "open"


def test_half_open_admits_its_probes_per_instance_and_sheds_the_rest():
    store, clock = FakeStateStore(), Clock()
    first = opened(store, POLICY, clock)
    second = CircuitBreaker(store, "jira", POLICY, clock)  # another instance
    clock.advance(POLICY.cooldown)
    probes = [first.before_call() for _ in range(POLICY.half_open_calls)]
    assert store.breaker("jira").state == "half_open" and all(p.probe for p in probes)
    with pytest.raises(CircuitOpen) as caught:
        first.before_call()
    assert 1 <= caught.value.retry_after <= POLICY.cooldown
    # The other instance counts its own probes.
    others = [second.before_call() for _ in range(POLICY.half_open_calls)]
    assert all(p.probe for p in others)
    with pytest.raises(CircuitOpen):
        second.before_call()


@settings(max_examples=150, deadline=None)
@given(
    probes=st.integers(1, 12),
    rate=st.sampled_from([0.1, 0.25, 0.5, 0.7, 1.0]),
    data=st.data(),
)
def test_the_probes_failure_rate_decides_once_it_is_certain(probes, rate, data):
    policy = BreakerPolicy(
        failure_rate=rate, window=5, minimum_calls=5, half_open_calls=probes, cooldown=30
    )
    outcomes = data.draw(st.lists(st.booleans(), min_size=probes, max_size=probes))
    verdict = "open" if sum(outcomes) / probes >= rate else "closed"
    store, clock = FakeStateStore(), Clock()
    breaker = opened(store, policy, clock)
    clock.advance(policy.cooldown)
    admitted = [breaker.before_call() for _ in range(probes)]
    for admission, failed in zip(admitted, outcomes, strict=True):
        breaker.record(admission, failed=failed)
        assert store.breaker("jira").state in ("half_open", verdict)  # never the wrong way
    state = store.breaker("jira")
    assert state.state == verdict
    assert state.opened_at == (clock.now if verdict == "open" else None)


def test_a_mix_of_probes_under_the_rate_closes_it_and_over_it_opens_it_again():
    store, clock = FakeStateStore(), Clock()
    breaker = opened(store, POLICY, clock)
    clock.advance(POLICY.cooldown)
    call(breaker, "ok")
    call(breaker, "timeout")
    assert store.breaker("jira").state == "half_open"  # one of four: could go either way
    call(breaker, "unavailable")  # two of four probes failed: 50%, at the threshold
    assert store.breaker("jira").state == "open"

    clock.advance(POLICY.cooldown)
    call(breaker, "ok")
    call(breaker, "garbage")
    call(breaker, "ok")
    assert store.breaker("jira").state == "half_open"  # the fourth may still make it 50%
    call(breaker, "rate_limited")  # an answer: one failure in four
    assert store.breaker("jira").state == "closed"
    with breaker.guard():
        pass


def test_failures_in_flight_when_it_opened_do_not_extend_the_open_period():
    store, clock = FakeStateStore(), Clock()
    breaker = CircuitBreaker(store, "jira", POLICY, clock)
    in_flight = [breaker.before_call() for _ in range(20)]  # all admitted while closed
    for admission in in_flight[:4]:
        breaker.record(admission, failed=True)
    state = store.breaker("jira")
    assert state.state == "open"
    clock.advance(20)
    for admission in in_flight[4:]:  # they answer late, all failed
        breaker.record(admission, failed=True)
    assert store.breaker("jira") == state  # same opened_at, same version
    clock.advance(POLICY.cooldown - 20)
    breaker.before_call()  # the cool-down counted from when it opened
    assert store.breaker("jira").state == "half_open"


def test_a_probe_in_flight_from_an_earlier_half_open_does_not_decide_the_next():
    store, clock = FakeStateStore(), Clock()
    breaker = opened(store, POLICY, clock)
    clock.advance(POLICY.cooldown)
    late = breaker.before_call()
    fail(breaker, 2)  # two of four probes failed: open again
    assert store.breaker("jira").state == "open"
    clock.advance(POLICY.cooldown)
    fail(breaker)  # the next round's first probe
    breaker.record(late, failed=True)  # the first round's last probe, answering late
    assert store.breaker("jira").state == "half_open"  # counted, it would be two of four


def test_lost_or_crashed_probes_free_their_slots():
    store, clock = FakeStateStore(), Clock()
    breaker = opened(store, POLICY, clock)
    clock.advance(POLICY.cooldown)
    for _ in range(POLICY.half_open_calls - 1):
        breaker.before_call()  # never report back (their thread hung)
    with pytest.raises(ZeroDivisionError), breaker.guard():
        raise ZeroDivisionError  # a bug of ours, not the vendor's answer
    breaker.before_call()  # the crashed probe's slot is free again
    with pytest.raises(CircuitOpen):
        breaker.before_call()
    clock.advance(POLICY.probe_timeout)
    call(breaker, "ok")  # the silent ones are presumed lost
    call(breaker, "ok")
    call(breaker, "ok")
    assert store.breaker("jira").state == "closed"


def test_the_shared_state_is_read_once_per_cache_period():
    store, clock = CountingStore(), Clock()
    here = CircuitBreaker(store, "jira", POLICY, clock)
    call(here)
    elsewhere = opened(store, POLICY, clock)
    reads = store.breaker_reads
    vendor: list[str] = []
    for _ in range(10):
        call(here, "ok", vendor)  # it last read closed: calls go on until its copy is stale
    assert store.breaker_reads == reads and len(vendor) == 10
    clock.advance(POLICY.state_cache)
    with pytest.raises(CircuitOpen):
        call(here, "ok", vendor)
    assert len(vendor) == 10
    assert elsewhere.state.version == here.state.version


@pytest.mark.parametrize("failure_rate", [0.4, 1.0])
def test_the_shared_state_is_written_only_when_it_changes(failure_rate):
    # 1,000 calls, 10 ms apart, by two instances; the report's "writes per 1,000 calls".
    policy = BreakerPolicy(cooldown=5, state_cache=2)  # the defaults, shorter pauses
    name = f"written-{failure_rate}"
    store, clock, rng = CountingStore(), Clock(), random.Random(8)
    instances = [CircuitBreaker(store, name, policy, clock) for _ in range(2)]
    before = sum(n for (vendor, _), n in transitions.items() if vendor == name)
    for _ in range(1000):
        clock.advance(0.01)
        with contextlib.suppress(CircuitOpen):
            call(rng.choice(instances), "timeout" if rng.random() < failure_rate else "ok")
    changes = sum(n for (vendor, _), n in transitions.items() if vendor == name) - before
    assert store.breaker_writes == changes == store.breaker(name).version
    assert store.breaker_reads <= 2 * (10 / policy.state_cache + 1) + 2 * changes
    if failure_rate < policy.failure_rate:
        assert store.breaker_writes == 0
    else:
        assert store.breaker_writes >= 3  # opened, half-open, opened again


def test_one_instance_wins_each_change_and_the_others_adopt_it():
    store, clock = CountingStore(), Clock()
    a, b = (CircuitBreaker(store, "jira", POLICY, clock) for _ in range(2))
    fail(a, POLICY.minimum_calls - 1)
    fail(b, POLICY.minimum_calls - 1)
    fail(a)  # a opens it
    fail(b)  # b's window says open too, from its stale copy: its write loses
    assert store.breaker_writes == 1 and store.breaker("jira").version == 1
    assert b.state == a.state == store.breaker("jira")


def test_each_change_is_logged_and_counted(caplog):
    store, clock = FakeStateStore(), Clock()
    before = {to: transitions[("logged", to)] for to in ("open", "half_open", "closed")}
    with caplog.at_level(logging.WARNING, logger="shared.breaker"):
        breaker = opened(store, POLICY, clock, name="logged")
        clock.advance(POLICY.cooldown)
        for _ in range(POLICY.half_open_calls):
            call(breaker, "ok")
    assert {to: transitions[("logged", to)] - n for to, n in before.items()} == {
        "open": 1,
        "half_open": 1,
        "closed": 1,
    }
    messages = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert messages[0][0] == logging.ERROR
    assert "logged" in messages[0][1] and "4 of 4 calls failed (100%" in messages[0][1]
    assert "last 10 calls" in messages[0][1]
    assert "half-open" in messages[1][1] and "4 probes" in messages[1][1]
    assert "closed, 0 of 3 probes failed (0%" in messages[2][1]


class SickStore(FakeStateStore):
    def __init__(self) -> None:
        super().__init__()
        self.sick = False

    def breaker(self, name: str) -> BreakerState:
        if self.sick:
            raise OSError("store unreachable")
        return super().breaker(name)

    def save_breaker(self, state: BreakerState, *, expected_version: int) -> bool:
        if self.sick:
            raise OSError("store unreachable")
        return super().save_breaker(state, expected_version=expected_version)


def test_a_sick_store_never_fails_a_call_the_vendor_answered():
    store, clock = SickStore(), Clock()
    breaker = CircuitBreaker(store, "jira", POLICY, clock)
    call(breaker, "ok")
    store.sick = True
    clock.advance(POLICY.state_cache)
    call(breaker, "ok")  # the read failed: the last copy stands
    fail(breaker, POLICY.minimum_calls)  # the change cannot be written: no error for it
    store.sick = False
    fail(breaker)
    assert store.breaker("jira").state == "open"  # written at the next verdict


def test_one_breaker_per_store_and_vendor_in_an_instance():
    store, other = FakeStateStore(), FakeStateStore()
    jira = breaker_for(store, "jira", POLICY)
    assert breaker_for(store, "jira", POLICY) is jira
    assert breaker_for(store, "slack", POLICY) is not jira
    assert breaker_for(other, "jira", POLICY) is not jira
    assert breaker_for(store, "jira", BreakerPolicy()) is not jira  # settings changed


def test_the_policy_comes_from_the_settings():
    settings = Settings.from_env(
        {
            "CHIMERA_BREAKER_FAILURE_RATE": "0.6",
            "CHIMERA_BREAKER_WINDOW": "50",
            "CHIMERA_BREAKER_MINIMUM_CALLS": "10",
            "CHIMERA_BREAKER_HALF_OPEN_CALLS": "3",
            "CHIMERA_BREAKER_COOLDOWN": "5",
            "CHIMERA_BREAKER_STATE_CACHE": "0.5",
        }
    )
    assert BreakerPolicy.from_settings(settings) == BreakerPolicy(
        failure_rate=0.6,
        window=50,
        minimum_calls=10,
        half_open_calls=3,
        cooldown=5,
        probe_timeout=settings.dispatch_deadline,
        state_cache=0.5,
    )


@pytest.mark.parametrize(
    "env",
    [
        {"CHIMERA_BREAKER_FAILURE_RATE": "0"},
        {"CHIMERA_BREAKER_FAILURE_RATE": "1.5"},
        {"CHIMERA_BREAKER_MINIMUM_CALLS": "0"},
        {"CHIMERA_BREAKER_MINIMUM_CALLS": "101"},
        {"CHIMERA_BREAKER_HALF_OPEN_CALLS": "0"},
        {"CHIMERA_BREAKER_COOLDOWN": "0"},
        {"CHIMERA_BREAKER_STATE_CACHE": "-1"},
    ],
)
def test_breaker_settings_that_cannot_work_are_refused(env):
    with pytest.raises(ValueError, match="CHIMERA_BREAKER_"):
        Settings.from_env(env)


def test_documents_of_the_consecutive_failure_breaker_still_read():
    old = {"name": "jira", "state": "half_open", "failures": 5, "probe_until": None, "version": 7}
    assert BreakerState.model_validate(old).version == 7


def test_concurrency_limit_turns_excess_calls_away():
    limit = ConcurrencyLimit(2)
    with limit.slot("gemini"), limit.slot("gemini"):
        with pytest.raises(RetryableError) as caught, limit.slot("gemini"):
            pass
        assert caught.value.code == "busy"
    with limit.slot("gemini"):
        pass


# -- Many callers on a fake clock: what the queue does with the breaker's answers --

QUEUE = QUEUES[tool_queue("jira")]


@dataclass
class Caller:
    steps_left: int
    failed_attempts: int = 0  # of the current step
    attempts: list[int] = field(default_factory=list)  # per finished step


@dataclass
class Simulation:
    """Callers doing `steps` guarded calls each, retried on the queue's schedule (and a
    Retry-After), through `instances` breakers sharing one store, on a fake clock. Like a tool
    attempt, a guarded call makes 1 to `requests` vendor requests and fails if one does."""

    seed: int
    vendor_failure_rate: float  # per request
    requests: int = 3
    callers: int = 50
    steps: int = 10
    instances: int = 1
    policy: BreakerPolicy = field(default_factory=BreakerPolicy)
    name: str = "simulated"
    # Each request counted (as the clients do through vendor_request), or each call as one.
    per_request: bool = True

    def run(self, horizon: float = 3600.0) -> Simulation:
        rng = random.Random(self.seed)
        self.clock, self.store = Clock(), CountingStore()
        instances_ = [
            CircuitBreaker(self.store, self.name, self.policy, self.clock)
            for _ in range(self.instances)
        ]
        self.people = [Caller(self.steps) for _ in range(self.callers)]
        self.vendor_calls: list[tuple[float, BreakerState]] = []  # when, the shared state then
        self.opened: list[float] = []  # when it opened
        self.answered_before_open = 0
        self.failed_calls = 0
        events: list[tuple[float, int, int, Admission | None, CircuitBreaker | None]] = []
        seq = 0

        def later(at: float, who: int, admission=None, by=None) -> None:
            nonlocal seq
            seq += 1
            heapq.heappush(events, (at, seq, who, admission, by))

        def retry(now: float, who: int, wait: float | None = None) -> None:
            person = self.people[who]
            person.failed_attempts += 1
            delay = QUEUE.backoff(person.failed_attempts)
            later(now + max(delay, wait or 0.0), who)

        for who in range(self.callers):
            later(rng.uniform(0, 1), who)
        while events:
            now, _, who, admission, by = heapq.heappop(events)
            if now > horizon:
                break
            self.clock.at(now)
            person = self.people[who]
            if admission is None:  # a delivery: through one instance's breaker
                by = rng.choice(instances_)
                try:
                    admission = by.before_call()
                except CircuitOpen as shed:
                    retry(now, who, shed.retry_after)
                    continue
                self.vendor_calls.append((now, self.store.breaker(self.name)))
                later(now + rng.uniform(0.05, 2.0), who, admission, by)
                continue
            assert by is not None
            was_open = self.store.breaker(self.name).state == "open"
            sent, tally, failed = rng.randint(1, self.requests), Tally(), False
            for _ in range(sent):  # a tool's call stops at its first failed request
                failed = rng.random() < self.vendor_failure_rate
                if self.per_request:
                    by.count_request(admission, tally, failed=failed)
                if failed:
                    break
            self.failed_calls += failed
            by.finish(admission, tally, failed=failed)
            if not was_open and self.store.breaker(self.name).state == "open":
                self.opened.append(now)
            if not self.opened:
                self.answered_before_open += 1
            if failed:
                retry(now, who)
                continue
            person.attempts.append(person.failed_attempts + 1)
            person.failed_attempts = 0
            person.steps_left -= 1
            if person.steps_left:
                later(now + rng.uniform(0, 0.5), who)
        return self

    @property
    def attempts(self) -> list[int]:
        return [a for person in self.people for a in person.attempts]


@pytest.mark.parametrize("instances", [1, 3])
@pytest.mark.parametrize("seed", range(4))
def test_fifty_callers_on_a_forty_percent_flaky_vendor_all_finish(seed, instances):
    sim = Simulation(seed=seed, vendor_failure_rate=0.4, instances=instances).run()
    assert all(person.steps_left == 0 for person in sim.people)
    assert len(sim.attempts) == sim.callers * sim.steps
    assert max(sim.attempts) <= QUEUE.max_attempts  # nobody ran out of attempts
    assert sim.opened == [] and sim.store.breaker_writes == 0  # never shed a single call
    # A real test: hundreds of calls, well over half of them failed (up to 78% of those
    # making three requests), and a breaker counting calls instead of requests would have
    # opened on them.
    assert len(sim.vendor_calls) > 1000 and sim.failed_calls / len(sim.vendor_calls) > 0.45
    per_call = Simulation(seed=seed, vendor_failure_rate=0.4, instances=instances)
    per_call.per_request = False
    assert per_call.run().opened


@pytest.mark.parametrize("instances", [1, 3])
def test_a_dead_vendor_opens_it_soon_and_calls_are_shed_while_open(instances):
    sim = Simulation(seed=1, vendor_failure_rate=1.0, instances=instances, steps=1)
    sim.run(horizon=600)
    policy = sim.policy
    assert sim.opened, "a dead vendor never opened the breaker"
    # Open once one instance has the minimum number of answers, all failed.
    assert sim.answered_before_open <= instances * (policy.minimum_calls - 1) + 1
    for at, shared in sim.vendor_calls:
        if shared.state == "open":  # only an instance whose copy was not stale yet
            assert shared.opened_at is not None
            since_open = sim.clock.start + timedelta(seconds=at) - shared.opened_at
            assert since_open <= timedelta(seconds=policy.state_cache)
    # Past the first round, each cool-down lets each instance's probes through, no more
    # (and what an instance admits before it sees the change, at most one per caller).
    cycles = len(sim.opened)
    bound = sim.callers + cycles * instances * policy.half_open_calls + cycles * sim.callers
    assert len(sim.vendor_calls) <= bound
    unshed = Simulation(seed=1, vendor_failure_rate=1.0, instances=instances, steps=1)
    unshed.policy = BreakerPolicy(window=10**6, minimum_calls=10**6)
    calls_without = len(unshed.run(horizon=600).vendor_calls)
    assert len(sim.vendor_calls) < calls_without


def requests_through(breaker: CircuitBreaker, answers: list[str]) -> None:
    """One guarded call that makes a vendor request per answer, stopping at the first that
    raises, as a tool's call does."""
    try:
        with breaker.guard():
            for answer in answers:
                make, _ = ANSWERS[answer]
                with vendor_request():
                    if make:
                        raise make()
    except ChimeraError:
        pass


def test_each_vendor_request_of_a_call_counts_on_its_own():
    store = FakeStateStore()
    breaker = CircuitBreaker(store, "jira", POLICY, Clock())
    # Calls whose last request fails: as calls all failed, as requests only a third did.
    for _ in range(POLICY.minimum_calls):
        requests_through(breaker, ["ok", "ok", "timeout"])
    assert store.breaker("jira").state == "closed"
    # A dead vendor's calls fail at their first request: the rate is the vendor's.
    for _ in range(POLICY.window):
        requests_through(breaker, ["unavailable"])
    assert store.breaker("jira").state == "open"


def test_a_request_outside_a_guarded_call_counts_nowhere():
    with vendor_request():
        pass
    with pytest.raises(VendorUnavailable), vendor_request():
        raise VendorUnavailable("down")


def test_a_probe_fails_when_its_own_requests_fail_at_the_breakers_rate():
    store, clock = FakeStateStore(), Clock()
    policy = BreakerPolicy(
        failure_rate=0.6, window=4, minimum_calls=4, half_open_calls=2, cooldown=30
    )
    breaker = CircuitBreaker(store, "jira", policy, clock)
    for _ in range(4):
        requests_through(breaker, ["unavailable"])
    clock.advance(31)
    # Two probes whose requests mostly succeed: closed, though each call ended in a failure.
    requests_through(breaker, ["ok", "ok", "unavailable"])
    requests_through(breaker, ["ok", "unavailable"])
    assert store.breaker("jira").state == "closed"

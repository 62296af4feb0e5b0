"""The local dispatcher's rate limit: never more than the rate allows, and idle time refills."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from shared.token_bucket import TokenBucket


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@given(
    rate=st.floats(0.1, 500),
    steps=st.lists(st.tuples(st.floats(0, 2), st.integers(0, 1000)), max_size=60),
)
def test_grants_stay_within_the_burst_plus_the_rate_over_the_time_passed(rate, steps):
    clock = Clock()
    bucket = TokenBucket(rate, clock)
    granted = 0
    for wait, wanted in steps:
        clock.now += wait
        got = bucket.take(wanted)
        assert 0 <= got <= wanted
        granted += got
        assert granted <= max(1.0, rate) + rate * clock.now + 1e-6


@given(rate=st.floats(1, 500), wanted=st.integers(1, 1000))
def test_a_full_burst_is_granted_after_an_idle_second(rate, wanted):
    clock = Clock()
    bucket = TokenBucket(rate, clock)
    bucket.take(wanted)  # drained
    clock.now += 1.0
    assert bucket.take(wanted) == min(wanted, int(rate))


@given(wanted=st.lists(st.integers(0, 10_000), max_size=20))
def test_an_infinite_rate_grants_everything_asked(wanted):
    bucket = TokenBucket(float("inf"), clock=Clock())
    assert [bucket.take(w) for w in wanted] == wanted

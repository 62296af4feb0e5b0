"""The retry outlook: what a live view says of a retrying step, from the queue's schedule."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from shared.queues import QUEUES, QueueConfig, tool_queue
from shared.retry_outlook import RetryOutlook

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
JIRA = QUEUES[tool_queue("jira")]


def test_the_first_failure_waits_the_minimum_backoff_and_gives_up_after_every_backoff():
    outlook = RetryOutlook.after_failure(JIRA, 1, NOW)
    assert outlook.next_attempt_at == NOW + timedelta(seconds=JIRA.min_backoff)
    total = sum(JIRA.backoff(n) for n in range(1, JIRA.max_attempts))
    assert outlook.gives_up_at == NOW + timedelta(seconds=total)
    said = outlook.says(NOW)
    assert said.startswith(f"attempt 1/{JIRA.max_attempts} failed; next attempt in 1 s")


def test_a_longer_retry_after_moves_the_next_attempt_and_the_end():
    plain = RetryOutlook.after_failure(JIRA, 3, NOW)
    told = RetryOutlook.after_failure(JIRA, 3, NOW, retry_after=120)
    assert told.next_attempt_at == NOW + timedelta(seconds=120)
    assert told.gives_up_at - plain.gives_up_at == timedelta(seconds=120 - JIRA.backoff(3))


@given(
    attempt=st.integers(min_value=1, max_value=39),
    retry_after=st.none() | st.floats(min_value=0, max_value=3600),
)
def test_the_outlook_survives_its_event_and_never_ends_before_the_next_attempt(
    attempt, retry_after
):
    outlook = RetryOutlook.after_failure(JIRA, attempt, NOW, retry_after)
    assert NOW < outlook.next_attempt_at <= outlook.gives_up_at
    assert RetryOutlook.from_detail({"code": "x", **outlook.detail()}) == outlook


def test_the_penultimate_failure_gives_up_right_after_the_last_attempt():
    queue = QueueConfig("q", "q", 3, 2, 10, 2, 1, 1)
    outlook = RetryOutlook.after_failure(queue, 2, NOW)
    assert outlook.next_attempt_at == outlook.gives_up_at == NOW + timedelta(seconds=4)


def test_events_written_before_the_outlook_have_none():
    assert RetryOutlook.from_detail({"attempt": 2, "code": "timeout"}) is None


def test_the_outlook_follows_the_schedule_the_queue_delivers_by(tmp_path):
    # The local queue's backoffs may be scaled (demos, tests): the views must say its times.
    from shared.runtime import build_runtime
    from shared.settings import Settings
    from shared.task_queue import schedule_of

    scaled = build_runtime(Settings(home=tmp_path, local_backoff_scale=0.01)).queue
    name = tool_queue("jira")
    assert schedule_of(scaled, name).min_backoff == JIRA.min_backoff * 0.01
    outlook = RetryOutlook.after_failure(schedule_of(scaled, name), 1, NOW)
    assert outlook.next_attempt_at - NOW == timedelta(seconds=JIRA.min_backoff * 0.01)
    assert schedule_of(object(), name) == JIRA  # a queue that keeps no schedule of its own

"""The run page's waterfall, from a run's events: one bar per attempt, each queued, running and
waiting in order and without gaps, whatever the number and spacing of the retries."""

from __future__ import annotations

from datetime import timedelta

from hypothesis import given
from hypothesis import strategies as st

from chimera.console import waterfall
from shared.model import Event, RunStatus, StepStatus, StepSummary, utcnow
from tests.conftest import make_run

T0 = utcnow()


def _at(seconds: float):
    return T0 + timedelta(seconds=seconds)


def _events(run_id: str, gaps: list[tuple[float, float, float]], finished: bool):
    """A jira step dispatched at 1 s, each retry (queue wait, run, backoff), then the last
    attempt; and the summary the run keeps for it."""
    events = [
        Event(
            run_id=run_id,
            kind="step.dispatched",
            actor="orchestrator",
            at=_at(1),
            step_id="jira",
            detail={"tool": "create_jira_project", "generation": 1},
        )
    ]
    clock = 1.0
    for n, (wait, run, backoff) in enumerate(gaps, start=1):
        started = clock + wait
        failed = started + run
        clock = failed + backoff
        events.append(
            Event(
                run_id=run_id,
                kind="step.retry",
                actor="tool-jira",
                at=_at(failed),
                step_id="jira",
                detail={
                    "code": "unavailable",
                    "attempt": n,
                    "max_attempts": 40,
                    "next_attempt_at": _at(clock).isoformat(),
                    "gives_up_at": _at(clock + 600).isoformat(),
                    "started_at": _at(started).isoformat(),
                },
            )
        )
    end = clock + 0.5
    summary = StepSummary(
        step_id="jira",
        tool="create_jira_project",
        status=StepStatus.SUCCEEDED if finished else StepStatus.DISPATCHED,
        attempts=len(gaps) + 1 if finished else 0,
        finished_at=_at(end) if finished else None,
        latency_ms=400 if finished else None,
    )
    if finished:
        events.append(
            Event(
                run_id=run_id,
                kind="step.succeeded",
                actor="orchestrator",
                at=_at(end + 0.01),
                step_id="jira",
                detail={"attempts": len(gaps) + 1, "latency_ms": 400},
            )
        )
    return events, summary, end


gap = st.tuples(
    st.floats(0, 5, allow_nan=False), st.floats(0.001, 5, allow_nan=False), st.floats(0, 60)
)


@given(gaps=st.lists(gap, max_size=12), finished=st.booleans())
def test_each_attempt_is_one_bar_whose_segments_follow_each_other(gaps, finished):
    run = make_run(status=RunStatus.RUNNING, created_at=T0)
    events, summary, end = _events(run.run_id, gaps, finished)
    run = run.evolve(steps={"jira": summary})
    now = _at(end + 1)
    falls = waterfall.build(run, events, now)
    bars = [b for b in falls.bars if b.step_id == "jira"]
    assert len(bars) == len(gaps) + (1 if finished else 1 if now >= _at(end - 0.5) else 0)
    assert [b.attempt for b in bars[: len(gaps)]] == [str(n) for n in range(1, len(gaps) + 1)]
    for bar in bars:
        for before, after in zip(bar.segments, bar.segments[1:], strict=False):
            assert before.end == after.start  # no gap, no overlap inside an attempt
        assert all(s.end >= s.start for s in bar.segments)
        assert all(0 <= falls.left(s.start) <= 100 for s in bar.segments)
    for failed, following in zip(bars, bars[1:], strict=False):
        assert failed.segments[-1].kind in (waterfall.WAITING, waterfall.RUNNING)
        assert failed.end <= following.start + timedelta(milliseconds=1)
    if gaps:
        assert bars[0].segments[0].start == _at(1)  # from the dispatch
    if finished:
        assert bars[-1].outcome == "succeeded" and "jira" not in falls.outlooks
    elif gaps:
        assert falls.outlooks["jira"].attempt == len(gaps)


def test_a_step_still_out_after_a_retry_shows_the_outlook_and_waits_until_now():
    run = make_run(status=RunStatus.RUNNING, created_at=T0)
    events, summary, _ = _events(run.run_id, [(0.1, 0.2, 30.0)], finished=False)
    run = run.evolve(steps={"jira": summary})
    falls = waterfall.build(run, events, now=_at(10))
    (bar,) = falls.bars
    assert [s.kind for s in bar.segments] == ["queued", "running", "waiting"]
    assert bar.segments[-1].end == _at(10)
    assert "attempt 1/40 failed; next attempt in 21 s" in falls.outlooks["jira"].says(_at(10))

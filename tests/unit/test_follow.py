"""Following a run from the store: a live view on a terminal, one line per event elsewhere."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator

import pytest
from rich.console import Console

from chimera import render
from chimera.follow import Follower, NewEvents, settled
from shared.model import (
    Approval,
    Event,
    PlanStep,
    RunState,
    RunStatus,
    StepStatus,
    StepSummary,
    utcnow,
)
from shared.queues import QUEUES
from shared.retry_outlook import RetryOutlook
from tests.conftest import make_run
from tests.fakes import FakeStateStore

Move = Callable[[FakeStateStore, RunState], RunState]


def _event(run: RunState, kind: str, step_id: str | None = "jira", **detail: object) -> Event:
    return Event(run_id=run.run_id, kind=kind, actor="test", step_id=step_id, detail=detail)


def _step(status: StepStatus) -> dict[str, StepSummary]:
    return {"jira": StepSummary(step_id="jira", tool="create_jira_project", status=status)}


def _move(status: RunStatus, step: StepStatus, *events: tuple) -> Move:
    def move(store: FakeStateStore, run: RunState) -> RunState:
        moved = run.evolve(status=status, steps=_step(step))
        stored = store.transition(
            moved,
            expected_version=run.version,
            # A detail may be made when the move is (a retry's outlook counts from now).
            events=[
                _event(run, kind, **(detail() if callable(detail) else detail))
                for kind, detail in events
            ],
        )
        return stored

    return move


def _retry(attempt: int) -> tuple:
    def detail() -> dict[str, object]:
        outlook = RetryOutlook.after_failure(QUEUES["tool-jira"], attempt, utcnow())
        return {"code": "unavailable", "message": "Jira answered 503", **outlook.detail()}

    return "step.retry", detail


ONBOARDING = (
    _move(RunStatus.RUNNING, StepStatus.DISPATCHED, ("step.dispatched", {"tool": "jira"})),
    _move(RunStatus.RUNNING, StepStatus.DISPATCHED, _retry(1)),
    _move(RunStatus.RUNNING, StepStatus.DISPATCHED, _retry(2)),
    _move(
        RunStatus.SUCCEEDED,
        StepStatus.SUCCEEDED,
        ("step.succeeded", {"summary": "project ACME"}),
        ("run.succeeded", {"steps": 1}),
    ),
)


class AnotherProcess:
    """Stands for whoever moves the run (chimera dev): one move each time the follower
    sleeps between two reads of the store."""

    def __init__(self, store: FakeStateStore, run: RunState, moves: tuple[Move, ...]) -> None:
        self.store, self.run = store, run
        self.moves: Iterator[Move] = iter(moves)
        self.sleeps = 0

    def __call__(self, seconds: float) -> None:
        self.sleeps += 1
        move = next(self.moves, None)
        if move is not None:
            self.run = move(self.store, self.run)


def _started() -> tuple[FakeStateStore, RunState]:
    store = FakeStateStore()
    run = make_run(
        plan=(PlanStep(step_id="jira", tool="create_jira_project"),),
        steps=_step(StepStatus.PENDING),
    )
    stored, _ = store.create_run(run, events=[_event(run, "run.created", step_id=None)])
    return store, stored


def test_without_a_terminal_each_event_is_one_line_in_order_until_the_run_settles():
    store, run = _started()
    out = io.StringIO()
    mover = AnotherProcess(store, run, ONBOARDING)
    console = Console(file=out, width=80)
    followed = Follower(store, console, sleep=mover).follow(run.run_id)

    assert followed.status is RunStatus.SUCCEEDED
    events = store.events(run.run_id)
    assert out.getvalue().splitlines() == [render.event_line(e) for e in events]
    assert [line.split()[2] for line in out.getvalue().splitlines()] == [
        "run.created",
        "step.dispatched",
        "step.retry",
        "step.retry",
        "step.succeeded",
        "run.succeeded",
    ]
    assert "attempt 2/40 failed; next attempt in 2 s" in out.getvalue()


def test_on_a_terminal_the_live_view_says_when_the_next_attempt_comes_and_ends_settled():
    store, run = _started()
    out = io.StringIO()
    mover = AnotherProcess(store, run, ONBOARDING)
    console = Console(file=out, width=120, force_terminal=True, color_system=None)
    followed = Follower(store, console, sleep=mover, hint="Ctrl-C stops").follow(run.run_id)

    assert followed.status is RunStatus.SUCCEEDED and mover.sleeps == len(ONBOARDING)
    shown = " ".join(out.getvalue().split())
    # "next attempt in 1 s" as drawn at once; "now" on a machine that stalls.
    assert "attempt 1/40 failed; next attempt" in shown
    assert "39 left; gives up and parks the run" in shown
    assert "attempt 2/40 failed" in shown and "Ctrl-C stops" in shown
    assert "run.created" not in shown  # a view of the run, not a log of its events


def test_following_ends_at_once_when_the_run_is_already_settled_or_waits_for_a_person():
    store, run = _started()
    done = store.transition(run.evolve(status=RunStatus.PARKED), expected_version=run.version)
    mover = AnotherProcess(store, done, ())
    assert Follower(store, Console(file=io.StringIO()), sleep=mover).follow(run.run_id) == done
    assert mover.sleeps == 0
    waiting = done.evolve(
        status=RunStatus.WAITING,
        approval=Approval(step_id="email", status="waiting", subject="Welcome"),
    )
    assert settled(waiting)
    assert not settled(waiting.evolve(steps=_step(StepStatus.DISPATCHED)))


def test_following_gives_up_after_its_timeout_when_the_run_does_not_move():
    store, run = _started()
    mover = AnotherProcess(store, run, ())
    follower = Follower(store, Console(file=io.StringIO()), timeout_s=0.0, sleep=mover)
    assert follower.follow(run.run_id).status is RunStatus.PENDING


def test_an_unknown_run_cannot_be_followed():
    with pytest.raises(LookupError):
        Follower(FakeStateStore(), Console(file=io.StringIO())).follow("run-none")


def test_new_events_are_told_once_even_when_older_retries_are_folded_away():
    run = make_run()
    retries = [_event(run, "step.retry", attempt=n) for n in range(5)]
    new = NewEvents()
    assert new(retries[:3]) == retries[:3]
    summary = _event(run, "step.retries", count=3)
    # The store folded the first three into a summary: only the summary and the rest are new.
    assert new([summary, *retries[3:]]) == [summary, *retries[3:]]
    assert new([summary, *retries[3:]]) == []

"""Watchdogs for everything that can be lost: the start, each step, every repaired dispatch.

A run that can no longer move is parked with a reason, never left pending or running.
"""

from __future__ import annotations

import pytest

from orchestrator import core, service, tasks
from shared.local_queue import LocalTaskQueue
from shared.model import OrchestratorTask, RunStatus, StepOutcome, Task, utcnow
from shared.runtime import Runtime
from shared.settings import Settings
from shared.sqlite_db import SqliteDatabase
from shared.sqlite_state import SqliteStateStore
from tests.conftest import make_request, make_run
from tests.fakes import FakeStateStore, FakeTaskQueue


@pytest.fixture
def rt() -> Runtime:
    queue = FakeTaskQueue()
    return Runtime(Settings(agent_reasoning=False), FakeStateStore(queue), queue)


def deliver(rt: Runtime, name: str) -> str:
    """Hand one queued orchestrator task to the orchestrator, as its queue would."""
    task = rt.queue.tasks.pop(name)
    return service.take(rt, OrchestratorTask.model_validate(task.payload))


def test_a_run_whose_start_task_was_lost_is_parked_and_resuming_starts_it(rt):
    run, _ = service.submit(rt, make_request(), source="test")
    del rt.queue.tasks[f"{run.run_id}-start"]  # lost: its attempts ran out, or it never left

    assert deliver(rt, f"{run.run_id}-start-watchdog") == "parked"
    parked = rt.store.load(run.run_id)
    assert parked.status is RunStatus.PARKED and "no_start" in parked.reason
    assert [e.kind for e in rt.store.events(run.run_id)][-1] == "run.parked"

    service.resume(rt, run.run_id)
    assert rt.store.load(run.run_id).status is RunStatus.PENDING
    restart = [t.name for t in rt.queue.on("orchestrator") if t.name.endswith("-start-v3")]
    assert restart, "a fresh start task, under a name the queue has not seen"
    assert f"{restart[0]}-watchdog" in rt.queue.tasks  # watched like the first one
    assert deliver(rt, restart[0]) == "running"


def test_the_start_watchdog_is_cancelled_once_the_run_started_and_would_do_nothing(rt):
    run, _ = service.submit(rt, make_request(), source="test")
    watchdog = rt.queue.tasks[f"{run.run_id}-start-watchdog"]
    assert deliver(rt, f"{run.run_id}-start") == "running"
    assert rt.queue.cancelled == [watchdog.name] and watchdog.name not in rt.queue.tasks
    # One the queue could not cancel (it was already running) finds nothing to do.
    rt.queue.enqueue(watchdog)
    assert deliver(rt, watchdog.name) == "no_change"
    assert rt.store.load(run.run_id).status is RunStatus.RUNNING


def finish_step(rt: Runtime, run_id: str, step_id: str, generation: int = 1) -> str:
    """The step's tool records its outcome and reports; the report's delivery."""
    rt.store.record_outcome(
        StepOutcome(
            run_id=run_id,
            step_id=step_id,
            tool=rt.store.load(run_id).steps[step_id].tool,
            ok=True,
            generation=generation,
        )
    )
    rt.queue.tasks.pop(f"{run_id}-{step_id}-g{generation}")  # the tool took its task
    return service.take(rt, OrchestratorTask(run_id=run_id, kind="step_finished", step_id=step_id))


def test_each_step_watchdog_is_cancelled_by_the_decision_that_ends_its_step():
    queue = FakeTaskQueue()
    rt = Runtime(Settings(agent_reasoning=False, verify_steps=False), FakeStateStore(queue), queue)
    run, _ = service.submit(rt, make_request(), source="test")
    deliver(rt, f"{run.run_id}-start")
    for step_id in [s.step_id for s in rt.store.load(run.run_id).plan]:
        assert f"{run.run_id}-{step_id}-g1-watchdog" in rt.queue.tasks
        finish_step(rt, run.run_id, step_id)
        assert f"{run.run_id}-{step_id}-g1-watchdog" not in rt.queue.tasks
    assert rt.store.load(run.run_id).status is RunStatus.SUCCEEDED
    # Nothing is left to wake the orchestrator for a finished run.
    assert rt.queue.on("orchestrator") == []


def test_the_sqlite_store_drops_moot_watchdogs_in_the_transition_itself(tmp_path):
    db = SqliteDatabase(tmp_path / "state.db")
    queue = LocalTaskQueue(db)
    rt = Runtime(Settings(agent_reasoning=False), SqliteStateStore(db, queue), queue)
    run, _ = service.submit(rt, make_request(), source="test")
    start = OrchestratorTask(run_id=run.run_id, kind="start")
    assert service.take(rt, start) == "running"
    assert queue.get(f"{run.run_id}-start-watchdog") is None
    assert queue.get(f"{run.run_id}-enrich-g1-watchdog")["state"] == "queued"
    rt.store.record_outcome(
        StepOutcome(run_id=run.run_id, step_id="enrich", tool="enrich_company", ok=True)
    )
    finished = OrchestratorTask(run_id=run.run_id, kind="step_finished", step_id="enrich")
    assert service.take(rt, finished) == "running"
    assert queue.get(f"{run.run_id}-enrich-g1-watchdog") is None
    assert queue.get(f"{run.run_id}-jira-g1-watchdog")["state"] == "queued"


def test_a_repaired_dispatch_gets_its_watchdog_again(rt):
    run, _ = service.submit(rt, make_request(), source="test")
    deliver(rt, f"{run.run_id}-start")
    # A crash between the commit and the enqueue lost both the dispatch and its watchdog.
    for name in (f"{run.run_id}-enrich-g1", f"{run.run_id}-enrich-g1-watchdog"):
        del rt.queue.tasks[name]
    rt.queue.enqueue(tasks.start_task(run.run_id))  # any redelivered task repairs the run

    assert deliver(rt, f"{run.run_id}-start") == "no_change"
    assert f"{run.run_id}-enrich-g1" in rt.queue.tasks
    assert f"{run.run_id}-enrich-g1-watchdog" in rt.queue.tasks
    # If the repaired dispatch is lost too, its watchdog still parks the run.
    del rt.queue.tasks[f"{run.run_id}-enrich-g1"]
    assert deliver(rt, f"{run.run_id}-enrich-g1-watchdog") == "parked"
    assert "no_report" in rt.store.load(run.run_id).reason


class CrashAfterCommit(FakeTaskQueue):
    """A queue beside the store whose instance dies right after the store commits: every
    task that is due now is lost; only what was enqueued earlier survives."""

    crashing = True

    def enqueue(self, task: Task) -> bool:
        if self.crashing and task.schedule_time is None:
            raise SystemExit("instance died")
        return super().enqueue(task)


def test_watchdogs_survive_a_crash_right_after_the_commit_they_watch(tmp_path):
    queue = CrashAfterCommit()
    store = SqliteStateStore(SqliteDatabase(tmp_path / "state.db"), queue)
    rt = Runtime(Settings(agent_reasoning=False), store, queue)

    with pytest.raises(SystemExit):
        service.submit(rt, make_request(), source="test")
    run_id = make_request().run_id()
    assert store.load(run_id).status is RunStatus.PENDING
    assert [t.name for t in queue.on("orchestrator")] == [f"{run_id}-start-watchdog"]
    assert deliver(rt, f"{run_id}-start-watchdog") == "parked"

    # Resumed, it starts; the start's dispatches are lost in another crash, their watchdogs not.
    queue.crashing = False
    service.resume(rt, run_id)
    start = next(t for t in queue.on("orchestrator") if t.name.endswith("-start-v3"))
    queue.crashing = True
    with pytest.raises(SystemExit):
        deliver(rt, start.name)
    queue.crashing = False
    assert store.load(run_id).status is RunStatus.RUNNING
    assert f"{run_id}-enrich-g1-watchdog" in queue.tasks
    assert deliver(rt, f"{run_id}-enrich-g1-watchdog") == "parked"
    assert "no_report" in store.load(run_id).reason


def test_a_run_parked_before_it_started_resumes_as_pending():
    run = make_run().evolve(status=RunStatus.PARKED, reason="not started")
    decision = core.resume(run, {}, utcnow())
    assert decision.run.status is RunStatus.PENDING and decision.run.reason == ""
    assert [e.kind for e in decision.events] == ["run.resumed"]


def test_the_start_watchdog_wakes_after_the_start_queue_would_have_given_up():
    now = utcnow()
    task = tasks.start_watchdog_task(tasks.start_task("r"), now, dispatch_deadline=30)
    assert task.queue == "orchestrator" and task.name == "r-start-watchdog"
    assert OrchestratorTask.model_validate(task.payload).kind == "watchdog"
    # The orchestrator queue: 4 attempts of up to 30 s, its backoffs, and a margin.
    assert (task.schedule_time - now).total_seconds() > 4 * 30 + 60

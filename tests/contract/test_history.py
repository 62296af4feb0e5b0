"""Bounded history, on every StateStore adapter that can run here: pruning finished runs with
their records, and folding a long streak of retries into one event per step."""

from __future__ import annotations

import tempfile
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from shared.history import RETRIES_FOLDED, RETRY, prunable, prune_finished
from shared.local_queue import DONE, LocalTaskQueue
from shared.model import Event, RunState, RunStatus, StepOutcome, Task, utcnow
from shared.sqlite_db import SqliteDatabase
from shared.sqlite_state import SqliteStateStore
from shared.state import Pruned, StateStore
from tests.conftest import make_request, make_run
from tests.emulators import firestore_client, fresh_project
from tests.fakes import FakeStateStore, FakeTaskQueue

CAP = 20
moments = st.datetimes(
    min_value=datetime(2029, 1, 1), max_value=datetime(2031, 1, 1), timezones=st.just(UTC)
)


class Finished:
    """Marks tasks done in the store's own queue, where it has one (the local queue)."""

    def __init__(self, queue: LocalTaskQueue | None = None) -> None:
        self.queue = queue

    def task(self, run_id: str, suffix: str, *, done: bool) -> None:
        if self.queue is None:
            return
        name = f"{run_id}-{suffix}"
        self.queue.enqueue(Task(queue="orchestrator", name=name, payload={"run_id": run_id}))
        if done:
            with self.queue.db.transaction() as conn:
                conn.execute("UPDATE tasks SET state = ? WHERE name = ?", (DONE, name))

    def left(self, run_id: str) -> list[str]:
        if self.queue is None:
            return []
        rows = self.queue.db.connection().execute(
            "SELECT name FROM tasks WHERE name LIKE ? ORDER BY name", (run_id + "-%",)
        )
        return [r["name"] for r in rows]


def _fake(tmp_path) -> tuple[StateStore, Finished]:
    return FakeStateStore(event_cap=CAP), Finished()


def _sqlite(tmp_path) -> tuple[StateStore, Finished]:
    db = SqliteDatabase(tmp_path / "state.db")
    queue = LocalTaskQueue(db)
    return SqliteStateStore(db, queue, event_cap=CAP), Finished(queue)


def _firestore(tmp_path) -> tuple[StateStore, Finished]:
    from shared.firestore_state import FirestoreStateStore

    client = firestore_client(fresh_project())
    return FirestoreStateStore(client, FakeTaskQueue(), event_cap=CAP), Finished()


ADAPTERS: dict[str, Callable] = {"fake": _fake, "sqlite": _sqlite, "firestore": _firestore}


@pytest.fixture(params=sorted(ADAPTERS))
def sut(request, tmp_path) -> Iterator[tuple[StateStore, Finished]]:
    yield ADAPTERS[request.param](tmp_path)


def _run_at(store: StateStore, request_id: str, status: RunStatus) -> RunState:
    """A run with a trail, a ledger record and (where there is a queue) tasks, at `status`."""
    run, _ = store.create_run(
        make_run(request=make_request(request_id=request_id)),
        events=[Event(run_id=make_request(request_id=request_id).run_id(), kind="a", actor="t")],
    )
    store.append_event(Event(run_id=run.run_id, kind="b", actor="t", step_id="jira"))
    store.record_outcome(StepOutcome(run_id=run.run_id, step_id="jira", tool="t", ok=True))
    if status is not RunStatus.PENDING:
        run = store.transition(run.evolve(status=status), expected_version=1)
    return run


def _after(moment: datetime) -> datetime:
    """A cutoff just after `moment`, waited out, so every later change is past it."""
    cutoff = moment + timedelta(microseconds=1)
    while utcnow() <= cutoff:
        pass
    return cutoff


def test_prune_takes_finished_runs_before_the_cutoff_with_their_records_and_nothing_else(sut):
    store, finished = sut
    old = {s: _run_at(store, f"old-{s.value}", s) for s in RunStatus}
    for run in old.values():
        finished.task(run.run_id, "start", done=True)
        finished.task(run.run_id, "watchdog", done=False)  # queued: never pruned
    cutoff = _after(max(r.updated_at for r in old.values()))
    new = {s: _run_at(store, f"new-{s.value}", s) for s in RunStatus}
    gone = {old[RunStatus.SUCCEEDED].run_id, old[RunStatus.CANCELLED].run_id}

    preview = store.prune(cutoff, dry_run=True)
    assert set(preview.run_ids) == gone
    assert (preview.events, preview.ledger) == (4, 2)
    assert preview.tasks == (2 if finished.queue else 0)
    assert all(store.load(r) is not None for r in gone)  # a dry run deletes nothing

    assert store.prune(cutoff) == preview
    for run in [*old.values(), *new.values()]:
        kept = run.run_id not in gone
        assert (store.load(run.run_id) is not None) is kept, run.status
        assert bool(store.events(run.run_id)) is kept
        assert bool(store.outcomes(run.run_id)) is kept
    for run_id in gone:
        assert finished.left(run_id) == ([f"{run_id}-watchdog"] if finished.queue else [])
    assert store.prune(cutoff) == Pruned()


def test_prune_goes_oldest_first_and_stops_at_the_limit_when_given_one(sut):
    store, _ = sut
    runs = [_run_at(store, f"r{i}", RunStatus.SUCCEEDED) for i in range(5)]
    cutoff = _after(runs[-1].updated_at)
    first = store.prune(cutoff, limit=2)
    assert first.run_ids == (runs[0].run_id, runs[1].run_id)
    assert store.prune(cutoff, limit=2, dry_run=True).run_ids == (runs[2].run_id, runs[3].run_id)
    assert store.prune(cutoff, limit=10).run_ids == tuple(r.run_id for r in runs[2:])


def _retry(run_id: str, step_id: str, attempt: int, code: str) -> Event:
    return Event(
        run_id=run_id,
        kind=RETRY,
        actor=f"tool-{step_id}",
        step_id=step_id,
        detail={"attempt": attempt, "code": code, "message": "try later", "retryable": True},
    )


def _retries_seen(events: list[Event]) -> dict[str, Counter]:
    """Per step, the retries the log accounts for, by code: folded or still there."""
    seen: dict[str, Counter] = {}
    for e in events:
        codes = seen.setdefault(e.step_id or "", Counter())
        if e.kind == RETRY:
            codes[e.detail["code"]] += 1
        elif e.kind == RETRIES_FOLDED:
            codes.update(e.detail["codes"])
    return seen


def test_retries_past_the_cap_fold_into_one_summary_per_step_when_a_run_retries_long(sut):
    store, _ = sut
    run, _ = store.create_run(
        make_run(), events=[Event(run_id=make_run().run_id, kind="run.created", actor="t")]
    )
    appended: dict[str, Counter] = {"jira": Counter(), "slack": Counter()}
    for i in range(1, 61):
        step = "jira" if i % 3 else "slack"
        code = ("unavailable", "rate_limited", "timeout")[i % 3 if step == "jira" else i % 2]
        store.append_event(_retry(run.run_id, step, i, code))
        appended[step][code] += 1
        if i % 20 == 0:
            store.append_event(
                Event(run_id=run.run_id, kind="step.skipped", actor="t", step_id=step)
            )

    events = store.events(run.run_id)
    assert len(events) <= CAP + 1
    assert {s: +c for s, c in _retries_seen(events).items() if c} == appended
    kinds = [e.kind for e in events]
    assert kinds[0] == "run.created" and kinds.count("step.skipped") == 3
    for step in appended:
        own = [e for e in events if e.step_id == step and e.kind in (RETRY, RETRIES_FOLDED)]
        summaries = [e for e in own if e.kind == RETRIES_FOLDED]
        assert len(summaries) == 1 and own[0] is summaries[0], step
        assert own[-1].kind == RETRY  # the newest retry stays as it was, for the live view
        # The summary holds the oldest retries; those after it are as they were appended.
        attempts = [i for i in range(1, 61) if (i % 3 != 0) == (step == "jira")]
        summary = summaries[0].detail
        folded = attempts.index(summary["last_attempt"]) + 1
        assert summary["first_attempt"] == attempts[0] and summary["count"] == folded
        assert [e.detail["attempt"] for e in own[1:]] == attempts[folded:]
        assert summary["first_at"] <= summary["last_at"] < own[1].at.isoformat()


def test_folding_counts_each_retry_once_when_appends_race(sut):
    store, _ = sut
    run, _ = store.create_run(make_run())
    barrier = threading.Barrier(4)

    def append(worker: int) -> None:
        barrier.wait()
        for i in range(10):
            store.append_event(_retry(run.run_id, "jira", worker * 100 + i, f"code{worker}"))

    threads = [threading.Thread(target=append, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    store.append_event(_retry(run.run_id, "jira", 999, "last"))
    events = store.events(run.run_id)
    assert _retries_seen(events)["jira"] == Counter(
        {**{f"code{w}": 10 for w in range(4)}, "last": 1}
    )
    kinds = [e.kind for e in events]
    assert kinds[0] == RETRIES_FOLDED and kinds.count(RETRIES_FOLDED) == 1
    assert len(events) <= CAP + 1 and events[-1].detail["code"] == "last"


@st.composite
def aged_runs(draw) -> tuple[list[tuple[RunStatus, datetime]], datetime]:
    runs = draw(st.lists(st.tuples(st.sampled_from(RunStatus), moments), max_size=12))
    # The cutoff is often exactly a run's time: "before" must exclude it.
    times = [t for _, t in runs]
    cutoff = draw(st.one_of(moments, st.sampled_from(times)) if times else moments)
    return runs, cutoff


def _sqlite_with(runs: list[RunState], home: Path) -> SqliteStateStore:
    db = SqliteDatabase(home / "state.db")
    store = SqliteStateStore(db, LocalTaskQueue(db))
    for run in runs:
        stored, _ = store.create_run(run)
        store.transition(stored.evolve(status=run.status), expected_version=1)
        with db.transaction() as conn:  # a run last changed then, as the store writes times
            conn.execute(
                "UPDATE runs SET updated_at = ? WHERE run_id = ?",
                (run.updated_at.isoformat(), run.run_id),
            )
    return store


def _fake_with(runs: list[RunState], home: Path) -> FakeStateStore:
    store = FakeStateStore()
    store.runs = {run.run_id: run for run in runs}
    return store


# Ages set directly, so this runs where that is cheap; the suite above holds Firestore to it.
@pytest.mark.parametrize("build", [_fake_with, _sqlite_with], ids=["fake", "sqlite"])
@hypothesis_settings(max_examples=40)
@given(aged=aged_runs())
def test_stores_prune_exactly_the_prunable_runs_when_statuses_and_ages_vary(build, aged):
    statuses_and_times, cutoff = aged
    runs = [
        make_run(request=make_request(request_id=f"r{i}"), status=status, updated_at=at)
        for i, (status, at) in enumerate(statuses_and_times)
    ]
    expected = sorted(
        (r for r in runs if prunable(r, cutoff)), key=lambda r: (r.updated_at, r.run_id)
    )
    with tempfile.TemporaryDirectory() as home:
        store = build(runs, Path(home))
        assert store.prune(cutoff, dry_run=True).run_ids == tuple(r.run_id for r in expected)
        pruned = prune_finished(store, cutoff, batch=2)
        assert sorted(pruned.run_ids) == sorted(r.run_id for r in expected)
        for run in runs:
            assert (store.load(run.run_id) is None) is prunable(run, cutoff)

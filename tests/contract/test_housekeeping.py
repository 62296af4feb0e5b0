"""The local dispatcher's housekeeping: finished runs past the retention pruned in batches
between deliveries, done tasks forgotten after the dedup window, deliveries never held up."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

from shared.local_dispatcher import Housekeeping, LocalDispatcher
from shared.local_queue import DEDUP_WINDOW_S, DONE, LocalTaskQueue
from shared.local_targets import Delivery, DeliveryResult
from shared.model import RunStatus, Task
from shared.queues import QueueConfig
from shared.run_filter import RunFilter
from shared.sqlite_db import SqliteDatabase
from shared.sqlite_state import SqliteStateStore
from shared.task_signing import TaskSigner
from tests.conftest import make_request, make_run

RETENTION = timedelta(days=30)
WORK = {
    "work": QueueConfig(
        "work",
        "work",
        max_attempts=3,
        min_backoff=0.01,
        max_backoff=0.05,
        max_doublings=2,
        max_dispatches_per_second=1000,
        max_concurrent_dispatches=2,
    )
}


def _local(tmp_path) -> tuple[SqliteStateStore, LocalTaskQueue]:
    db = SqliteDatabase(tmp_path / "chimera.db")
    queue = LocalTaskQueue(db, WORK)
    return SqliteStateStore(db, queue), queue


def _runs(store: SqliteStateStore, statuses: list[RunStatus]) -> list[str]:
    ids = []
    for status in statuses:
        request = make_request(request_id=f"h{len(store.list_runs(RunFilter(limit=1000)))}")
        run, _ = store.create_run(make_run(request=request))
        store.transition(run.evolve(status=status), expected_version=1)
        ids.append(run.run_id)
    return ids


def _in_days(days: float):
    return lambda: time.time() + days * 86400


def test_housekeeping_prunes_a_batch_per_turn_until_caught_up_when_runs_are_past_retention(
    tmp_path,
):
    store, queue = _local(tmp_path)
    kept = _runs(store, [RunStatus.PARKED, RunStatus.WAITING, RunStatus.RUNNING])
    done = _runs(store, [RunStatus.SUCCEEDED] * 4 + [RunStatus.CANCELLED])
    housekeeping = Housekeeping(
        queue, store, retention=RETENTION, batch=2, every_s=3600, clock=_in_days(31)
    )
    batches = [housekeeping.tick() for _ in range(4)]
    assert [len(b.run_ids) for b in batches[:3]] == [2, 2, 1]
    assert batches[3] is None  # caught up: not due again for an hour
    assert sorted(r for b in batches[:3] for r in b.run_ids) == sorted(done)
    assert all(store.load(r) is None for r in done)
    assert all(store.load(r) is not None for r in kept)


def test_housekeeping_keeps_finished_runs_younger_than_the_retention_or_when_it_is_off(
    tmp_path,
):
    store, queue = _local(tmp_path)
    done = _runs(store, [RunStatus.SUCCEEDED])
    assert not Housekeeping(queue, store, retention=RETENTION, clock=_in_days(29)).run_once()
    assert not Housekeeping(queue, store, retention=None, clock=_in_days(9999)).run_once()
    assert store.load(done[0]) is not None


def test_done_tasks_are_forgotten_once_their_names_need_no_reserving(tmp_path):
    store, queue = _local(tmp_path)
    for name in ("t-done", "t-queued"):
        queue.enqueue(Task(queue="work", name=name, payload={}))
    with queue.db.transaction() as conn:
        conn.execute(
            "UPDATE tasks SET state = ?, finished_at = ? WHERE name = 't-done'",
            (DONE, time.time()),
        )
    Housekeeping(queue, clock=lambda: time.time() + DEDUP_WINDOW_S - 60).run_once()
    assert queue.get("t-done") is not None  # a redelivery inside the window still dedupes
    Housekeeping(queue, clock=lambda: time.time() + DEDUP_WINDOW_S + 60).run_once()
    assert queue.get("t-done") is None and queue.get("t-queued") is not None


class Target:
    def __init__(self) -> None:
        self.delivered = threading.Event()

    def __call__(self, delivery: Delivery) -> DeliveryResult:
        self.delivered.set()
        return DeliveryResult(200)


def _until(condition, timeout: float = 20) -> bool:
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            return False
        time.sleep(0.01)
    return True


@contextmanager
def _delivering(queue, target, housekeeping: Housekeeping) -> Iterator[None]:  # noqa: ANN001
    """A dispatcher with `housekeeping` running while one task is delivered, then after it."""
    dispatcher = LocalDispatcher(
        queue,
        {"work": target},
        poll_interval=0.01,
        housekeeping=housekeeping,
        signer=TaskSigner(b"a test key of thirty-two bytes!!"),
    ).start()
    try:
        queue.enqueue(Task(queue="work", name="t-1", payload={}))
        assert target.delivered.wait(20)
        yield
    finally:
        dispatcher.stop()


def test_the_dispatcher_prunes_between_deliveries_when_given_housekeeping(tmp_path):
    store, queue = _local(tmp_path)
    done = _runs(store, [RunStatus.SUCCEEDED] * 3)
    target = Target()
    housekeeping = Housekeeping(
        queue, store, retention=RETENTION, batch=1, every_s=0.01, clock=_in_days(31)
    )
    with _delivering(queue, target, housekeeping):
        assert _until(lambda: all(store.load(r) is None for r in done))


class BrokenStore:
    """A store whose pruning fails: housekeeping must not take deliveries down with it."""

    def __init__(self) -> None:
        self.attempts = 0

    def prune(self, *args, **kwargs):
        self.attempts += 1
        raise RuntimeError("disk on fire")


def test_deliveries_go_on_when_housekeeping_fails(tmp_path):
    _, queue = _local(tmp_path)
    broken, target = BrokenStore(), Target()
    housekeeping = Housekeeping(queue, broken, retention=RETENTION, every_s=0.01)  # type: ignore[arg-type]
    assert housekeeping.tick() is None and broken.attempts == 1
    with _delivering(queue, target, housekeeping):
        assert _until(lambda: broken.attempts > 1)  # and it keeps trying

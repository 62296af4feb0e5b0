"""The TaskQueue contract, and the local dispatcher's Cloud Tasks semantics."""

from __future__ import annotations

import dataclasses
import threading
import time
from datetime import timedelta

import pytest

from shared.local_dispatcher import LocalDispatcher
from shared.local_queue import DEAD, DONE, LEASED, LocalTaskQueue
from shared.local_targets import Delivery, DeliveryResult
from shared.model import Task, utcnow
from shared.queues import QueueConfig
from shared.sqlite_db import SqliteDatabase
from shared.task_queue import TaskRef
from shared.task_signing import TaskSigner
from tests.fakes import FakeTaskQueue

SIGNER = TaskSigner(b"contract-test-key-of-32-bytes-at-least")
FAST = {
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


@pytest.fixture(params=["fake", "local"])
def queue(request, tmp_path):
    if request.param == "fake":
        return FakeTaskQueue()
    return LocalTaskQueue(SqliteDatabase(tmp_path / "q.db"), FAST)


def test_enqueue_is_a_no_op_when_the_name_was_taken(queue):
    task = Task(queue="work", name="t-1", payload={"n": 1})
    assert queue.enqueue(task) is True
    assert queue.enqueue(task.model_copy(update={"payload": {"n": 2}})) is False


def test_cancel_drops_a_waiting_task_once_and_nothing_else(queue):
    later = utcnow() + timedelta(hours=1)
    queue.enqueue(Task(queue="work", name="watch-1", payload={}, schedule_time=later))
    queue.enqueue(Task(queue="work", name="watch-2", payload={}, schedule_time=later))
    assert queue.cancel(TaskRef("work", "watch-1")) is True
    assert queue.cancel(TaskRef("work", "watch-1")) is False  # gone already
    assert queue.cancel(TaskRef("work", "unknown")) is False
    assert queue.cancel(TaskRef("other", "watch-2")) is False  # another queue's name
    # The other task still waits.
    assert queue.enqueue(Task(queue="work", name="watch-2", payload={})) is False


def test_a_leased_task_is_not_cancelled(tmp_path):
    queue = _local(tmp_path)
    queue.enqueue(Task(queue="work", name="running", payload={}))
    queue.db.connection().execute("UPDATE tasks SET state = ? WHERE name = 'running'", (LEASED,))
    assert queue.cancel(TaskRef("work", "running")) is False
    assert queue.get("running")["state"] == LEASED


class Recorder:
    """A target that answers from a script and records what it received."""

    def __init__(self, *statuses: int, headers: dict[str, str] | None = None, block=None):
        self.statuses = list(statuses)
        self.headers = headers or {}
        self.deliveries: list[Delivery] = []
        self.block = block
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()

    def __call__(self, delivery: Delivery) -> DeliveryResult:
        with self._lock:
            self.deliveries.append(delivery)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        if self.block:
            self.block.wait(5)
        with self._lock:
            self.in_flight -= 1
            status = self.statuses.pop(0) if self.statuses else 200
        return DeliveryResult(status, self.headers)


def _local(tmp_path) -> LocalTaskQueue:
    return LocalTaskQueue(SqliteDatabase(tmp_path / "q.db"), FAST)


def _wait(predicate, timeout=5.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def test_dispatcher_delivers_with_cloud_tasks_headers(tmp_path):
    q = _local(tmp_path)
    target = Recorder(200)
    q.enqueue(Task(queue="work", name="t-1", payload={"hello": "world"}))
    d = LocalDispatcher(q, {"work": target}, poll_interval=0.01, signer=SIGNER).start()
    try:
        assert _wait(lambda: q.get("t-1")["state"] == DONE)
    finally:
        d.stop()
    delivery = target.deliveries[0]
    assert delivery.body == b'{"hello": "world"}'
    assert delivery.headers["X-CloudTasks-QueueName"] == "work"
    assert delivery.headers["X-CloudTasks-TaskName"] == "t-1"
    assert delivery.headers["X-CloudTasks-TaskRetryCount"] == "0"
    assert delivery.headers["X-CloudTasks-TaskExecutionCount"] == "0"


def test_failed_delivery_is_retried_until_it_succeeds(tmp_path):
    q = _local(tmp_path)
    target = Recorder(503, 500, 200)
    q.enqueue(Task(queue="work", name="t-1", payload={}))
    d = LocalDispatcher(q, {"work": target}, poll_interval=0.01, signer=SIGNER).start()
    try:
        assert _wait(lambda: q.get("t-1")["state"] == DONE)
    finally:
        d.stop()
    retries = [x.headers["X-CloudTasks-TaskRetryCount"] for x in target.deliveries]
    assert retries == ["0", "1", "2"]
    assert q.get("t-1")["execution_count"] == 3


def test_task_is_dead_when_max_attempts_are_spent(tmp_path):
    q = _local(tmp_path)
    q.enqueue(Task(queue="work", name="t-1", payload={}))
    d = LocalDispatcher(
        q, {"work": Recorder(500, 500, 500, 500)}, poll_interval=0.01, signer=SIGNER
    ).start()
    try:
        assert _wait(lambda: q.get("t-1")["state"] == DEAD)
    finally:
        d.stop()
    row = q.get("t-1")
    assert row["retry_count"] == 3 and row["last_status"] == 500
    assert [t["name"] for t in q.dead()] == ["t-1"]


def test_retry_after_is_honoured_when_rate_limited(tmp_path):
    q = _local(tmp_path)
    q.enqueue(Task(queue="work", name="t-1", payload={}))
    target = Recorder(429, headers={"Retry-After": "30"})
    d = LocalDispatcher(q, {"work": target}, poll_interval=0.01, signer=SIGNER).start()
    try:
        assert _wait(lambda: q.get("t-1")["retry_count"] == 1)
        failed_at = time.time()
    finally:
        d.stop()
    row = q.get("t-1")
    assert row["state"] == "queued" and row["last_status"] == 429
    # Backoff alone would be 10 ms; the vendor asked for 30 s.
    assert row["due_at"] >= failed_at + 29
    assert len(target.deliveries) == 1


def test_concurrency_is_bounded_per_queue(tmp_path):
    q = _local(tmp_path)
    for i in range(6):
        q.enqueue(Task(queue="work", name=f"t-{i}", payload={}))
    release = threading.Event()
    target = Recorder(block=release)
    d = LocalDispatcher(q, {"work": target}, poll_interval=0.01, signer=SIGNER).start()
    try:
        assert _wait(lambda: target.in_flight == 2)
        time.sleep(0.1)  # give a broken limit the chance to over-dispatch
        assert target.max_in_flight == 2
        release.set()
        assert _wait(lambda: q.pending() == 0)
    finally:
        release.set()
        d.stop()
    assert len(target.deliveries) == 6


def test_scheduled_task_waits_for_its_time(tmp_path):
    q = _local(tmp_path)
    q.enqueue(
        Task(queue="work", name="later", payload={}, schedule_time=utcnow() + timedelta(hours=1))
    )
    target = Recorder()
    d = LocalDispatcher(q, {"work": target}, poll_interval=0.01, signer=SIGNER)
    assert d.dispatch_due() == 0
    assert target.deliveries == []


def test_task_survives_a_restart_when_enqueued_before(tmp_path):
    _local(tmp_path).enqueue(Task(queue="work", name="t-1", payload={}))
    q = _local(tmp_path)  # a new process, the same file
    d = LocalDispatcher(q, {"work": Recorder()}, poll_interval=0.01, signer=SIGNER).start()
    try:
        assert _wait(lambda: q.get("t-1")["state"] == DONE)
    finally:
        d.stop()


def test_lease_of_a_dead_dispatcher_is_delivered_again(tmp_path):
    q = _local(tmp_path)
    q.enqueue(Task(queue="work", name="t-1", payload={}))
    with q.db.transaction() as conn:  # leased by a dispatcher that was kill -9ed
        conn.execute(
            "UPDATE tasks SET state = ?, lease_owner = 'gone', lease_until = ?",
            (LEASED, time.time() + 3600),
        )
    target = Recorder()
    d = LocalDispatcher(q, {"work": target}, poll_interval=0.01, signer=SIGNER).start()
    try:
        assert _wait(lambda: q.get("t-1")["state"] == DONE)
    finally:
        d.stop()
    assert target.deliveries[0].headers["X-CloudTasks-TaskRetryCount"] == "1"


def test_backoff_follows_cloud_tasks_schedule():
    config = QueueConfig(
        "q",
        "q",
        100,
        min_backoff=10,
        max_backoff=300,
        max_doublings=3,
        max_dispatches_per_second=1,
        max_concurrent_dispatches=1,
    )
    # The example in Cloud Tasks' RetryConfig documentation.
    assert [config.backoff(n) for n in range(1, 9)] == [10, 20, 40, 80, 160, 240, 300, 300]


def test_local_queue_stats_count_waiting_and_leased_tasks_and_the_lag_of_due_ones(tmp_path):
    queues = {**FAST, "other": dataclasses.replace(FAST["work"], name="other")}
    local = LocalTaskQueue(SqliteDatabase(tmp_path / "q.db"), queues)
    assert {s.queue: (s.depth, s.oldest_age_s, s.scheduled) for s in local.stats()} == {
        "work": (0, None, 0),
        "other": (0, None, 0),
    }
    later = utcnow() + timedelta(hours=1)
    for n in range(3):
        local.enqueue(Task(queue="work", name=f"t{n}", payload={}))
    local.enqueue(Task(queue="work", name="watchdog", payload={}, schedule_time=later))
    local.enqueue(Task(queue="other", name="backoff", payload={}, schedule_time=later))
    with local.db.transaction() as conn:
        conn.execute("UPDATE tasks SET state = ? WHERE name = 't0'", (LEASED,))
        conn.execute("UPDATE tasks SET state = ? WHERE name = 't1'", (DONE,))
        conn.execute("UPDATE tasks SET due_at = due_at - 60 WHERE name = 't2'")
    stats = {s.queue: s for s in local.stats()}
    # t0 (being delivered), t2 (due a minute ago) and the watchdog wait; t1 is done.
    assert (stats["work"].depth, stats["work"].scheduled) == (3, 1)
    assert stats["work"].oldest_age_s is not None and stats["work"].oldest_age_s >= 60
    # A task scheduled for later is in the depth, and no lag: nothing there is due.
    assert (stats["other"].depth, stats["other"].scheduled) == (1, 1)
    assert stats["other"].oldest_age_s is None


TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def test_each_delivery_carries_the_tasks_trace_headers_beneath_the_queues_own(tmp_path):
    q = _local(tmp_path)
    target = Recorder(503, 200)
    # A task's header never overrides what the queue says of the delivery.
    headers = {"traceparent": TRACEPARENT, "X-CloudTasks-TaskRetryCount": "99"}
    q.enqueue(Task(queue="work", name="t-1", payload={}, headers=headers))
    d = LocalDispatcher(q, {"work": target}, poll_interval=0.01, signer=SIGNER).start()
    try:
        assert _wait(lambda: q.get("t-1")["state"] == DONE)
    finally:
        d.stop()
    assert [x.headers["traceparent"] for x in target.deliveries] == [TRACEPARENT] * 2
    assert [x.headers["X-CloudTasks-TaskRetryCount"] for x in target.deliveries] == ["0", "1"]


OLD_SCHEMA = """
CREATE TABLE tasks (
    name TEXT PRIMARY KEY,
    queue TEXT NOT NULL,
    payload TEXT NOT NULL,
    due_at REAL NOT NULL,
    state TEXT NOT NULL,
    retry_count INTEGER NOT NULL DEFAULT 0,
    execution_count INTEGER NOT NULL DEFAULT 0,
    lease_owner TEXT,
    lease_until REAL,
    last_status INTEGER,
    last_error TEXT,
    created_at REAL NOT NULL,
    finished_at REAL
);
"""


def test_a_database_from_before_trace_headers_gets_the_column_and_keeps_its_tasks(tmp_path):
    import sqlite3

    path = tmp_path / "q.db"
    with sqlite3.connect(path) as old:
        old.executescript(OLD_SCHEMA)
        old.execute(
            "INSERT INTO tasks (name, queue, payload, due_at, state, created_at)"
            " VALUES ('old-1', 'work', '{}', 0, 'queued', 0)"
        )
    q = LocalTaskQueue(SqliteDatabase(path), FAST)
    assert q.get("old-1")["headers"] == "{}"
    q.enqueue(Task(queue="work", name="new-1", payload={}, headers={"traceparent": TRACEPARENT}))
    # A second process opening the same file finds the column there.
    LocalTaskQueue(SqliteDatabase(path), FAST)
    target = Recorder()
    d = LocalDispatcher(q, {"work": target}, poll_interval=0.01, signer=SIGNER).start()
    try:
        assert _wait(lambda: q.get("old-1")["state"] == q.get("new-1")["state"] == DONE)
    finally:
        d.stop()
    by_name = {x.task_name: x.headers for x in target.deliveries}
    assert "traceparent" not in by_name["old-1"]
    assert by_name["new-1"]["traceparent"] == TRACEPARENT

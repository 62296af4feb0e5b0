"""Delivers the local queue's due tasks to their targets, with Cloud Tasks' retry semantics."""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.history import PRUNE_BATCH
from shared.local_queue import DEAD, DEDUP_WINDOW_S, DONE, LEASED, QUEUED, LocalTaskQueue
from shared.local_targets import Delivery, DeliveryResult, Target
from shared.queues import QueueConfig
from shared.retry_after import retry_after
from shared.state import Pruned, StateStore
from shared.task_signing import TaskSigner
from shared.token_bucket import TokenBucket

log = logging.getLogger(__name__)

# Each live dispatcher's heartbeat: a task leased by an owner missing here is redelivered.
SCHEMA = """
CREATE TABLE IF NOT EXISTS dispatchers (
    owner TEXT PRIMARY KEY,
    heartbeat_at REAL NOT NULL
);
"""

HEARTBEAT_S = 1.0
# A dispatcher silent this long is gone (killed); its leased tasks are delivered again.
STALE_AFTER_S = 4.0
# How often housekeeping runs when it has caught up; with a backlog, a batch per loop.
HOUSEKEEPING_S = 30.0
# How long a finished delivery may wait to be recorded with another write on the database
# before the loop records it in a transaction of its own.
SETTLE_GRACE_S = 0.25


class Housekeeping:
    """What keeps the local database bounded, done by the dispatcher between deliveries.

    Done tasks are forgotten once their names need no reserving (DEDUP_WINDOW_S); given a store
    and a retention, finished runs older than it go with their events, ledger and finished
    tasks, PRUNE_BATCH runs per write so that deliveries never wait long for the lock. `clock`
    is the wall clock both ages are measured on (moved forward in bench/history.py).
    """

    def __init__(
        self,
        queue: LocalTaskQueue,
        store: StateStore | None = None,
        *,
        retention: timedelta | None = None,
        batch: int = PRUNE_BATCH,
        every_s: float = HOUSEKEEPING_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.queue = queue
        self.store = store
        self.retention = retention
        self.batch = batch
        self.every_s = every_s
        self.clock = clock
        self._next = 0.0  # time.monotonic() when it is due; now, at the start

    def tick(self) -> Pruned | None:
        """Run once if due; what was pruned, or None when it was not due (or failed)."""
        if time.monotonic() < self._next:
            return None
        pruned: Pruned | None = None
        try:
            pruned = self.run_once()
        except Exception:  # never a reason to stop delivering: try again next time
            log.exception("housekeeping failed; trying again in %.0f s", self.every_s)
        backlog = pruned is not None and len(pruned.run_ids) >= self.batch
        # With a backlog, the next batch at the next turn of the loop, after due deliveries.
        self._next = time.monotonic() + (0.0 if backlog else self.every_s)
        return pruned

    def run_once(self) -> Pruned:
        """Forget the done tasks past the dedup window, then prune one batch of runs."""
        now = self.clock()
        with self.queue.db.transaction() as conn:
            conn.execute(
                "DELETE FROM tasks WHERE state = ? AND finished_at < ?",
                (DONE, now - DEDUP_WINDOW_S),
            )
        if self.store is None or self.retention is None:
            return Pruned()
        before = datetime.fromtimestamp(now, UTC) - self.retention
        pruned = self.store.prune(before, limit=self.batch)
        if pruned.run_ids:
            log.info(
                "pruned %d finished runs older than %s: %s",
                len(pruned.run_ids),
                self.retention,
                pruned.counts(),
            )
        return pruned


def _task_headers(row: Mapping[str, Any] | sqlite3.Row) -> dict[str, str]:
    """The headers a task was queued with (none for a task from before they were kept)."""
    try:
        headers = json.loads(row["headers"] or "{}")
    except (IndexError, KeyError, ValueError):
        return {}
    return {str(k): str(v) for k, v in headers.items()} if isinstance(headers, dict) else {}


class LocalDispatcher:
    """Delivers due tasks to their queue's target, retrying failures as Cloud Tasks would.

    2xx is done; anything else, or no answer within the dispatch deadline, is retried after
    the queue's backoff (or a later Retry-After) until max_attempts, then the task is dead.
    Leases carry the dispatcher's heartbeat, so a killed dispatcher's tasks are redelivered.
    Each delivery is signed by `signer` (shared/task_signing.py): the targets take nothing else.
    """

    def __init__(
        self,
        queue: LocalTaskQueue,
        targets: Mapping[str, Target],
        *,
        signer: TaskSigner,
        dispatch_deadline: float = 30.0,
        workers: int = 32,
        poll_interval: float = 0.1,
        clock: Callable[[], float] = time.time,
        housekeeping: Housekeeping | None = None,
    ) -> None:
        self.queue = queue
        self.housekeeping = housekeeping or Housekeeping(queue, clock=clock)
        self.db = queue.db
        self.db.ensure_schema(SCHEMA)
        self.targets = dict(targets)
        self.signer = signer
        self.dispatch_deadline = dispatch_deadline
        self.poll_interval = poll_interval
        self.clock = clock
        self.owner = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        # A pool per queue: a queue whose vendor browns out fills its own workers, never
        # another queue's. Threads start on demand, so idle queues cost nothing.
        self._pools = {
            name: ThreadPoolExecutor(
                max_workers=min(queue.queues[name].max_concurrent_dispatches, workers),
                thread_name_prefix=f"dispatch-{name}",
            )
            for name in self.targets
        }
        self._in_flight: dict[str, int] = {name: 0 for name in self.targets}
        # Deliveries done, whose results the loop records with its next lease.
        self._finished: list[tuple[Mapping[str, Any], QueueConfig, DeliveryResult]] = []
        self._finished_at: list[float] = []  # time.monotonic() of each
        self._limits = {
            name: TokenBucket(queue.queues[name].max_dispatches_per_second) for name in self.targets
        }
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_heartbeat = 0.0

    def start(self) -> LocalDispatcher:
        self._heartbeat(force=True)
        self.db.before_commit(self._record_finished)
        self.queue.handoff = self
        self._thread = threading.Thread(target=self._loop, name="dispatcher", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self.queue.handoff is self:
            self.queue.handoff = None
        self.queue.wakeup.set()
        if self._thread:
            self._thread.join(timeout=5)
        for pool in self._pools.values():
            pool.shutdown(wait=True, cancel_futures=False)
        self.db.drop_before_commit(self._record_finished)
        self.flush_finished()
        with self.db.transaction() as conn:
            conn.execute("DELETE FROM dispatchers WHERE owner = ?", (self.owner,))

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.queue.wakeup.clear()
            try:
                self._heartbeat()
                self.housekeeping.tick()
                dispatched = self.dispatch_due()
            except sqlite3.OperationalError:
                log.warning("dispatcher: database busy, trying again", exc_info=True)
                dispatched = 0
            if not dispatched:
                self.queue.wakeup.wait(self.poll_interval)

    def _heartbeat(self, force: bool = False) -> None:
        now = self.clock()
        if not force and now - self._last_heartbeat < HEARTBEAT_S:
            return
        self._last_heartbeat = now
        with self.db.transaction() as conn:
            conn.execute(
                "INSERT INTO dispatchers (owner, heartbeat_at) VALUES (?, ?)"
                " ON CONFLICT (owner) DO UPDATE SET heartbeat_at = excluded.heartbeat_at",
                (self.owner, now),
            )
            self._reclaim(conn, now)

    def _reclaim(self, conn: sqlite3.Connection, now: float) -> None:
        """Leases whose dispatcher died, or whose deadline passed, count as failed attempts."""
        conn.execute("DELETE FROM dispatchers WHERE heartbeat_at < ?", (now - STALE_AFTER_S,))
        rows = conn.execute(
            "SELECT name, queue, retry_count FROM tasks WHERE state = ? AND"
            " (lease_until < ? OR lease_owner NOT IN (SELECT owner FROM dispatchers))",
            (LEASED, now),
        ).fetchall()
        for row in rows:
            log.warning("task %s: lease lost (dispatcher gone or deadline passed)", row["name"])
            self._fail(
                conn,
                row["name"],
                self.queue.queues[row["queue"]],
                row["retry_count"],
                status=None,
                error="lease lost",
                retry_after=None,
                now=now,
            )

    def dispatch_due(self) -> int:
        """Record the deliveries that finished, then lease and hand to workers every due task
        the queues' limits allow now: one write transaction for both, and none at all when
        there is nothing to record and nothing due (a read says so without the write lock)."""
        now = self.clock()
        rooms = self._rooms()
        due = bool(rooms) and self._anything_due(now, list(rooms))
        # With nothing to lease, a finished delivery waits a moment for the next write on the
        # database (its handler's successor, most often) to record it, sparing a transaction.
        finished = self._take_finished(older_than=None if due else SETTLE_GRACE_S)
        if not finished and not due:
            return 0
        leased: list[tuple[str, Mapping[str, Any]]] = []
        try:
            with self.db.transaction() as conn:
                for done, config, result in finished:
                    self._settle_in(conn, done, config, result, now)
                for name, room in rooms.items():
                    rows = conn.execute(
                        "SELECT * FROM tasks WHERE state = ? AND queue = ? AND due_at <= ?"
                        " ORDER BY due_at LIMIT ?",
                        (QUEUED, name, now, room),
                    ).fetchall()
                    granted = self._limits[name].take(len(rows)) if rows else 0
                    for row in rows[:granted]:
                        conn.execute(
                            "UPDATE tasks SET state = ?, lease_owner = ?, lease_until = ?"
                            " WHERE name = ?",
                            (LEASED, self.owner, now + self.dispatch_deadline + 5, row["name"]),
                        )
                        leased.append((name, dict(row)))
        except BaseException:
            self._requeue_finished(finished)  # recorded at the next turn instead
            raise
        for name, task in leased:
            with self._lock:
                self._in_flight[name] += 1
            self._pools[name].submit(self._deliver, name, task)
        return len(leased) + len(finished)

    def claim(self, queue: str) -> tuple[str, float] | None:
        """Handoff: a lease on one more task of `queue` if its limits allow it now."""
        if queue not in self.targets or self._stop.is_set():
            return None
        config = self.queue.queues[queue]
        with self._lock:
            if self._in_flight[queue] >= config.max_concurrent_dispatches:
                return None
            if self._limits[queue].take(1) != 1:
                return None
            self._in_flight[queue] += 1
        return self.owner, self.clock() + self.dispatch_deadline + 5

    def deliver(self, queue: str, row: Mapping[str, Any]) -> None:
        """Handoff: deliver a claimed task, its transaction committed."""
        self._pools[queue].submit(self._deliver, queue, row)

    def release(self, queue: str) -> None:
        with self._lock:
            self._in_flight[queue] -= 1

    def _record_finished(self, conn: sqlite3.Connection) -> None:
        """Before any write on this database commits: record the deliveries that finished,
        in that same transaction (one write fewer per task). Never fails the transaction."""
        finished = self._take_finished()
        if not finished:
            return
        now = self.clock()
        try:
            for row, config, result in finished:
                self._settle_in(conn, row, config, result, now)
        except sqlite3.Error:
            log.warning("could not record finished deliveries; next time", exc_info=True)
            self._requeue_finished(finished)

    def _rooms(self) -> dict[str, int]:
        """How many more tasks each served queue may have in flight now (those with room)."""
        with self._lock:
            rooms = {
                name: self.queue.queues[name].max_concurrent_dispatches - self._in_flight[name]
                for name in self.targets
                if name in self.queue.queues
            }
        return {name: room for name, room in rooms.items() if room > 0}

    def _anything_due(self, now: float, queues: list[str]) -> bool:
        marks = ",".join("?" * len(queues))
        row = (
            self.db.connection()
            .execute(
                f"SELECT 1 FROM tasks WHERE state = ? AND queue IN ({marks}) AND due_at <= ?"
                " LIMIT 1",
                (QUEUED, *queues, now),
            )
            .fetchone()
        )
        return row is not None

    def _take_finished(
        self, older_than: float | None = None
    ) -> list[tuple[Mapping[str, Any], QueueConfig, DeliveryResult]]:
        """The finished deliveries to record (all, or those finished over `older_than` s ago)."""
        with self._lock:
            if older_than is not None and not any(
                time.monotonic() - at >= older_than for at in self._finished_at
            ):
                return []
            finished, self._finished, self._finished_at = self._finished, [], []
        return finished

    def _requeue_finished(
        self, finished: list[tuple[Mapping[str, Any], QueueConfig, DeliveryResult]]
    ) -> None:
        with self._lock:
            self._finished[:0] = finished
            self._finished_at[:0] = [time.monotonic()] * len(finished)

    def _deliver(self, queue_name: str, row: Mapping[str, Any]) -> None:
        config = self.queue.queues[queue_name]
        body = row["payload"].encode()
        delivery = Delivery(
            queue=queue_name,
            task_name=row["name"],
            body=body,
            headers={
                # The task's own (its trace context) first: the queue's headers win.
                **_task_headers(row),
                # Signed at each delivery, so a redelivery carries its own time.
                **self.signer.headers(body, row["name"]),
                "X-CloudTasks-QueueName": queue_name,
                "X-CloudTasks-TaskName": row["name"],
                "X-CloudTasks-TaskRetryCount": str(row["retry_count"]),
                "X-CloudTasks-TaskExecutionCount": str(row["execution_count"]),
                "X-CloudTasks-TaskETA": f"{row['due_at']:.6f}",
            },
            deadline=self.dispatch_deadline,
        )
        try:
            result = self.targets[queue_name](delivery)
        except Exception as exc:  # a target that raises is a failed attempt, not a dead loop
            log.exception("task %s: delivery raised", row["name"])
            result = DeliveryResult(None, error=type(exc).__name__)
        finally:
            with self._lock:
                self._in_flight[queue_name] -= 1
        # Recorded by the loop with its next lease, in one transaction. Until then the lease
        # stands: if this process dies first, the lease is reclaimed and the task delivered
        # again (at least once, as Cloud Tasks: every target is idempotent).
        with self._lock:
            self._finished.append((row, config, result))
            self._finished_at.append(time.monotonic())
        self.queue.wakeup.set()

    def flush_finished(self) -> None:
        """Record the finished deliveries now (at stop)."""
        finished = self._take_finished()
        if finished:
            now = self.clock()
            with self.db.transaction() as conn:
                for row, config, result in finished:
                    self._settle_in(conn, row, config, result, now)

    def _settle_in(
        self,
        conn: sqlite3.Connection,
        row: Mapping[str, Any],
        config: QueueConfig,
        result: DeliveryResult,
        now: float,
    ) -> None:
        # Only a lease still ours is settled; one reclaimed meanwhile is its new holder's.
        if result.status is not None and 200 <= result.status < 300:
            conn.execute(
                "UPDATE tasks SET state = ?, execution_count = execution_count + 1,"
                " last_status = ?, finished_at = ?, lease_owner = NULL"
                " WHERE name = ? AND state = ? AND lease_owner = ?",
                (DONE, result.status, now, row["name"], LEASED, self.owner),
            )
            return
        current = conn.execute(
            "SELECT state, lease_owner FROM tasks WHERE name = ?", (row["name"],)
        ).fetchone()
        mine = current is not None and current["lease_owner"] == self.owner
        if not mine or current["state"] != LEASED:
            return
        if result.status is not None:
            conn.execute(
                "UPDATE tasks SET execution_count = execution_count + 1 WHERE name = ?",
                (row["name"],),
            )
        self._fail(
            conn,
            row["name"],
            config,
            row["retry_count"],
            status=result.status,
            error=result.error,
            retry_after=retry_after(result.headers),
            now=now,
        )

    def _fail(
        self,
        conn: sqlite3.Connection,
        name: str,
        config: QueueConfig,
        retry_count: int,
        *,
        status: int | None,
        error: str,
        retry_after: float | None,
        now: float,
    ) -> None:
        retries = retry_count + 1
        if retries >= config.max_attempts:
            log.error("task %s: %d attempts failed, giving up", name, retries)
            conn.execute(
                "UPDATE tasks SET state = ?, retry_count = ?, last_status = ?, last_error = ?,"
                " finished_at = ?, lease_owner = NULL WHERE name = ?",
                (DEAD, retries, status, error, now, name),
            )
            return
        delay = max(config.backoff(retries), retry_after or 0.0)
        conn.execute(
            "UPDATE tasks SET state = ?, retry_count = ?, due_at = ?, last_status = ?,"
            " last_error = ?, lease_owner = NULL, lease_until = NULL WHERE name = ?",
            (QUEUED, retries, now + delay, status, error, name),
        )

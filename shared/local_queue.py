"""TaskQueue on SQLite: durable named tasks in the `tasks` table, delivered by LocalDispatcher."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from shared.model import Task
from shared.queues import QUEUES, QueueConfig
from shared.sqlite_db import SqliteDatabase
from shared.task_queue import QueueStats, TaskRef

SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
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
    finished_at REAL,
    headers TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS tasks_due ON tasks (state, queue, due_at);
CREATE INDEX IF NOT EXISTS tasks_finished ON tasks (state, finished_at);
"""

# A task's life: queued -> leased (being delivered) -> done, or back to queued for a retry,
# or dead once its queue's attempts are spent.
QUEUED, LEASED, DONE, DEAD = "queued", "leased", "done", "dead"
# Task names stay reserved this long after completion, as in Cloud Tasks.
DEDUP_WINDOW_S = 24 * 3600


class Handoff(Protocol):
    """A dispatcher in this process, offered each new task that is due now."""

    def claim(self, queue: str) -> tuple[str, float] | None:
        """A lease (owner, until) if it can deliver one more task of `queue` now, else None."""
        ...

    def deliver(self, queue: str, row: Mapping[str, Any]) -> None:
        """Deliver the claimed task (after its transaction committed)."""
        ...

    def release(self, queue: str) -> None:
        """Give a claim back (its task was not written)."""
        ...


class LocalTaskQueue:
    """Durable named tasks in the `tasks` table: an enqueued task survives a crash.

    A TransactionalQueue: a store on the same database queues its tasks inside its own write
    transaction (`insert`), so that a change and its tasks commit together.
    """

    def __init__(self, db: SqliteDatabase, queues: Mapping[str, QueueConfig] = QUEUES) -> None:
        self.db = db
        self.queues = dict(queues)
        # Set when a commit queued a task; the dispatcher waits on it between polls.
        self.wakeup = threading.Event()
        self._inserted = threading.local()
        # The dispatcher that takes this queue's new due tasks straight from the transaction
        # that makes them (LocalDispatcher sets itself while it runs).
        self.handoff: Handoff | None = None
        db.ensure_schema(SCHEMA)
        self._add_headers_column()
        db.on_commit(self._wake_if_inserted)

    def _add_headers_column(self) -> None:
        # A database from before tasks carried their trace context: its tasks have none (a
        # delivery without one continues its run's stored trace).
        columns = {r["name"] for r in self.db.connection().execute("PRAGMA table_info(tasks)")}
        if "headers" not in columns:
            try:
                with self.db.transaction() as conn:
                    conn.execute("ALTER TABLE tasks ADD COLUMN headers TEXT NOT NULL DEFAULT '{}'")
            except sqlite3.OperationalError as exc:
                if "duplicate column" not in str(exc):  # another process migrated it first
                    raise

    def _wake_if_inserted(self) -> None:
        # Only a commit that queued a task wakes the dispatcher; its own commits must not,
        # or it would spin.
        if getattr(self._inserted, "flag", False):
            self._inserted.flag = False
            self.wakeup.set()

    def enqueue(self, task: Task) -> bool:
        with self.db.transaction() as conn:
            return self.insert(conn, task)

    def insert(self, conn: sqlite3.Connection, task: Task) -> bool:
        """Queue `task` inside the caller's transaction; False if the name is taken.

        A task due now, for a queue whose dispatcher in this process has room for it
        (`handoff`), is written leased to that dispatcher and handed to it once the
        transaction commits: no separate write to lease it, and no wait for the next poll.
        """
        if task.queue not in self.queues:
            raise ValueError(f"unknown queue {task.queue!r}")
        now = time.time()
        due = task.schedule_time.timestamp() if task.schedule_time else now
        handoff = self.handoff if due <= now else None
        lease = handoff.claim(task.queue) if handoff else None
        row = {
            "name": task.name,
            "queue": task.queue,
            "payload": json.dumps(task.payload),
            "due_at": due,
            "state": LEASED if lease else QUEUED,
            "created_at": now,
            "headers": json.dumps(task.headers),
            "lease_owner": lease[0] if lease else None,
            "lease_until": lease[1] if lease else None,
            "retry_count": 0,
            "execution_count": 0,
        }
        inserted = (
            conn.execute(
                "INSERT OR IGNORE INTO tasks (name, queue, payload, due_at, state, created_at,"
                " headers, lease_owner, lease_until) VALUES (:name, :queue, :payload, :due_at,"
                " :state, :created_at, :headers, :lease_owner, :lease_until)",
                row,
            ).rowcount
            == 1
        )
        if handoff and lease:
            if inserted:
                self.db.after_this_commit(lambda: handoff.deliver(task.queue, row))
                self.db.if_rolled_back(lambda: handoff.release(task.queue))
            else:
                handoff.release(task.queue)
        elif inserted:
            self._inserted.flag = True
        return inserted

    def cancel(self, task: TaskRef) -> bool:
        with self.db.transaction() as conn:
            return self.delete_waiting(conn, task)

    def delete_waiting(self, conn: sqlite3.Connection, task: TaskRef) -> bool:
        """Drop `task` inside the caller's transaction if it is queued (not leased, not done)."""
        return (
            conn.execute(
                "DELETE FROM tasks WHERE name = ? AND queue = ? AND state = ?",
                (task.name, task.queue, QUEUED),
            ).rowcount
            == 1
        )

    def forget_finished(
        self, conn: sqlite3.Connection, run_ids: Sequence[str], *, dry_run: bool = False
    ) -> int:
        """Delete (or with `dry_run` count) the done and dead tasks of runs being pruned, inside
        the caller's transaction. Every task of a run is named after it (`<run_id>-...`, and
        run ids have one length), so each run is a range of the primary key; queued and leased
        tasks are never touched."""
        statement = "SELECT COUNT(*)" if dry_run else "DELETE"
        cursor = conn.execute(
            f"{statement} FROM tasks WHERE name IN (SELECT tasks.name FROM json_each(?) AS run"
            # Between "<run_id>-" and "<run_id>.", the next character after "-"; `+state` keeps
            # it on the primary key, off the (state, ...) index that would scan every task.
            " JOIN tasks ON tasks.name > run.value || '-' AND tasks.name < run.value || '.'"
            " WHERE +tasks.state IN (?, ?))",
            (json.dumps(list(run_ids)), DONE, DEAD),
        )
        return int(cursor.fetchone()[0]) if dry_run else cursor.rowcount

    def get(self, name: str) -> dict[str, Any] | None:
        row = self.db.connection().execute("SELECT * FROM tasks WHERE name = ?", (name,)).fetchone()
        return dict(row) if row else None

    def pending(self) -> int:
        row = (
            self.db.connection()
            .execute("SELECT COUNT(*) FROM tasks WHERE state IN (?, ?)", (QUEUED, LEASED))
            .fetchone()
        )
        return int(row[0])

    def stats(self) -> list[QueueStats]:
        """Per named queue: its queued and leased tasks, those scheduled for later, and how
        long the oldest due one has waited past its due time."""
        now = time.time()
        rows = self.db.connection().execute(
            "SELECT queue, COUNT(*) AS depth,"
            " SUM(state = ? AND due_at > ?) AS scheduled,"
            " MIN(CASE WHEN due_at <= ? THEN due_at END) AS oldest_due"
            " FROM tasks WHERE state IN (?, ?) GROUP BY queue",
            (QUEUED, now, now, QUEUED, LEASED),
        )
        found = {r["queue"]: r for r in rows}
        stats = []
        for name in self.queues:
            row = found.get(name)
            if row is None:
                stats.append(QueueStats(name, 0, None, 0))
                continue
            oldest = row["oldest_due"]
            age = max(0.0, now - oldest) if oldest is not None else None
            stats.append(QueueStats(name, int(row["depth"]), age, int(row["scheduled"] or 0)))
        return stats

    def dead(self) -> list[dict[str, Any]]:
        rows = self.db.connection().execute("SELECT * FROM tasks WHERE state = ?", (DEAD,))
        return [dict(r) for r in rows]

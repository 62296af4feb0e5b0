"""The TaskQueue port: named, deduplicated, scheduled HTTP tasks, as Cloud Tasks makes them."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from shared.model import Task
from shared.queues import QUEUES, QueueConfig
from shared.sqlite_db import SqliteDatabase

log = logging.getLogger(__name__)


class TaskQueue(Protocol):
    def enqueue(self, task: Task) -> bool:
        """Queue `task` on its named queue.

        Returns False, and queues nothing, when a task of that name was already queued:
        names are deterministic so that a retried caller never dispatches twice.
        """
        ...


@dataclass(frozen=True)
class TaskRef:
    """A queued task by its queue and name: enough to cancel it."""

    queue: str
    name: str


@runtime_checkable
class CancellableQueue(Protocol):
    """A queue that can drop a task before it runs (a watchdog whose step has ended)."""

    def cancel(self, task: TaskRef) -> bool:
        """Drop `task` if it still waits; False when it runs, ran, or is unknown."""
        ...


def cancel_all(queue: object, tasks: Sequence[TaskRef]) -> None:
    """Cancel `tasks` where `queue` can, outside any transaction. Never raises: a task left
    in place is one that finds nothing to do when it runs, so a failed cancel is logged."""
    if not tasks or not isinstance(queue, CancellableQueue):
        return
    for task in tasks:
        try:
            queue.cancel(task)
        except Exception:
            log.warning("could not cancel task %s; it will find nothing to do", task.name)


@dataclass(frozen=True)
class QueueStats:
    """What an operator asks of a queue: how many tasks wait or run (`depth`; of them
    `scheduled` wait for a later time, a backoff or a watchdog, None when the queue cannot
    tell), and how long the oldest task that is due has waited past its time (None when none
    is due, or the queue cannot tell): the queue's lag, as Cloud Tasks' oldest estimated
    arrival time measures it."""

    queue: str
    depth: int
    oldest_age_s: float | None = None
    scheduled: int | None = None


@runtime_checkable
class ObservableQueue(Protocol):
    """A queue that can say how deep each of its named queues is (the health views, metrics)."""

    def stats(self) -> list[QueueStats]:
        """One entry per named queue, every queue listed even when empty."""
        ...


def schedule_of(queue: object, name: str) -> QueueConfig:
    """The retry schedule `queue` delivers the named queue's tasks by: its own (the local
    queue's backoffs may be scaled, CHIMERA_LOCAL_BACKOFF_SCALE), else the declared one."""
    own = getattr(queue, "queues", None)
    config = own.get(name) if isinstance(own, Mapping) else None
    return config if isinstance(config, QueueConfig) else QUEUES[name]


def queue_stats(queue: object) -> list[QueueStats]:
    """The stats of `queue`, or none when it cannot tell."""
    return queue.stats() if isinstance(queue, ObservableQueue) else []


@runtime_checkable
class TransactionalQueue(Protocol):
    """A queue kept in a SQLite database, whose tasks a store on that same database can write
    inside its own transaction: the change and its tasks commit, or roll back, together."""

    db: SqliteDatabase

    def enqueue(self, task: Task) -> bool: ...

    def insert(self, conn: sqlite3.Connection, task: Task) -> bool:
        """Queue `task` inside the transaction `conn` is in; False if the name is taken."""
        ...

    def delete_waiting(self, conn: sqlite3.Connection, task: TaskRef) -> bool:
        """Drop `task` inside the transaction `conn` is in, if it still waits."""
        ...


def enqueue_all(queue: TaskQueue | None, tasks: Sequence[Task]) -> None:
    """Enqueue `tasks` one by one, outside any transaction (a store's tasks after its commit)."""
    if not tasks:
        return
    if queue is None:
        raise RuntimeError("this store has no task queue to emit tasks to")
    for task in tasks:
        queue.enqueue(task)

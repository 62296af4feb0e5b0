"""The TaskQueue port: named, deduplicated, scheduled HTTP tasks, as Cloud Tasks makes them."""

from __future__ import annotations

from typing import Protocol

from shared.model import Task


class TaskQueue(Protocol):
    def enqueue(self, task: Task) -> bool:
        """Queue `task` on its named queue.

        Returns False, and queues nothing, when a task of that name was already queued:
        names are deterministic so that a retried caller never dispatches twice.
        """
        ...

"""The StateStore port: runs, their audit trail, the step ledger and the intake's keys."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from shared.keys import ApiKey
from shared.model import BreakerState, Event, Rejection, RunState, StepOutcome, Task
from shared.run_filter import RunFilter
from shared.task_queue import TaskRef


@dataclass(frozen=True)
class Pruned:
    """What pruning removed (or, in a dry run, would remove): the runs, and their records."""

    run_ids: tuple[str, ...] = ()
    events: int = 0
    ledger: int = 0  # step outcomes and the model's checkpoints
    tasks: int = 0  # finished tasks of a queue that shares the store (the local one)

    def __bool__(self) -> bool:
        return bool(self.run_ids)

    def __add__(self, other: Pruned) -> Pruned:
        return Pruned(
            self.run_ids + other.run_ids,
            self.events + other.events,
            self.ledger + other.ledger,
            self.tasks + other.tasks,
        )

    def counts(self) -> dict[str, int]:
        return {
            "runs": len(self.run_ids),
            "events": self.events,
            "ledger": self.ledger,
            "tasks": self.tasks,
        }


def prefix_end(prefix: str) -> str | None:
    """The least string above every string that starts with `prefix`, in code point order
    (which UTF-8 byte order, SQLite's and Firestore's, keeps); None when there is none, as
    for "" (every string starts with it)."""
    while prefix:
        last = ord(prefix[-1]) + 1
        if last == 0xD800:  # surrogates cannot be encoded: the next code point is past them
            last = 0xE000
        if last <= 0x10FFFF:
            return prefix[:-1] + chr(last)
        prefix = prefix[:-1]
    return None


def no_tasks(_outcome: StepOutcome) -> Sequence[Task]:
    return ()


class StateStore(Protocol):
    """Where runs live. Every write is keyed, so a redelivered message cannot double it."""

    def create_run(
        self,
        run: RunState,
        *,
        events: Sequence[Event] = (),
        tasks: Sequence[Task] = (),
        watchdogs: Sequence[Task] = (),
    ) -> tuple[RunState, bool]:
        """Create `run` unless one with its run_id exists.

        Returns the stored run and whether this call created it. The events and tasks are
        written only when it did. `watchdogs` (tasks that check later on what this change
        starts) are enqueued atomically with it where the queue shares the store, otherwise
        *before* the commit, so that a crash right after the commit cannot lose them together
        with the tasks they watch; a watchdog finds nothing to do when the change did not happen.
        """
        ...

    def load(self, run_id: str) -> RunState | None: ...

    def transition(
        self,
        run: RunState,
        *,
        expected_version: int,
        events: Sequence[Event] = (),
        tasks: Sequence[Task] = (),
        watchdogs: Sequence[Task] = (),
        outcomes: Sequence[StepOutcome] = (),
        cancelled: Sequence[TaskRef] = (),
    ) -> RunState:
        """Replace the run if its stored version is `expected_version`, else raise Conflict.

        The stored run gets version expected_version + 1. `tasks` are enqueued with the change:
        atomically where the queue shares the store, otherwise right after the commit.
        `watchdogs` as for create_run: with the change, or before it. `outcomes` are recorded
        in the same write, each as record_outcome would: only if its step has none yet.
        `cancelled` are tasks the change makes moot (the watchdogs of steps it ends): dropped
        with it where the queue shares the store, else after it where the queue can; one
        left in place finds nothing to do when it runs.
        """
        ...

    def append_event(self, event: Event) -> None:
        """Add `event` to its run's trail. Past the store's event cap, the run's older retries
        are folded in the same write: per step, all but the newest into one summary event
        (shared/history.py), so a run that retried for hours keeps a short, readable log."""
        ...

    def events(self, run_id: str) -> list[Event]:
        """The run's audit trail, oldest first."""
        ...

    def record_outcome(
        self, outcome: StepOutcome, *, then: Callable[[StepOutcome], Sequence[Task]] = no_tasks
    ) -> StepOutcome:
        """Record a step's outcome once; a second record returns the first, unchanged.

        `then` gives the tasks that follow from the stored outcome (the report to the
        orchestrator): enqueued with the record, atomically where the queue shares the store,
        otherwise right after it, so a write and a hop are one transaction locally.
        """
        ...

    def outcome(self, run_id: str, step_id: str) -> StepOutcome | None: ...

    def outcomes(self, run_id: str) -> dict[str, StepOutcome]: ...

    def discard_outcome(self, run_id: str, step_id: str) -> None:
        """Forget a failed step's outcome so that a resumed run can try it again."""
        ...

    def prune(
        self, older_than: datetime, *, limit: int | None = None, dry_run: bool = False
    ) -> Pruned:
        """Delete finished runs (succeeded, cancelled) last changed before `older_than`, oldest
        first and at most `limit` of them, each with its events and step ledger (and its
        finished tasks, where the queue shares the store) in one write. Parked, waiting,
        pending and running runs are never touched. With `dry_run`, nothing is deleted: the
        answer says what would go."""
        ...

    def list_runs(self, query: RunFilter | None = None) -> list[RunState]:
        """The filter's page of runs, newest first (created_at, then run id, descending)."""
        ...

    def count_runs(self, query: RunFilter | None = None) -> dict[str, int]:
        """How many runs pass the filter in each status (the filter's status and paging aside),
        every status listed."""
        ...

    def recent_runs(self, since: datetime, limit: int = 500) -> list[RunState]:
        """Runs changed at or after `since`, the latest change first, at most `limit`."""
        ...

    def change_mark(self, run_id: str) -> tuple[int, str] | None:
        """What changes whenever the run or its trail does: its version and its newest event's
        key. One cheap read, for live views to poll; None when there is no such run."""
        ...

    def run_ids_with_prefix(self, prefix: str, limit: int) -> list[str]:
        """The ids of runs that start with `prefix`, in id order, at most `limit` of them: a
        range on the key (`prefix` to `prefix_end(prefix)`), never a scan, so that a person
        can name a run by a few characters of its id, as git does with commits."""
        ...

    def record_rejection(self, rejection: Rejection) -> None: ...

    def rejections(self, limit: int = 50) -> list[Rejection]: ...

    def breaker(self, name: str) -> BreakerState:
        """A circuit breaker's state; a closed one when it was never saved."""
        ...

    def save_breaker(self, state: BreakerState, *, expected_version: int) -> bool:
        """Store `state` (as version expected_version + 1) if the stored one is at
        `expected_version`; False if another instance changed it first."""
        ...

    def create_key(self, key: ApiKey) -> bool:
        """Store a new intake key; False (and nothing written) if its name was ever used."""
        ...

    def list_keys(self) -> list[ApiKey]:
        """Every key, revoked ones included (names, hashes and times; never a token)."""
        ...

    def key_by_hash(self, key_hash: str) -> ApiKey | None:
        """The key whose token hashes to `key_hash`, revoked or not."""
        ...

    def revoke_key(self, name: str, at: datetime) -> ApiKey | None:
        """Mark the key named `name` revoked at `at` (a second revoke keeps the first time);
        the key as stored, or None if there is no such key."""
        ...

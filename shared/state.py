"""The StateStore port: runs, their audit trail, the step ledger and the intake's keys."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

from shared.keys import ApiKey
from shared.model import BreakerState, Event, Rejection, RunFilter, RunState, StepOutcome, Task


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
    ) -> RunState:
        """Replace the run if its stored version is `expected_version`, else raise Conflict.

        The stored run gets version expected_version + 1. `tasks` are enqueued with the change:
        atomically where the queue shares the store, otherwise right after the commit.
        `watchdogs` as for create_run: with the change, or before it.
        """
        ...

    def append_event(self, event: Event) -> None: ...

    def events(self, run_id: str) -> list[Event]:
        """The run's audit trail, oldest first."""
        ...

    def record_outcome(self, outcome: StepOutcome) -> StepOutcome:
        """Record a step's outcome once; a second record returns the first, unchanged."""
        ...

    def outcome(self, run_id: str, step_id: str) -> StepOutcome | None: ...

    def outcomes(self, run_id: str) -> dict[str, StepOutcome]: ...

    def discard_outcome(self, run_id: str, step_id: str) -> None:
        """Forget a failed step's outcome so that a resumed run can try it again."""
        ...

    def list_runs(self, query: RunFilter | None = None) -> list[RunState]:
        """Runs, newest first."""
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

"""StateStore on Firestore: one document per run, its steps and events in subcollections."""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar

from google.api_core import exceptions
from google.cloud import firestore
from google.cloud.firestore_v1.base_query import FieldFilter

from shared.errors import Conflict
from shared.keys import ApiKey
from shared.model import (
    BreakerState,
    Event,
    Rejection,
    RunFilter,
    RunState,
    StepOutcome,
    Task,
    utcnow,
)
from shared.state_urls import firestore_location
from shared.task_queue import TaskQueue, enqueue_all

T = TypeVar("T")

RUNS = "runs"
STEPS = "steps"
EVENTS = "events"
REJECTIONS = "rejections"
BREAKERS = "breakers"
KEYS = "keys"
# Commits Firestore aborts for contention are retried this often by the transaction helper.
TRANSACTION_ATTEMPTS = 5


class _SortableIds:
    """Document ids that sort in write order: this process's clock in ns, made strictly
    increasing, then a random suffix so that two instances never pick the same id."""

    def __init__(self) -> None:
        self._last = 0
        self._lock = threading.Lock()

    def next(self) -> str:
        with self._lock:
            self._last = max(time.time_ns(), self._last + 1)
            stamp = self._last
        return f"{stamp:020d}-{secrets.token_hex(4)}"


_ids = _SortableIds()


def _fields(model: Any) -> dict[str, Any]:
    # Python mode keeps datetimes, which Firestore stores as timestamps.
    return model.model_dump(mode="python")


def _run_of(snapshot: Any) -> RunState:
    run = RunState.model_validate(snapshot.to_dict())
    # A map's keys may come back in any order; the plan keeps the steps' order.
    order = {step.step_id: i for i, step in enumerate(run.plan)}
    steps = dict(sorted(run.steps.items(), key=lambda kv: order.get(kv[0], len(order))))
    return run.evolve(steps=steps)


class FirestoreStateStore:
    """Runs in the `runs` collection, readable in the console; the ledger and the audit trail
    in each run's `steps` and `events` subcollections; refused inputs in `rejections`.

    Firestore cannot commit a Cloud Tasks task with a document, so the tasks of a create or a
    transition are enqueued right after the commit; the orchestrator re-emits dispatched steps
    when a task is redelivered, which repairs a crash in between. Circuit breakers, shared by
    every instance, are documents of `breakers` named by vendor; intake keys (hashes, never
    tokens) of `keys` named by key name.
    """

    def __init__(self, client: firestore.Client, queue: TaskQueue | None = None) -> None:
        self.client = client
        self.queue = queue
        self._runs = client.collection(RUNS)
        self._rejections = client.collection(REJECTIONS)
        self._breakers = client.collection(BREAKERS)
        self._keys = client.collection(KEYS)

    @classmethod
    def from_url(cls, url: str, queue: TaskQueue | None = None) -> FirestoreStateStore:
        """A store on `firestore://project[/database]`; honours FIRESTORE_EMULATOR_HOST."""
        project, database = firestore_location(url)
        return cls(firestore.Client(project=project, database=database), queue)

    def _in_transaction(self, fn: Callable[..., T], what: str) -> T:
        """Run `fn(transaction)` in a transaction: contention it cannot outlast is a Conflict."""
        transaction = self.client.transaction(max_attempts=TRANSACTION_ATTEMPTS)
        try:
            return firestore.transactional(fn)(transaction)
        except exceptions.Aborted as exc:  # aborted on a read: the helper retries only commits
            raise Conflict(f"{what}: transaction aborted by contention") from exc
        except ValueError as exc:
            if isinstance(exc.__cause__, exceptions.Aborted):
                raise Conflict(
                    f"{what}: contention outlasted {TRANSACTION_ATTEMPTS} attempts"
                ) from exc
            raise

    def _write_events(self, transaction: Any, events: Sequence[Event]) -> None:
        for event in events:
            ref = self._runs.document(event.run_id).collection(EVENTS).document(_ids.next())
            transaction.create(ref, _fields(event))

    def create_run(
        self,
        run: RunState,
        *,
        events: Sequence[Event] = (),
        tasks: Sequence[Task] = (),
        watchdogs: Sequence[Task] = (),
    ) -> tuple[RunState, bool]:
        ref = self._runs.document(run.run_id)
        enqueue_all(self.queue, watchdogs)  # before the commit: see StateStore.create_run
        stored = run.evolve(version=1, updated_at=utcnow())

        def create(transaction: Any) -> tuple[RunState, bool]:
            snapshot = ref.get(transaction=transaction)
            if snapshot.exists:
                return _run_of(snapshot), False
            transaction.create(ref, _fields(stored))
            self._write_events(transaction, events)
            return stored, True

        result, created = self._in_transaction(create, f"run {run.run_id}")
        if created:
            enqueue_all(self.queue, tasks)
        return result, created

    def load(self, run_id: str) -> RunState | None:
        snapshot = self._runs.document(run_id).get()
        return _run_of(snapshot) if snapshot.exists else None

    def transition(
        self,
        run: RunState,
        *,
        expected_version: int,
        events: Sequence[Event] = (),
        tasks: Sequence[Task] = (),
        watchdogs: Sequence[Task] = (),
    ) -> RunState:
        ref = self._runs.document(run.run_id)
        stored = run.evolve(version=expected_version + 1, updated_at=utcnow())
        enqueue_all(self.queue, watchdogs)  # before the commit: see StateStore.create_run

        def move(transaction: Any) -> None:
            snapshot = ref.get(transaction=transaction)
            if not snapshot.exists or snapshot.get("version") != expected_version:
                raise Conflict(f"run {run.run_id} is not at version {expected_version}")
            transaction.set(ref, _fields(stored))
            self._write_events(transaction, events)

        self._in_transaction(move, f"run {run.run_id}")
        enqueue_all(self.queue, tasks)
        return stored

    def append_event(self, event: Event) -> None:
        ref = self._runs.document(event.run_id).collection(EVENTS).document(_ids.next())
        ref.create(_fields(event))

    def events(self, run_id: str) -> list[Event]:
        # A collection streams in document id order, which is write order (see _SortableIds).
        docs = self._runs.document(run_id).collection(EVENTS).stream()
        return [Event.model_validate(doc.to_dict()) for doc in docs]

    def record_outcome(self, outcome: StepOutcome) -> StepOutcome:
        ref = self._runs.document(outcome.run_id).collection(STEPS).document(outcome.step_id)
        try:
            ref.create(_fields(outcome))
            return outcome
        except exceptions.AlreadyExists:
            snapshot = ref.get()
        if not snapshot.exists:  # discarded between our create and our read
            raise Conflict(f"step {outcome.run_id}/{outcome.step_id} changed while recording")
        return StepOutcome.model_validate(snapshot.to_dict())

    def outcome(self, run_id: str, step_id: str) -> StepOutcome | None:
        snapshot = self._runs.document(run_id).collection(STEPS).document(step_id).get()
        return StepOutcome.model_validate(snapshot.to_dict()) if snapshot.exists else None

    def outcomes(self, run_id: str) -> dict[str, StepOutcome]:
        docs = self._runs.document(run_id).collection(STEPS).stream()
        return {doc.id: StepOutcome.model_validate(doc.to_dict()) for doc in docs}

    def discard_outcome(self, run_id: str, step_id: str) -> None:
        self._runs.document(run_id).collection(STEPS).document(step_id).delete()

    def list_runs(self, query: RunFilter | None = None) -> list[RunState]:
        query = query or RunFilter()
        runs: Any = self._runs
        if query.status is not None:
            # Needs the composite index (status ASC, created_at DESC) on `runs`.
            runs = runs.where(filter=FieldFilter("status", "==", query.status.value))
        if query.attention is not None:
            # Needs the composite index (attention CONTAINS, created_at DESC), and with a
            # status (status ASC, attention CONTAINS, created_at DESC).
            runs = runs.where(filter=FieldFilter("attention", "array_contains", query.attention))
        runs = runs.order_by("created_at", direction=firestore.Query.DESCENDING)
        return [_run_of(doc) for doc in runs.limit(query.limit).stream()]

    def record_rejection(self, rejection: Rejection) -> None:
        self._rejections.document(_ids.next()).create(_fields(rejection))

    def rejections(self, limit: int = 50) -> list[Rejection]:
        # Firestore scans document ids in ascending order only; a rejection is recorded as
        # soon as it is made, so its time is its place in line.
        newest = self._rejections.order_by("at", direction=firestore.Query.DESCENDING)
        newest = newest.limit(limit)
        return [Rejection.model_validate(doc.to_dict()) for doc in newest.stream()]

    def breaker(self, name: str) -> BreakerState:
        snapshot = self._breakers.document(name).get()
        if not snapshot.exists:
            return BreakerState(name=name)
        return BreakerState.model_validate(snapshot.to_dict())

    def save_breaker(self, state: BreakerState, *, expected_version: int) -> bool:
        ref = self._breakers.document(state.name)
        stored = state.model_copy(update={"version": expected_version + 1})

        def save(transaction: Any) -> bool:
            snapshot = ref.get(transaction=transaction)
            version = snapshot.get("version") if snapshot.exists else 0
            if version != expected_version:
                return False
            transaction.set(ref, _fields(stored))
            return True

        try:
            return self._in_transaction(save, f"breaker {state.name}")
        except Conflict:  # contention: another instance is changing it
            return False

    def create_key(self, key: ApiKey) -> bool:
        try:
            self._keys.document(key.name).create(_fields(key))
        except exceptions.AlreadyExists:
            return False
        return True

    def list_keys(self) -> list[ApiKey]:
        return [ApiKey.model_validate(doc.to_dict()) for doc in self._keys.stream()]

    def key_by_hash(self, key_hash: str) -> ApiKey | None:
        found = self._keys.where(filter=FieldFilter("key_hash", "==", key_hash)).limit(1)
        return next((ApiKey.model_validate(doc.to_dict()) for doc in found.stream()), None)

    def revoke_key(self, name: str, at: datetime) -> ApiKey | None:
        ref = self._keys.document(name)

        def revoke(transaction: Any) -> ApiKey | None:
            snapshot = ref.get(transaction=transaction)
            if not snapshot.exists:
                return None
            key = ApiKey.model_validate(snapshot.to_dict())
            if key.revoked_at is None:
                key = key.model_copy(update={"revoked_at": at})
                transaction.update(ref, {"revoked_at": at})
            return key

        return self._in_transaction(revoke, f"key {name}")

"""StateStore on Firestore: one document per run, its steps and events in subcollections."""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, TypeVar

from google.api_core import exceptions
from google.cloud import firestore
from google.cloud.firestore_v1.base_query import FieldFilter
from google.cloud.firestore_v1.field_path import FieldPath

from shared import firestore_queries
from shared.errors import Conflict
from shared.history import EVENT_LOG_CAP, RETRIES_FOLDED, RETRY, expiry, fold_retries
from shared.keys import ApiKey
from shared.model import (
    BreakerState,
    Event,
    Rejection,
    RunState,
    RunStatus,
    StepOutcome,
    Task,
    utcnow,
)
from shared.run_filter import RunFilter
from shared.state import Pruned, no_tasks, prefix_end
from shared.state_urls import firestore_location
from shared.task_queue import TaskQueue, TaskRef, cancel_all, enqueue_all

T = TypeVar("T")
log = logging.getLogger(__name__)

RUNS = "runs"
STEPS = "steps"
EVENTS = "events"
REJECTIONS = "rejections"
BREAKERS = "breakers"
KEYS = "keys"
# Commits Firestore aborts for contention are retried this often by the transaction helper.
TRANSACTION_ATTEMPTS = 5
# The TTL field (terraform/firestore.tf): a finished run's document and every document under it
# carry it, since Firestore's TTL deletes a document but never its subcollections.
EXPIRE_AT = "expire_at"
# Documents a finishing transition stamps in its own commit (Firestore takes 500 writes); a
# run with more has the rest stamped right after.
STAMPS_PER_COMMIT = 400
# Deletes per batch when pruning.
DELETES_PER_BATCH = 400
FINISHED = [s.value for s in RunStatus if s.terminal]


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


def _fields(model: Any, expire_at: datetime | None = None) -> dict[str, Any]:
    # Python mode keeps datetimes, which Firestore stores as timestamps.
    fields = model.model_dump(mode="python")
    if expire_at is not None:
        fields[EXPIRE_AT] = expire_at
    return fields


def _data(snapshot: Any) -> dict[str, Any]:
    """A document's fields as the model has them: the TTL field is the store's own."""
    data = dict(snapshot.to_dict() or {})
    for name in (EXPIRE_AT, *firestore_queries.QUERY_FIELDS):
        data.pop(name, None)
    return data


def _run_fields(run: RunState, expire_at: datetime | None) -> dict[str, Any]:
    """A run document: the run, and the arrays the console's queries filter on."""
    return {**_fields(run, expire_at), **firestore_queries.query_fields(run)}


def document_bytes(path: str, fields: Mapping[str, Any]) -> int:
    """A document's size as Firestore counts it against its 1 MiB limit (the documented storage
    sizes: its name, each field's name and value, 32 bytes), for `fields` as the store writes
    them. Maps are counted as documents (plus 32 bytes each), which can only overstate."""
    name = sum(_value_bytes(part) for part in path.split("/")) + 16
    return name + _value_bytes(dict(fields))  # a map's count is a document's: fields + 32


def _value_bytes(value: Any) -> int:
    if value is None or isinstance(value, bool):
        return 1
    if isinstance(value, int | float | datetime):
        return 8
    if isinstance(value, str):
        return len(value.encode()) + 1
    if isinstance(value, bytes):
        return len(value)
    if isinstance(value, Mapping):
        return sum(_value_bytes(str(k)) + _value_bytes(v) for k, v in value.items()) + 32
    if isinstance(value, list | tuple):
        return sum(_value_bytes(v) for v in value)
    raise TypeError(f"Firestore stores no {type(value).__name__}")


def _run_of(snapshot: Any) -> RunState:
    run = RunState.model_validate(_data(snapshot))
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

    def __init__(
        self,
        client: firestore.Client,
        queue: TaskQueue | None = None,
        *,
        retention: timedelta | None = None,
        event_cap: int = EVENT_LOG_CAP,
    ) -> None:
        self.client = client
        self.queue = queue
        # How long a finished run's documents live (their expire_at); None: forever.
        self.retention = retention
        self.event_cap = event_cap
        self._runs = client.collection(RUNS)
        self._rejections = client.collection(REJECTIONS)
        self._breakers = client.collection(BREAKERS)
        self._keys = client.collection(KEYS)

    @classmethod
    def from_url(
        cls,
        url: str,
        queue: TaskQueue | None = None,
        *,
        retention: timedelta | None = None,
        event_cap: int = EVENT_LOG_CAP,
    ) -> FirestoreStateStore:
        """A store on `firestore://project[/database]`; honours FIRESTORE_EMULATOR_HOST."""
        project, database = firestore_location(url)
        client = firestore.Client(project=project, database=database)
        return cls(client, queue, retention=retention, event_cap=event_cap)

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

    def _write_events(
        self, transaction: Any, events: Sequence[Event], expire_at: datetime | None = None
    ) -> None:
        for event in events:
            ref = self._runs.document(event.run_id).collection(EVENTS).document(_ids.next())
            transaction.create(ref, _fields(event, expire_at))

    def _expire_at_of(self, transaction: Any, run_id: str) -> datetime | None:
        """The run's expire_at, read in `transaction` (so a run finishing meanwhile makes the
        transaction try again, and the document written under it gets the stamp too)."""
        snapshot = self._runs.document(run_id).get(field_paths=[EXPIRE_AT], transaction=transaction)
        value = (snapshot.to_dict() or {}).get(EXPIRE_AT) if snapshot.exists else None
        return value if isinstance(value, datetime) else None

    def _under(self, run_ref: Any, transaction: Any = None) -> list[Any]:
        """References to every document under a run (its events and ledger), names only."""
        refs = []
        for collection in (EVENTS, STEPS):
            names = run_ref.collection(collection).select(["__name__"])
            docs = transaction.get(names) if transaction is not None else names.stream()
            refs += [doc.reference for doc in docs]
        return refs

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
        expire_at = expiry(stored, self.retention)

        def create(transaction: Any) -> tuple[RunState, bool]:
            snapshot = ref.get(transaction=transaction)
            if snapshot.exists:
                return _run_of(snapshot), False
            transaction.create(ref, _run_fields(stored, expire_at))
            self._write_events(transaction, events, expire_at)
            return stored, True

        result, created = self._in_transaction(create, f"run {run.run_id}")
        if created:
            enqueue_all(self.queue, tasks)
        return result, created

    def load(self, run_id: str) -> RunState | None:
        snapshot = self._runs.document(run_id).get()
        return _run_of(snapshot) if snapshot.exists else None

    def run_ids_with_prefix(self, prefix: str, limit: int) -> list[str]:
        # A range on the document id; Firestore answers it from its built-in key index.
        if "/" in prefix:
            return []  # never in a document id
        key = FieldPath.document_id()
        ids: Any = self._runs.order_by(key)
        if prefix:
            ids = ids.where(filter=FieldFilter(key, ">=", self._runs.document(prefix)))
        end = prefix_end(prefix)
        if end is not None:
            # "a." ends at "a/", which is a path, not an id; no id has a "/", so "a0" is as good.
            end = end[:-1] + "0" if end.endswith("/") else end
            ids = ids.where(filter=FieldFilter(key, "<", self._runs.document(end)))
        return [doc.id for doc in ids.select([key]).limit(limit).stream()]

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
        ref = self._runs.document(run.run_id)
        stored = run.evolve(version=expected_version + 1, updated_at=utcnow())
        outcome_refs = [(ref.collection(STEPS).document(o.step_id), o) for o in outcomes]
        enqueue_all(self.queue, watchdogs)  # before the commit: see StateStore.create_run
        # A finished run's documents all expire together: each transition of a finished run
        # (its finish, a late verification) stamps the run and everything under it.
        expire_at = expiry(stored, self.retention)
        unstamped: list[Any] = []

        def move(transaction: Any) -> None:
            snapshot = ref.get(transaction=transaction)
            if not snapshot.exists or snapshot.get("version") != expected_version:
                raise Conflict(f"run {run.run_id} is not at version {expected_version}")
            under = self._under(ref, transaction) if expire_at is not None else []
            # A transaction reads before it writes: which outcomes are not recorded yet.
            unrecorded = [
                (doc, o) for doc, o in outcome_refs if not doc.get(transaction=transaction).exists
            ]
            transaction.set(ref, _run_fields(stored, expire_at))
            self._write_events(transaction, events, expire_at)
            for doc, outcome in unrecorded:
                transaction.create(doc, _fields(outcome, expire_at))
            for doc in under[:STAMPS_PER_COMMIT]:
                transaction.update(doc, {EXPIRE_AT: expire_at})
            unstamped[:] = under[STAMPS_PER_COMMIT:]

        self._in_transaction(move, f"run {run.run_id}")
        if unstamped:
            self._stamp(unstamped, expire_at)
        enqueue_all(self.queue, tasks)
        cancel_all(self.queue, cancelled)
        return stored

    def _stamp(self, refs: Sequence[Any], expire_at: datetime | None) -> None:
        for start in range(0, len(refs), STAMPS_PER_COMMIT):
            batch = self.client.batch()
            for doc in refs[start : start + STAMPS_PER_COMMIT]:
                batch.update(doc, {EXPIRE_AT: expire_at})
            batch.commit()

    def append_event(self, event: Event) -> None:
        events = self._runs.document(event.run_id).collection(EVENTS)
        ref = events.document(_ids.next())

        def append(transaction: Any) -> None:
            transaction.create(ref, _fields(event, self._expire_at_of(transaction, event.run_id)))

        self._in_transaction(append, f"event of run {event.run_id}")
        (count,) = events.count().get()[0]
        if count.value <= self.event_cap:
            return
        try:
            self._fold(event.run_id)
        except Conflict:  # other appends are folding the same retries: theirs will do
            log.info("run %s: folding its retries lost to a concurrent fold", event.run_id)

    def _fold(self, run_id: str) -> None:
        """Fold the run's older retries (shared/history.py) in one transaction: a concurrent
        fold or append makes it read again, so each retry is counted once."""
        events = self._runs.document(run_id).collection(EVENTS)
        foldable = events.where(filter=FieldFilter("kind", "in", [RETRY, RETRIES_FOLDED]))

        def fold(transaction: Any) -> None:
            expire_at = self._expire_at_of(transaction, run_id)
            docs = sorted(transaction.get(foldable), key=lambda doc: doc.id)
            folding = fold_retries([(doc.id, Event.model_validate(_data(doc))) for doc in docs])
            for key, summary in folding.writes.items():
                transaction.set(events.document(key), _fields(summary, expire_at))
            for key in folding.deletes:
                transaction.delete(events.document(key))

        self._in_transaction(fold, f"events of run {run_id}")

    def events(self, run_id: str) -> list[Event]:
        # A collection streams in document id order, which is write order (see _SortableIds).
        docs = self._runs.document(run_id).collection(EVENTS).stream()
        return [Event.model_validate(_data(doc)) for doc in docs]

    def record_outcome(
        self, outcome: StepOutcome, *, then: Callable[[StepOutcome], Sequence[Task]] = no_tasks
    ) -> StepOutcome:
        ref = self._runs.document(outcome.run_id).collection(STEPS).document(outcome.step_id)

        def record(transaction: Any) -> StepOutcome:
            expire_at = self._expire_at_of(transaction, outcome.run_id)
            snapshot = ref.get(transaction=transaction)
            if snapshot.exists:
                return StepOutcome.model_validate(_data(snapshot))
            transaction.create(ref, _fields(outcome, expire_at))
            return outcome

        stored = self._in_transaction(record, f"step {outcome.run_id}/{outcome.step_id}")
        enqueue_all(self.queue, then(stored))  # Cloud Tasks joins no transaction: after it
        return stored

    def outcome(self, run_id: str, step_id: str) -> StepOutcome | None:
        snapshot = self._runs.document(run_id).collection(STEPS).document(step_id).get()
        return StepOutcome.model_validate(_data(snapshot)) if snapshot.exists else None

    def outcomes(self, run_id: str) -> dict[str, StepOutcome]:
        docs = self._runs.document(run_id).collection(STEPS).stream()
        return {doc.id: StepOutcome.model_validate(_data(doc)) for doc in docs}

    def discard_outcome(self, run_id: str, step_id: str) -> None:
        self._runs.document(run_id).collection(STEPS).document(step_id).delete()

    def prune(
        self, older_than: datetime, *, limit: int | None = None, dry_run: bool = False
    ) -> Pruned:
        # Needs the composite index (status ASC, updated_at ASC) on `runs`. The TTL policy does
        # this on its own in the cloud; this is `chimera runs prune`, on demand.
        finished = self._runs.where(filter=FieldFilter("status", "in", FINISHED))
        old = finished.where(filter=FieldFilter("updated_at", "<", older_than))
        old = old.order_by("updated_at")
        if limit is not None:
            old = old.limit(limit)
        total = Pruned()
        for snapshot in old.stream():
            run_ref = snapshot.reference
            if dry_run:
                events, ledger = (
                    run_ref.collection(name).count().get()[0][0].value for name in (EVENTS, STEPS)
                )
                total += Pruned((snapshot.id,), events=events, ledger=ledger)
                continue
            under = self._under(run_ref)
            events = sum(doc.parent.id == EVENTS for doc in under)
            # The run last: a prune cut short leaves it to be found (and finished) next time.
            for start in range(0, len(under), DELETES_PER_BATCH):
                batch = self.client.batch()
                for doc in under[start : start + DELETES_PER_BATCH]:
                    batch.delete(doc)
                batch.commit()
            run_ref.delete()
            total += Pruned((snapshot.id,), events=events, ledger=len(under) - events)
        return total

    def list_runs(self, query: RunFilter | None = None) -> list[RunState]:
        return firestore_queries.list_runs(self._runs, query or RunFilter(), _run_of)

    def count_runs(self, query: RunFilter | None = None) -> dict[str, int]:
        return firestore_queries.count_runs(self._runs, query or RunFilter(), _run_of)

    def recent_runs(self, since: datetime, limit: int = 500) -> list[RunState]:
        return firestore_queries.recent_runs(self._runs, since, limit, _run_of)

    def change_mark(self, run_id: str) -> tuple[int, str] | None:
        return firestore_queries.change_mark(self._runs.document(run_id), EVENTS)

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

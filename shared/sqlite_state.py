"""StateStore on SQLite: the embedded default, one file under CHIMERA_HOME."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Protocol, runtime_checkable

from shared import sqlite_queries
from shared.errors import Conflict
from shared.history import EVENT_LOG_CAP, RETRIES_FOLDED, RETRY, fold_retries
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
from shared.sqlite_db import SqliteDatabase
from shared.state import Pruned, no_tasks, prefix_end
from shared.task_queue import TaskQueue, TaskRef, TransactionalQueue, cancel_all, enqueue_all

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    request_key TEXT NOT NULL UNIQUE,
    status TEXT NOT NULL,
    version INTEGER NOT NULL,
    doc TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS runs_by_status ON runs (status, created_at);
CREATE INDEX IF NOT EXISTS runs_by_created ON runs (created_at);
CREATE INDEX IF NOT EXISTS runs_by_status_updated ON runs (status, updated_at, run_id);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL,
    at TEXT NOT NULL,
    doc TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_run ON events (run_id, seq);
CREATE TABLE IF NOT EXISTS step_outcomes (
    run_id TEXT NOT NULL,
    step_id TEXT NOT NULL,
    doc TEXT NOT NULL,
    PRIMARY KEY (run_id, step_id)
);
CREATE TABLE IF NOT EXISTS breakers (
    name TEXT PRIMARY KEY,
    version INTEGER NOT NULL,
    doc TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS rejections (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    doc TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS keys (
    name TEXT PRIMARY KEY,
    key_hash TEXT NOT NULL UNIQUE,
    doc TEXT NOT NULL
);
"""

FINISHED = tuple(s.value for s in RunStatus if s.terminal)


@runtime_checkable
class FinishedTasks(Protocol):
    """A queue in the store's database that can forget a pruned run's finished tasks in the
    store's own transaction (the local queue)."""

    def forget_finished(
        self, conn: sqlite3.Connection, run_ids: Sequence[str], *, dry_run: bool = False
    ) -> int: ...


def prefix_query(prefix: str, limit: int) -> tuple[str, tuple[object, ...]]:
    """The ids starting with `prefix`: a range on the primary key, which its index answers
    however many runs there are (BINARY collation compares UTF-8 bytes, in code point order)."""
    end = prefix_end(prefix)
    if end is None:
        return "SELECT run_id FROM runs WHERE run_id >= ? ORDER BY run_id LIMIT ?", (prefix, limit)
    sql = "SELECT run_id FROM runs WHERE run_id >= ? AND run_id < ? ORDER BY run_id LIMIT ?"
    return sql, (prefix, end, limit)


class SqliteStateStore:
    """Runs as JSON documents beside an event table and a step ledger.

    Given a TransactionalQueue on the same database (the local queue), a transition and its
    tasks commit together, and pruning a run forgets its finished tasks in the same write;
    given any other queue, tasks are enqueued right after the commit.
    """

    def __init__(
        self, db: SqliteDatabase, queue: TaskQueue | None = None, *, event_cap: int = EVENT_LOG_CAP
    ) -> None:
        self.db = db
        self.queue = queue
        self.event_cap = event_cap
        # Decided once: whether the queue can join this store's transactions.
        self._joined: TransactionalQueue | None = (
            queue if isinstance(queue, TransactionalQueue) and queue.db is db else None
        )
        db.ensure_schema(SCHEMA)
        sqlite_queries.ensure_query_columns(db)

    def _emit(self, conn: sqlite3.Connection, tasks: Sequence[Task]) -> list[Task]:
        """Queue tasks inside the transaction if we can; return those left for after it."""
        if self._joined is None:
            return list(tasks)
        for task in tasks:
            self._joined.insert(conn, task)
        return []

    def _before_commit(self, watchdogs: Sequence[Task]) -> None:
        """Watchdogs go first where the queue is not in the transaction (StateStore says why)."""
        if self._joined is None:
            enqueue_all(self.queue, watchdogs)

    def create_run(
        self,
        run: RunState,
        *,
        events: Sequence[Event] = (),
        tasks: Sequence[Task] = (),
        watchdogs: Sequence[Task] = (),
    ) -> tuple[RunState, bool]:
        self._before_commit(watchdogs)
        with self.db.transaction() as conn:
            row = conn.execute("SELECT doc FROM runs WHERE run_id = ?", (run.run_id,)).fetchone()
            if row is not None:
                return RunState.model_validate_json(row["doc"]), False
            stored = run.evolve(version=1, updated_at=utcnow())
            conn.execute(
                "INSERT INTO runs (run_id, request_key, status, version, doc, created_at,"
                " updated_at, search_keys, current_tools) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    stored.run_id,
                    stored.request_key,
                    stored.status.value,
                    stored.version,
                    stored.model_dump_json(),
                    stored.created_at.isoformat(),
                    stored.updated_at.isoformat(),
                    *sqlite_queries.row_columns(stored).values(),
                ),
            )
            self._insert_events(conn, events)
            later = self._emit(conn, tasks)
            if self._joined is not None:
                self._emit(conn, watchdogs)
        enqueue_all(self.queue, later)
        return stored, True

    def load(self, run_id: str) -> RunState | None:
        row = (
            self.db.connection()
            .execute("SELECT doc FROM runs WHERE run_id = ?", (run_id,))
            .fetchone()
        )
        return RunState.model_validate_json(row["doc"]) if row else None

    def run_ids_with_prefix(self, prefix: str, limit: int) -> list[str]:
        rows = self.db.connection().execute(*prefix_query(prefix, limit)).fetchall()
        return [r["run_id"] for r in rows]

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
        stored = run.evolve(version=expected_version + 1, updated_at=utcnow())
        self._before_commit(watchdogs)
        with self.db.transaction() as conn:
            changed = conn.execute(
                "UPDATE runs SET status = ?, version = ?, doc = ?, updated_at = ?,"
                " current_tools = ? WHERE run_id = ? AND version = ?",
                (
                    stored.status.value,
                    stored.version,
                    stored.model_dump_json(),
                    stored.updated_at.isoformat(),
                    sqlite_queries.row_columns(stored)["current_tools"],
                    stored.run_id,
                    expected_version,
                ),
            ).rowcount
            if changed != 1:
                raise Conflict(f"run {run.run_id} is not at version {expected_version}")
            self._insert_events(conn, events)
            conn.executemany(
                "INSERT OR IGNORE INTO step_outcomes (run_id, step_id, doc) VALUES (?, ?, ?)",
                [(o.run_id, o.step_id, o.model_dump_json()) for o in outcomes],
            )
            later = self._emit(conn, tasks)
            if self._joined is not None:
                self._emit(conn, watchdogs)
                for task in cancelled:
                    self._joined.delete_waiting(conn, task)
        enqueue_all(self.queue, later)
        if self._joined is None:
            cancel_all(self.queue, cancelled)
        return stored

    def _insert_events(self, conn: sqlite3.Connection, events: Sequence[Event]) -> None:
        conn.executemany(
            "INSERT INTO events (run_id, at, doc) VALUES (?, ?, ?)",
            [(e.run_id, e.at.isoformat(), e.model_dump_json()) for e in events],
        )

    def append_event(self, event: Event) -> None:
        with self.db.transaction() as conn:
            self._insert_events(conn, [event])
            self._fold_past_cap(conn, event.run_id)

    def _fold_past_cap(self, conn: sqlite3.Connection, run_id: str) -> None:
        """Fold the run's older retries if its log is past the cap, inside the append's write
        (BEGIN IMMEDIATE: no other append can interleave)."""
        count_sql = "SELECT COUNT(*) FROM events WHERE run_id = ?"
        (count,) = conn.execute(count_sql, (run_id,)).fetchone()
        if count <= self.event_cap:
            return
        rows = conn.execute(
            "SELECT seq, doc FROM events WHERE run_id = ? AND json_extract(doc, '$.kind') IN"
            " (?, ?) ORDER BY seq",
            (run_id, RETRY, RETRIES_FOLDED),
        ).fetchall()
        folding = fold_retries([(r["seq"], Event.model_validate_json(r["doc"])) for r in rows])
        conn.executemany(
            "UPDATE events SET at = ?, doc = ? WHERE seq = ?",
            [(e.at.isoformat(), e.model_dump_json(), seq) for seq, e in folding.writes.items()],
        )
        conn.executemany("DELETE FROM events WHERE seq = ?", [(seq,) for seq in folding.deletes])

    def events(self, run_id: str) -> list[Event]:
        rows = (
            self.db.connection()
            .execute("SELECT doc FROM events WHERE run_id = ? ORDER BY seq", (run_id,))
            .fetchall()
        )
        return [Event.model_validate_json(r["doc"]) for r in rows]

    def record_outcome(
        self, outcome: StepOutcome, *, then: Callable[[StepOutcome], Sequence[Task]] = no_tasks
    ) -> StepOutcome:
        with self.db.transaction() as conn:
            created = conn.execute(
                "INSERT OR IGNORE INTO step_outcomes (run_id, step_id, doc) VALUES (?, ?, ?)",
                (outcome.run_id, outcome.step_id, outcome.model_dump_json()),
            ).rowcount
            if created:
                stored = outcome
            else:
                row = conn.execute(
                    "SELECT doc FROM step_outcomes WHERE run_id = ? AND step_id = ?",
                    (outcome.run_id, outcome.step_id),
                ).fetchone()
                stored = StepOutcome.model_validate_json(row["doc"])
            left = self._emit(conn, then(stored))
        enqueue_all(self.queue, left)
        return stored

    def outcome(self, run_id: str, step_id: str) -> StepOutcome | None:
        row = (
            self.db.connection()
            .execute(
                "SELECT doc FROM step_outcomes WHERE run_id = ? AND step_id = ?",
                (run_id, step_id),
            )
            .fetchone()
        )
        return StepOutcome.model_validate_json(row["doc"]) if row else None

    def outcomes(self, run_id: str) -> dict[str, StepOutcome]:
        rows = (
            self.db.connection()
            .execute("SELECT step_id, doc FROM step_outcomes WHERE run_id = ?", (run_id,))
            .fetchall()
        )
        return {r["step_id"]: StepOutcome.model_validate_json(r["doc"]) for r in rows}

    def discard_outcome(self, run_id: str, step_id: str) -> None:
        with self.db.transaction() as conn:
            conn.execute(
                "DELETE FROM step_outcomes WHERE run_id = ? AND step_id = ?", (run_id, step_id)
            )

    def prune(
        self, older_than: datetime, *, limit: int | None = None, dry_run: bool = False
    ) -> Pruned:
        if dry_run:
            with self._snapshot() as conn:
                return self._pruned(conn, older_than, limit, delete=False)
        with self.db.transaction() as conn:
            return self._pruned(conn, older_than, limit, delete=True)

    def _pruned(
        self, conn: sqlite3.Connection, older_than: datetime, limit: int | None, *, delete: bool
    ) -> Pruned:
        # Formatted as updated_at is (isoformat in UTC, which leaves out a zero fraction), so
        # the text compares as the times do.
        cutoff = older_than.astimezone(UTC).isoformat()
        # Oldest first from each status's own stretch of the index, already in order, then the
        # two merged: a backlog of thousands is never sorted to take a batch off it.
        each = (
            "SELECT * FROM (SELECT run_id, updated_at FROM runs WHERE status = ?"
            " AND updated_at < ? ORDER BY updated_at, run_id LIMIT ?)"
        )
        rows = conn.execute(
            " UNION ALL ".join([each] * len(FINISHED)) + " ORDER BY updated_at, run_id LIMIT ?",
            (
                *(
                    v
                    for status in FINISHED
                    for v in (status, cutoff, -1 if limit is None else limit)
                ),
                -1 if limit is None else limit,
            ),
        ).fetchall()
        run_ids = tuple(r["run_id"] for r in rows)
        if not run_ids:
            return Pruned()
        ids = (json.dumps(run_ids),)
        which = "WHERE run_id IN (SELECT value FROM json_each(?))"
        if delete:
            events = conn.execute(f"DELETE FROM events {which}", ids).rowcount
            ledger = conn.execute(f"DELETE FROM step_outcomes {which}", ids).rowcount
            conn.execute(f"DELETE FROM runs {which}", ids)
        else:
            (events,) = conn.execute(f"SELECT COUNT(*) FROM events {which}", ids).fetchone()
            (ledger,) = conn.execute(f"SELECT COUNT(*) FROM step_outcomes {which}", ids).fetchone()
        tasks = 0
        if isinstance(self._joined, FinishedTasks):
            tasks = self._joined.forget_finished(conn, run_ids, dry_run=not delete)
        return Pruned(run_ids, events=events, ledger=ledger, tasks=tasks)

    @contextmanager
    def _snapshot(self) -> Iterator[sqlite3.Connection]:
        """A read transaction: one consistent view, without taking the write lock."""
        conn = self.db.connection()
        if conn.in_transaction:
            yield conn
            return
        conn.execute("BEGIN")
        try:
            yield conn
        finally:
            conn.execute("COMMIT")

    def list_runs(self, query: RunFilter | None = None) -> list[RunState]:
        return sqlite_queries.list_runs(self.db.connection(), query or RunFilter())

    def count_runs(self, query: RunFilter | None = None) -> dict[str, int]:
        return sqlite_queries.count_runs(self.db.connection(), query or RunFilter())

    def recent_runs(self, since: datetime, limit: int = 500) -> list[RunState]:
        return sqlite_queries.recent_runs(self.db.connection(), since, limit)

    def change_mark(self, run_id: str) -> tuple[int, str] | None:
        return sqlite_queries.change_mark(self.db.connection(), run_id)

    def record_rejection(self, rejection: Rejection) -> None:
        with self.db.transaction() as conn:
            conn.execute("INSERT INTO rejections (doc) VALUES (?)", (rejection.model_dump_json(),))

    def rejections(self, limit: int = 50) -> list[Rejection]:
        rows = (
            self.db.connection()
            .execute("SELECT doc FROM rejections ORDER BY seq DESC LIMIT ?", (limit,))
            .fetchall()
        )
        return [Rejection.model_validate_json(r["doc"]) for r in rows]

    def breaker(self, name: str) -> BreakerState:
        row = (
            self.db.connection()
            .execute("SELECT doc FROM breakers WHERE name = ?", (name,))
            .fetchone()
        )
        return BreakerState.model_validate_json(row["doc"]) if row else BreakerState(name=name)

    def save_breaker(self, state: BreakerState, *, expected_version: int) -> bool:
        stored = state.model_copy(update={"version": expected_version + 1})
        with self.db.transaction() as conn:
            if expected_version == 0:
                changed = conn.execute(
                    "INSERT OR IGNORE INTO breakers (name, version, doc) VALUES (?, 1, ?)",
                    (state.name, stored.model_dump_json()),
                ).rowcount
            else:
                changed = conn.execute(
                    "UPDATE breakers SET version = ?, doc = ? WHERE name = ? AND version = ?",
                    (stored.version, stored.model_dump_json(), state.name, expected_version),
                ).rowcount
        return changed == 1

    def create_key(self, key: ApiKey) -> bool:
        with self.db.transaction() as conn:
            created = conn.execute(
                "INSERT OR IGNORE INTO keys (name, key_hash, doc) VALUES (?, ?, ?)",
                (key.name, key.key_hash, key.model_dump_json()),
            ).rowcount
        return created == 1

    def list_keys(self) -> list[ApiKey]:
        rows = self.db.connection().execute("SELECT doc FROM keys ORDER BY name").fetchall()
        return [ApiKey.model_validate_json(r["doc"]) for r in rows]

    def key_by_hash(self, key_hash: str) -> ApiKey | None:
        row = (
            self.db.connection()
            .execute("SELECT doc FROM keys WHERE key_hash = ?", (key_hash,))
            .fetchone()
        )
        return ApiKey.model_validate_json(row["doc"]) if row else None

    def revoke_key(self, name: str, at: datetime) -> ApiKey | None:
        with self.db.transaction() as conn:
            row = conn.execute("SELECT doc FROM keys WHERE name = ?", (name,)).fetchone()
            if row is None:
                return None
            key = ApiKey.model_validate_json(row["doc"])
            if key.revoked_at is None:
                key = key.model_copy(update={"revoked_at": at})
                conn.execute(
                    "UPDATE keys SET doc = ? WHERE name = ?", (key.model_dump_json(), name)
                )
        return key

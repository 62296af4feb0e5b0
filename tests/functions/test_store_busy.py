"""A state store that cannot take its write lock in time: every function answers 503 with a
Retry-After, so the caller or the queue sends again; nothing half-written, no trace."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from shared.local_queue import LocalTaskQueue
from shared.model import OrchestratorTask, RunStatus
from shared.runtime import Runtime, install
from shared.settings import Settings
from shared.sqlite_db import DatabaseBusy, SqliteDatabase
from shared.sqlite_state import SqliteStateStore
from tests.conftest import make_request, make_run
from tests.functions.conftest import client_of, signed_in

BUSY_MS = 50


@pytest.fixture
def store(tmp_path):
    db = SqliteDatabase(tmp_path / "state.db", busy_timeout_ms=BUSY_MS)
    queue = LocalTaskQueue(db)
    store = SqliteStateStore(db, queue)
    install(Runtime(Settings(agent_reasoning=False, home=tmp_path / "home"), store, queue))
    return store


@contextmanager
def locked(store: SqliteStateStore) -> Iterator[None]:
    """Another connection holds the database's write lock meanwhile."""
    holder = sqlite3.connect(store.db.path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def test_a_write_that_cannot_get_the_lock_is_a_store_busy_and_still_an_operational_error(tmp_path):
    db = SqliteDatabase(tmp_path / "state.db", busy_timeout_ms=BUSY_MS)
    db.ensure_schema("CREATE TABLE IF NOT EXISTS t (x)")
    holder = sqlite3.connect(db.path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    failed: list[BaseException] = []

    def write() -> None:
        try:
            with db.transaction() as conn:
                conn.execute("INSERT INTO t VALUES (1)")
        except BaseException as exc:
            failed.append(exc)

    thread = threading.Thread(target=write)
    thread.start()
    thread.join()
    holder.execute("ROLLBACK")
    [error] = failed
    assert isinstance(error, DatabaseBusy) and isinstance(error, sqlite3.OperationalError)
    assert error.code == "store_busy" and error.retry_after == 1
    assert db.connection().execute("SELECT COUNT(*) FROM t").fetchone()[0] == 0


def test_the_intake_answers_503_and_creates_nothing_while_the_store_is_locked(store):
    client = signed_in(client_of("orchestrator/main.py", "intake_http"))
    body = make_request().model_dump(mode="json")
    with locked(store):
        answer = client.post("/runs", json=body)
    assert answer.status_code == 503 and answer.headers["Retry-After"] == "1"
    assert answer.get_json()["error"]["code"] == "store_busy"
    assert store.load(make_request().run_id()) is None
    # Sent again once the lock is free, it is taken in.
    assert client.post("/runs", json=body).status_code == 202


def test_an_orchestrator_task_answers_503_and_the_run_waits_while_the_store_is_locked(store):
    run, _ = store.create_run(make_run())
    client = client_of("orchestrator/main.py", "handle_task", signed=True)
    start = OrchestratorTask(run_id=run.run_id, kind="start")

    def deliver():
        return client.post(
            "/",
            data=start.model_dump_json(),
            content_type="application/json",
            headers={"X-CloudTasks-TaskName": f"{run.run_id}-start"},
        )

    with locked(store):
        answer = deliver()
    assert answer.status_code == 503 and answer.get_json()["error"]["code"] == "store_busy"
    assert store.load(run.run_id).status is RunStatus.PENDING
    # The queue's next attempt goes through.
    assert deliver().status_code == 200
    assert store.load(run.run_id).status is RunStatus.RUNNING

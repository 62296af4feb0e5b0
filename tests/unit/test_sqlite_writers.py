"""SqliteDatabase's writers: one at a time per file in a process, however many threads and
SqliteDatabase objects; nested transactions join; a writer that waits too long is StoreBusy."""

from __future__ import annotations

import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.errors import StoreBusy
from shared.sqlite_db import SqliteDatabase

SCHEMA = "CREATE TABLE IF NOT EXISTS counter (n INTEGER NOT NULL); "


def _counter(db: SqliteDatabase) -> int:
    return db.connection().execute("SELECT COALESCE(SUM(n), 0) FROM counter").fetchone()[0]


@settings(max_examples=10, deadline=None)
@given(threads=st.integers(2, 24), writes=st.integers(1, 8), handles=st.integers(1, 3))
def test_every_write_of_many_threads_lands_once_and_none_overlaps(
    tmp_path_factory, threads, writes, handles
):
    path = tmp_path_factory.mktemp("db") / "state.db"
    dbs = [SqliteDatabase(path) for _ in range(handles)]  # several handles on one file
    dbs[0].ensure_schema(SCHEMA)
    inside, most = 0, 0
    guard = threading.Lock()

    def write(db: SqliteDatabase) -> None:
        nonlocal inside, most
        for _ in range(writes):
            with db.transaction() as conn:
                with guard:
                    inside += 1
                    most = max(most, inside)
                conn.execute("INSERT INTO counter (n) VALUES (1)")
                with db.transaction() as nested:  # joins the outer one
                    nested.execute("INSERT INTO counter (n) VALUES (1)")
                with guard:
                    inside -= 1

    workers = [threading.Thread(target=write, args=(dbs[i % handles],)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert _counter(dbs[0]) == 2 * threads * writes
    assert most == 1


def test_a_writer_that_waits_past_the_busy_timeout_is_store_busy_and_writes_nothing(tmp_path):
    db = SqliteDatabase(tmp_path / "state.db", busy_timeout_ms=50)
    db.ensure_schema(SCHEMA)
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        with db.transaction() as conn:
            conn.execute("INSERT INTO counter (n) VALUES (1)")
            holding.set()
            release.wait(5)

    holder = threading.Thread(target=hold)
    holder.start()
    holding.wait(5)
    with pytest.raises(StoreBusy), db.transaction() as conn:
        conn.execute("INSERT INTO counter (n) VALUES (100)")
    release.set()
    holder.join()
    assert _counter(db) == 1
    # The lock is free again: the next writer goes through.
    with db.transaction() as conn:
        conn.execute("INSERT INTO counter (n) VALUES (1)")
    assert _counter(db) == 2

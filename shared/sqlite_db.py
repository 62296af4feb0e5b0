"""One SQLite database shared by the embedded adapters, safe for threads and processes."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


class SqliteDatabase:
    """A file in WAL mode, one connection per thread, write transactions that take the lock first.

    `BEGIN IMMEDIATE` takes the write lock up front, so two processes never both read a version
    and then fail to upgrade; the busy timeout makes them queue instead of erroring.
    """

    def __init__(self, path: str | Path, *, busy_timeout_ms: int = 10_000) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._busy_timeout_ms = busy_timeout_ms
        self._local = threading.local()
        self._schemas: set[str] = set()
        self._schema_lock = threading.Lock()
        self._commit_hooks: list[Callable[[], None]] = []

    def connection(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(
                self.path, isolation_level=None, timeout=self._busy_timeout_ms / 1000
            )
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute(f"PRAGMA busy_timeout={self._busy_timeout_ms}")
            self._local.conn = conn
        return conn

    def ensure_schema(self, ddl: str) -> None:
        with self._schema_lock:
            if ddl in self._schemas:
                return
            self.connection().executescript(ddl)
            self._schemas.add(ddl)

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction; nested calls join the outer one."""
        conn = self.connection()
        if conn.in_transaction:
            yield conn
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        for hook in self._commit_hooks:
            hook()

    def on_commit(self, hook: Callable[[], None]) -> None:
        """Call `hook` after every write transaction commits (e.g. to wake a dispatcher)."""
        self._commit_hooks.append(hook)

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

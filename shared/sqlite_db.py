"""One SQLite database shared by the embedded adapters, safe for threads and processes."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from shared.errors import StoreBusy


class DatabaseBusy(StoreBusy, sqlite3.OperationalError):
    """The write lock did not come within the busy timeout: a StoreBusy to the functions (a
    503, sent again), still an OperationalError to the code that retries those itself."""

    @classmethod
    def or_error(cls, exc: sqlite3.OperationalError, waited_ms: int) -> sqlite3.OperationalError:
        """`exc` as DatabaseBusy when it says the database is locked or busy, else itself."""
        if "locked" not in str(exc) and "busy" not in str(exc):
            return exc
        return cls(f"the database stayed locked for {waited_ms / 1000:g} s", retry_after=1)


# One writer at a time per database file in this process, whichever SqliteDatabase opened it.
_writers: dict[Path, threading.Lock] = {}
_writers_lock = threading.Lock()


def _writer_of(path: Path) -> threading.Lock:
    with _writers_lock:
        return _writers.setdefault(path.resolve(), threading.Lock())


class SqliteDatabase:
    """A file in WAL mode, one connection per thread, write transactions that take the lock first.

    `BEGIN IMMEDIATE` takes the write lock up front, so two processes never both read a version
    and then fail to upgrade; the busy timeout makes them queue instead of erroring. Within a
    process, writers queue on a lock of their own before that: SQLite's busy handler has
    waiters sleep and retry, so with a hundred threads some lost every retry for the whole
    timeout while the holder waited for the interpreter behind them; blocked on a lock, a
    waiter takes no CPU, and the holder finishes sooner.
    """

    def __init__(self, path: str | Path, *, busy_timeout_ms: int = 10_000) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._busy_timeout_ms = busy_timeout_ms
        self._local = threading.local()
        self._schemas: set[str] = set()
        self._schema_lock = threading.Lock()
        self._writer = _writer_of(self.path)
        self._commit_hooks: list[Callable[[], None]] = []
        self._before_commit: list[Callable[[sqlite3.Connection], None]] = []

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
        """A write transaction; nested calls join the outer one.

        Just before it commits, the `before_commit` hooks add their writes to it (the
        dispatcher records finished deliveries so, on whatever write comes next); after it
        commits, what `after_this_commit` asked for runs, and the `on_commit` hooks; if it
        rolls back, what `if_rolled_back` asked for runs instead.
        """
        conn = self.connection()
        if conn.in_transaction:
            yield conn
            return
        if not self._writer.acquire(timeout=self._busy_timeout_ms / 1000):
            raise DatabaseBusy(
                f"the database stayed locked for {self._busy_timeout_ms / 1000:g} s",
                retry_after=1,
            )
        try:
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                raise DatabaseBusy.or_error(exc, self._busy_timeout_ms) from exc
            self._local.after, self._local.undo = [], []
            try:
                yield conn
                for write in self._before_commit:
                    write(conn)
                try:
                    conn.execute("COMMIT")
                except sqlite3.OperationalError as exc:
                    raise DatabaseBusy.or_error(exc, self._busy_timeout_ms) from exc
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                undo, self._local.after, self._local.undo = self._local.undo, [], []
                for action in undo:
                    action()
                raise
        finally:
            self._writer.release()
        after, self._local.after, self._local.undo = self._local.after, [], []
        for action in after:
            action()
        for hook in self._commit_hooks:
            hook()

    def after_this_commit(self, action: Callable[[], None]) -> None:
        """Run `action` once the current thread's write transaction commits."""
        self._local.after.append(action)

    def if_rolled_back(self, action: Callable[[], None]) -> None:
        """Run `action` if the current thread's write transaction rolls back."""
        self._local.undo.append(action)

    def before_commit(self, write: Callable[[sqlite3.Connection], None]) -> None:
        """Let `write` add to every write transaction, just before it commits. It must not
        fail the transaction it joins: it catches its own errors."""
        self._before_commit.append(write)

    def drop_before_commit(self, write: Callable[[sqlite3.Connection], None]) -> None:
        """No longer let `write` add to transactions (a dispatcher that stopped)."""
        if write in self._before_commit:
            self._before_commit.remove(write)

    def on_commit(self, hook: Callable[[], None]) -> None:
        """Call `hook` after every write transaction commits (e.g. to wake a dispatcher)."""
        self._commit_hooks.append(hook)

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

"""Counts every SQL statement and write transaction a process makes through `sqlite3`.

Installed before an engine opens its database, it wraps `sqlite3.connect` (and the dbapi2
module's, which SQLAlchemy calls) so that each new connection reports its statements through
sqlite3's trace callback: the same count for Chimera's own connections and for DBOS's.
A write transaction is a COMMIT of a transaction that wrote (an INSERT, UPDATE, DELETE or
REPLACE since its BEGIN); a read-only BEGIN ... COMMIT is not one.
"""

from __future__ import annotations

import sqlite3
import sqlite3.dbapi2
import threading
from dataclasses import dataclass, field
from typing import Any

WRITES = ("INSERT", "UPDATE", "DELETE", "REPLACE")


@dataclass
class SqlCounts:
    statements: int = 0
    write_transactions: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return {"statements": self.statements, "write_transactions": self.write_transactions}


COUNTS = SqlCounts()
_installed = False


def install() -> SqlCounts:
    """Count from now on in this process (once; later calls return the same counts)."""
    global _installed
    if _installed:
        return COUNTS
    _installed = True
    connect = sqlite3.connect

    def counted_connect(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        conn = connect(*args, **kwargs)
        wrote = False

        def trace(statement: str) -> None:
            nonlocal wrote
            verb = statement.lstrip()[:8].upper()
            with COUNTS._lock:
                COUNTS.statements += 1
                if verb.startswith(WRITES):
                    wrote = True
                elif verb.startswith(("COMMIT", "END")):
                    COUNTS.write_transactions += wrote
                    wrote = False
                elif verb.startswith("ROLLBACK"):
                    wrote = False

        conn.set_trace_callback(trace)
        return conn

    # SQLAlchemy's pysqlite dialect connects through the dbapi2 module's name.
    sqlite3.connect = counted_connect  # type: ignore[assignment]
    sqlite3.dbapi2.connect = counted_connect  # type: ignore[assignment]
    return COUNTS

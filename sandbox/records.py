"""The sandbox's call log: every vendor call it answered, durable in <home>/sandbox.db."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from shared.sqlite_db import SqliteDatabase

DB_NAME = "sandbox.db"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sandbox_calls (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    vendor TEXT NOT NULL,
    action TEXT NOT NULL,
    run_id TEXT,
    status INTEGER NOT NULL,
    fault TEXT,
    dropped INTEGER NOT NULL DEFAULT 0,
    method TEXT NOT NULL,
    path TEXT NOT NULL,
    request TEXT NOT NULL,
    at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS sandbox_calls_by_run ON sandbox_calls (run_id);
CREATE INDEX IF NOT EXISTS sandbox_calls_by_vendor ON sandbox_calls (vendor, action);
"""


def sandbox_database(home: Path | str) -> SqliteDatabase:
    """The one database file holding both the call log and the vendors' state."""
    return SqliteDatabase(Path(home) / DB_NAME)


class RecordStore:
    """Reads and writes the call log; safe to open from several processes at once."""

    def __init__(self, home: Path | str, *, db: SqliteDatabase | None = None) -> None:
        self._db = db or sandbox_database(home)
        self._db.ensure_schema(_SCHEMA)
        self._add_dropped_column()

    def _add_dropped_column(self) -> None:
        # A call log from before `drop` existed: add the column, every old call kept its work.
        conn = self._db.connection()
        columns = {row["name"] for row in conn.execute("PRAGMA table_info(sandbox_calls)")}
        if "dropped" not in columns:
            with self._db.transaction() as tx:
                tx.execute(
                    "ALTER TABLE sandbox_calls ADD COLUMN dropped INTEGER NOT NULL DEFAULT 0"
                )

    def record(
        self,
        *,
        vendor: str,
        action: str,
        run_id: str | None,
        status: int,
        request: Any,
        fault: str | None = None,
        method: str = "",
        path: str = "",
        dropped: bool = False,
    ) -> None:
        """Append one call. `request` must already be free of secrets; `dropped` says the
        vendor answered success but kept nothing."""
        with self._db.transaction() as conn:
            conn.execute(
                "INSERT INTO sandbox_calls"
                " (vendor, action, run_id, status, fault, dropped, method, path, request, at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    vendor,
                    action,
                    run_id,
                    status,
                    fault,
                    int(dropped),
                    method,
                    path,
                    json.dumps(request, sort_keys=True, default=str),
                    datetime.now(UTC).isoformat(),
                ),
            )

    def list(
        self, vendor: str | None = None, action: str | None = None, run_id: str | None = None
    ) -> list[dict[str, Any]]:
        """Calls in the order they were answered, optionally filtered."""
        clauses, params = [], []
        for column, value in (("vendor", vendor), ("action", action), ("run_id", run_id)):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = (
            self._db.connection()
            .execute(f"SELECT * FROM sandbox_calls{where} ORDER BY id", params)
            .fetchall()
        )
        return [
            {
                "id": row["id"],
                "vendor": row["vendor"],
                "action": row["action"],
                "run_id": row["run_id"],
                "status": row["status"],
                "fault": row["fault"],
                "dropped": bool(row["dropped"]),
                "method": row["method"],
                "path": row["path"],
                "request": json.loads(row["request"]),
                "at": row["at"],
            }
            for row in rows
        ]

    def clear(self) -> None:
        """Forget every recorded call (the vendors' state stays)."""
        with self._db.transaction() as conn:
            conn.execute("DELETE FROM sandbox_calls")

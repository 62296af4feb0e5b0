"""The console's reads on SQLite: filtered, searched and paged runs, counts per status, recently
changed runs, and a run's change mark; with the columns and indexes they need.

Two columns beside each run's document carry what a filter compares, written with the document
in the same statement (no extra write): its business keys, folded (the search), and the tools
of its current steps (the tool filter).
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from typing import Any

from shared.model import RunState
from shared.run_filter import RunFilter, business_keys, current_tools, status_counts
from shared.sqlite_db import SqliteDatabase

# Between two keys: a search never spans two of them.
KEY_SEPARATOR = "\x1f"
COLUMNS = {"search_keys": "TEXT NOT NULL DEFAULT ''", "current_tools": "TEXT NOT NULL DEFAULT ''"}
INDEXES = """
CREATE INDEX IF NOT EXISTS runs_newest ON runs (created_at DESC, run_id DESC);
CREATE INDEX IF NOT EXISTS runs_newest_by_status ON runs (status, created_at DESC, run_id DESC);
CREATE INDEX IF NOT EXISTS runs_by_updated ON runs (updated_at);
"""


def ensure_query_columns(db: SqliteDatabase) -> None:
    """Add the filter columns and indexes to a database made before them, filling the columns
    from the documents; once, whichever process gets there first."""
    conn = db.connection()
    if _missing_columns(conn):
        with db.transaction() as conn:
            missing = _missing_columns(conn)  # again, under the write lock
            for name in missing:
                conn.execute(f"ALTER TABLE runs ADD COLUMN {name} {COLUMNS[name]}")
            if missing:
                rows = conn.execute("SELECT doc FROM runs").fetchall()
                conn.executemany(
                    "UPDATE runs SET search_keys = ?, current_tools = ? WHERE run_id = ?",
                    [
                        (*row_columns(run).values(), run.run_id)
                        for run in (RunState.model_validate_json(r["doc"]) for r in rows)
                    ],
                )
    db.ensure_schema(INDEXES)


def _missing_columns(conn: sqlite3.Connection) -> list[str]:
    have = {row["name"] for row in conn.execute("PRAGMA table_info(runs)")}
    return [name for name in COLUMNS if name not in have]


def row_columns(run: RunState) -> dict[str, str]:
    """The filter columns of `run`'s row, in COLUMNS order."""
    return {
        "search_keys": KEY_SEPARATOR + KEY_SEPARATOR.join(business_keys(run)) + KEY_SEPARATOR,
        "current_tools": "," + ",".join(current_tools(run)) + ",",
    }


def _when(value: datetime) -> str:
    # As the rows keep times (isoformat in UTC), so the text compares as the times do.
    return value.astimezone(UTC).isoformat()


def _where(query: RunFilter, *, with_status: bool = True) -> tuple[str, list[Any]]:
    conditions: list[str] = []
    params: list[Any] = []
    if with_status and query.status is not None:
        conditions.append("status = ?")
        params.append(query.status.value)
    if query.attention is not None:
        # The flags live in the document only: few runs carry any, so no column of its own.
        conditions.append(
            "EXISTS (SELECT 1 FROM json_each(runs.doc, '$.attention') WHERE value = ?)"
        )
        params.append(query.attention)
    if query.tool is not None:
        conditions.append("instr(current_tools, ?) > 0")
        params.append(f",{query.tool},")
    if query.created_after is not None:
        conditions.append("created_at >= ?")
        params.append(_when(query.created_after))
    if query.created_before is not None:
        conditions.append("created_at < ?")
        params.append(_when(query.created_before))
    if query.needle:
        conditions.append("(instr(search_keys, ?) > 0 OR substr(run_id, 1, ?) = ?)")
        prefix = query.search or ""
        params += [query.needle, len(prefix), prefix]
    return (" WHERE " + " AND ".join(conditions)) if conditions else "", params


def list_runs(conn: sqlite3.Connection, query: RunFilter) -> list[RunState]:
    where, params = _where(query)
    rows = conn.execute(
        f"SELECT doc FROM runs{where} ORDER BY created_at DESC, run_id DESC LIMIT ? OFFSET ?",
        [*params, query.limit, query.offset],
    ).fetchall()
    return [RunState.model_validate_json(r["doc"]) for r in rows]


def count_runs(conn: sqlite3.Connection, query: RunFilter) -> dict[str, int]:
    where, params = _where(query, with_status=False)
    counts = status_counts(())
    sql = f"SELECT status, COUNT(*) AS n FROM runs{where} GROUP BY status"
    for row in conn.execute(sql, params):
        counts[row["status"]] = row["n"]
    return counts


def recent_runs(conn: sqlite3.Connection, since: datetime, limit: int) -> list[RunState]:
    rows = conn.execute(
        "SELECT doc FROM runs WHERE updated_at >= ? ORDER BY updated_at DESC LIMIT ?",
        (_when(since), limit),
    ).fetchall()
    return [RunState.model_validate_json(r["doc"]) for r in rows]


def change_mark(conn: sqlite3.Connection, run_id: str) -> tuple[int, str] | None:
    row = conn.execute(
        "SELECT version, (SELECT MAX(seq) FROM events WHERE events.run_id = runs.run_id) AS seq"
        " FROM runs WHERE run_id = ?",
        (run_id,),
    ).fetchone()
    return None if row is None else (row["version"], str(row["seq"] or 0))

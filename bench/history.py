"""How big does the local database grow? 10,000 onboardings, with and without retention.

    .venv/bin/python bench/history.py [--runs 10000] [--per-day 1000] [--retention-days 0,1,7]

First a sample of real onboardings (`--templates`, in process, zero-latency sandbox vendors,
agent reasoning off) gives the shape of one onboarding's records: its run document, events,
ledger records and tasks, as the stack wrote them. Then, per retention (0: kept forever), a
fresh database is filled with `--runs` onboardings cloned from that sample in SQL (fresh run
ids and request keys, the same documents), `--per-day` of them per simulated day, while the
dispatcher's housekeeping runs every simulated hour on a clock moved forward with them, as
the local stack's would. At the end the WAL is checkpointed and the files measured (the
database and its WAL), with the rows left and how long each housekeeping write held the lock.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from support import onboarding, percentile
from werkzeug.test import Client

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from chimera.stack import LocalStack  # noqa: E402
from shared.local_dispatcher import SCHEMA as DISPATCHER_SCHEMA  # noqa: E402
from shared.local_dispatcher import Housekeeping  # noqa: E402
from shared.local_queue import DONE, LocalTaskQueue  # noqa: E402
from shared.model import RunStatus, stable_hash  # noqa: E402
from shared.settings import Settings  # noqa: E402
from shared.sqlite_db import SqliteDatabase  # noqa: E402
from shared.sqlite_state import SqliteStateStore  # noqa: E402

DAY_S = 86400.0
START = datetime(2030, 1, 1, tzinfo=UTC).timestamp()


@dataclass
class Template:
    """One real onboarding's rows, and the tokens a clone replaces in them."""

    run_id: str
    request_id: str
    run: dict
    events: list[dict]
    outcomes: list[dict]
    tasks: list[dict]


def request_id_of(kind: str, i: int) -> str:
    return f"{kind}{i:07d}"  # same length for templates and clones: same-sized documents


def record_templates(n: int) -> list[Template]:
    """n real onboardings through the embedded stack; their rows as the stack wrote them."""
    with tempfile.TemporaryDirectory() as home:
        stack = LocalStack(Settings(home=Path(home), agent_reasoning=False)).start()
        assert stack.runtime is not None
        store, intake = stack.runtime.store, Client(stack.intake())
        try:
            ids = {}
            for k in range(n):
                body = {**onboarding(k, "t", "History"), "request_id": request_id_of("t", k)}
                ids[body["request_id"]] = intake.post("/runs", json=body).get_json()["run_id"]
            while not all((r := store.load(i)) and r.status.terminal for i in ids.values()):
                time.sleep(0.1)
            runs = [store.load(i) for i in ids.values()]
            if any(r is None or r.status is not RunStatus.SUCCEEDED for r in runs):
                raise SystemExit("a template onboarding did not succeed")
        finally:
            stack.stop()
        conn = sqlite3.connect(Path(home) / "chimera.db")
        conn.row_factory = sqlite3.Row

        def rows(sql: str, *params: str) -> list[dict]:
            return [dict(r) for r in conn.execute(sql, params)]

        templates = []
        for request_id, run_id in ids.items():
            (run,) = rows("SELECT * FROM runs WHERE run_id = ?", run_id)
            templates.append(
                Template(
                    run_id,
                    request_id,
                    run,
                    rows("SELECT run_id, at, doc FROM events WHERE run_id = ?", run_id),
                    rows("SELECT * FROM step_outcomes WHERE run_id = ?", run_id),
                    rows("SELECT * FROM tasks WHERE name LIKE ?", run_id + "-%"),
                )
            )
        conn.close()
    return templates


def clone_into(conn: sqlite3.Connection, template: Template, i: int, at: float) -> None:
    """Onboarding i as a copy of `template`, finished at `at` (its tasks done then too)."""
    request_id = request_id_of("h", i)
    run_id = "run-" + stable_hash(f"id:{request_id}", 20)

    def swap(text: str) -> str:
        return text.replace(template.run_id, run_id).replace(template.request_id, request_id)

    when = datetime.fromtimestamp(at, UTC).isoformat()
    run = template.run
    conn.execute(
        "INSERT INTO runs (run_id, request_key, status, version, doc, created_at, updated_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        (
            run_id,
            swap(run["request_key"]),
            run["status"],
            run["version"],
            swap(run["doc"]),
            when,
            when,
        ),
    )
    conn.executemany(
        "INSERT INTO events (run_id, at, doc) VALUES (?, ?, ?)",
        [(run_id, e["at"], swap(e["doc"])) for e in template.events],
    )
    conn.executemany(
        "INSERT INTO step_outcomes (run_id, step_id, doc) VALUES (?, ?, ?)",
        [(run_id, o["step_id"], swap(o["doc"])) for o in template.outcomes],
    )
    conn.executemany(
        "INSERT INTO tasks (name, queue, payload, due_at, state, retry_count, execution_count,"
        " last_status, created_at, finished_at) VALUES (?, ?, ?, ?, ?, 0, 1, 200, ?, ?)",
        [
            (swap(t["name"]), t["queue"], swap(t["payload"]), at, DONE, at, at)
            for t in template.tasks
        ],
    )


def simulate(templates: list[Template], runs: int, per_day: int, retention_days: float) -> dict:
    with tempfile.TemporaryDirectory() as home:
        path = Path(home) / "chimera.db"
        db = SqliteDatabase(path)
        queue = LocalTaskQueue(db)
        store = SqliteStateStore(db, queue)
        db.ensure_schema(DISPATCHER_SCHEMA)
        clock = {"now": START}
        retention = timedelta(days=retention_days) if retention_days else None
        housekeeping = Housekeeping(queue, store, retention=retention, clock=lambda: clock["now"])
        per_hour = max(1, per_day // 24)
        batches_ms: list[float] = []
        began = time.perf_counter()
        for first in range(0, runs, per_hour):
            with db.transaction() as conn:
                for i in range(first, min(first + per_hour, runs)):
                    at = START + i * DAY_S / per_day
                    clone_into(conn, templates[i % len(templates)], i, at)
                    clock["now"] = at
            while True:  # as the dispatcher does: another batch at once while there is a backlog
                started = time.perf_counter()
                pruned = housekeeping.run_once()
                batches_ms.append((time.perf_counter() - started) * 1000)
                if len(pruned.run_ids) < housekeeping.batch:
                    break
        elapsed = time.perf_counter() - began
        conn = db.connection()
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        count = {
            table: conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
            for table in ("runs", "events", "step_outcomes", "tasks")
        }
        page_size, pages, free = (
            conn.execute(f"PRAGMA {p}").fetchone()[0]
            for p in ("page_size", "page_count", "freelist_count")
        )
        wal = path.with_name(path.name + "-wal")
        result = {
            "retention_days": retention_days,
            "onboardings": runs,
            "simulated_days": round(runs / per_day, 1),
            "db_mb": round(path.stat().st_size / 1e6, 1),
            "wal_mb": round((wal.stat().st_size if wal.exists() else 0) / 1e6, 1),
            "live_mb": round((pages - free) * page_size / 1e6, 1),
            "rows": count,
            "housekeeping_p50_ms": round(percentile(batches_ms, 0.5), 1),
            "housekeeping_max_ms": round(max(batches_ms), 1),
            "wall_s": round(elapsed, 1),
        }
        db.close()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--templates", type=int, default=100, help="real onboardings cloned")
    parser.add_argument("--per-day", type=int, default=1000, help="onboardings per simulated day")
    parser.add_argument(
        "--retention-days", default="0,1,7", help="comma-separated; 0 keeps everything"
    )
    args = parser.parse_args()
    began = time.perf_counter()
    templates = record_templates(args.templates)
    sample = templates[0]
    print(
        f"{len(templates)} real onboardings in {time.perf_counter() - began:.1f} s; one is "
        f"{len(sample.events)} events, {len(sample.outcomes)} ledger records, "
        f"{len(sample.tasks)} tasks, a {len(sample.run['doc'])}-byte run document"
    )
    results = []
    for days in (float(d) for d in args.retention_days.split(",")):
        result = simulate(templates, args.runs, args.per_day, days)
        results.append(result)
        print(json.dumps(result))
    print(
        "\n| retention | onboardings | db + wal | live data | runs kept | events kept |"
        " housekeeping write p50 / max |\n|---|---|---|---|---|---|---|"
    )
    for r in results:
        label = f"{r['retention_days']:g} days" if r["retention_days"] else "off (kept forever)"
        print(
            f"| {label} | {r['onboardings']} over {r['simulated_days']} days "
            f"| {r['db_mb'] + r['wal_mb']:.1f} MB | {r['live_mb']} MB | {r['rows']['runs']} "
            f"| {r['rows']['events']} | {r['housekeeping_p50_ms']} / "
            f"{r['housekeeping_max_ms']} ms |"
        )


if __name__ == "__main__":
    main()

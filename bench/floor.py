"""The floor under every engine on this machine: durable SQLite commits in a tight loop.

    .venv/bin/python bench/floor.py [--commits 2000] [--rounds 3]

Each commit is one small INSERT in its own `BEGIN IMMEDIATE` transaction on a WAL database, as
the engines make them. `synchronous=FULL` syncs the WAL on every commit; `NORMAL` (what
Chimera's embedded store uses, shared/sqlite_db.py) syncs at checkpoints only, which survives
a process crash but may lose the last commits to a power cut. The two settings run
interleaved, round by round, so the machine's noise falls on both alike.
"""

from __future__ import annotations

import argparse
import sqlite3
import tempfile
import time
from pathlib import Path
from statistics import median

from support import Table, save_results

SETTINGS = ("FULL", "NORMAL")


def commits_per_second(path: Path, synchronous: str, commits: int) -> float:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.execute("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, doc TEXT NOT NULL)")
    doc = "x" * 300  # about a small run document's size
    began = time.perf_counter()
    for _ in range(commits):
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO t (doc) VALUES (?)", (doc,))
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - began
    conn.close()
    return commits / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--commits", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    rates: dict[str, list[float]] = {s: [] for s in SETTINGS}
    with tempfile.TemporaryDirectory() as home:
        for round_ in range(args.rounds):
            for synchronous in SETTINGS:
                path = Path(home) / f"{synchronous}-{round_}.db"
                rates[synchronous].append(commits_per_second(path, synchronous, args.commits))
    results = {
        s: {"commits_per_s": median(r), "rounds": r, "us_per_commit": 1e6 / median(r)}
        for s, r in rates.items()
    }
    table = Table("floor: durable SQLite commits", ["synchronous", "commits/s", "µs/commit"])
    for s, r in results.items():
        table.row(s, f"{r['commits_per_s']:.0f}", f"{r['us_per_commit']:.0f}")
    ratio = median(rates["NORMAL"]) / median(rates["FULL"])
    table.row("NORMAL / FULL", f"{ratio:.2f}x", "")
    table.print()
    save_results("floor", {"commits": args.commits, "rounds": args.rounds, **results})


if __name__ == "__main__":
    main()

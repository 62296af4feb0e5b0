"""The engine against its peer: the same onboardings, one after another, on Chimera and DBOS.

    .venv/bin/python bench/engine.py [--runs 500] [--rounds 3]

One external sandbox process serves both (zero added latency, so the engines are measured).
Each round runs, in a fresh process each and interleaved: Chimera with the queues' rate limits
lifted (CHIMERA_QUEUE_RATE_LIMITS=off), DBOS, and Chimera with its default limits. Model
planning and verification are off on Chimera's side, so both make the same vendor calls
(checked from the sandbox's records). Reported per side: onboardings/s, p50/p95/p99 latency,
CPU ms per onboarding (the worker process, all threads), SQLite write transactions and
statements per onboarding; the table gives medians over the rounds and ratios to DBOS.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from statistics import median
from typing import Any

from support import ROOT, Table, onboarding, percentile, save_results, start_sandbox

SIDES = ("chimera", "dbos", "chimera-limited")
# Chimera's settings for the comparison: what the peer does not do is off.
CHIMERA_ENV = {"CHIMERA_AGENT_REASONING": "false", "CHIMERA_VERIFY_STEPS": "false"}


def worker(side: str, runs: int, sandbox_url: str, tag: str) -> dict[str, Any]:
    """Run `runs` onboardings one after another on `side`, in this process; the measures."""
    import sql_counter

    counts = sql_counter.install()
    from shared.settings import Settings

    home = Path(tempfile.mkdtemp(prefix=f"bench-{side}-"))
    settings = Settings.from_env().replace(home=home, sandbox_url=sandbox_url)
    submit: Callable[[dict[str, Any]], str]
    wait: Callable[[str], None]
    if side == "dbos":
        import peer_dbos

        peer_dbos.launch(home, settings)

        # A DBOS workflow called directly runs to its end before it returns.
        def submit(body: dict[str, Any]) -> str:
            return str(peer_dbos.onboard(body)["run_id"])

        def wait(run_id: str) -> None:
            return None

        finish = peer_dbos.shutdown
    else:
        from werkzeug.test import Client

        from chimera.stack import LocalStack

        stack = LocalStack(settings, sandbox_url=sandbox_url).start()
        intake = Client(stack.intake())
        assert stack.runtime is not None
        ended = _on_run_end(stack.runtime.store)

        def submit(body: dict[str, Any]) -> str:
            return str(intake.post("/runs", json=body).get_json()["run_id"])

        def wait(run_id: str) -> None:
            # Told by the transition that ends the run, so waiting costs the engine no CPU (a
            # poll every millisecond cost it about 3 ms per onboarding).
            status = ended(run_id)
            if status != "succeeded":
                raise SystemExit(f"{side}: run {run_id} ended {status}")

        finish = stack.stop

    wait(submit(onboarding(0, f"{tag}-warm", side.split("-")[0].title())))
    before, cpu0 = counts.snapshot(), time.process_time()
    durations = []
    began = time.perf_counter()
    for i in range(runs):
        start = time.perf_counter()
        wait(submit(onboarding(i, tag, side.split("-")[0].title())))
        durations.append(time.perf_counter() - start)
    elapsed = time.perf_counter() - began
    cpu = time.process_time() - cpu0
    after = counts.snapshot()
    finish()
    return {
        "side": side,
        "runs": runs,
        "onboardings_per_s": runs / elapsed,
        "p50_ms": percentile(durations, 0.5) * 1000,
        "p95_ms": percentile(durations, 0.95) * 1000,
        "p99_ms": percentile(durations, 0.99) * 1000,
        "cpu_ms_per_onboarding": cpu * 1000 / runs,
        "write_transactions_per_onboarding": (
            after["write_transactions"] - before["write_transactions"]
        )
        / runs,
        "statements_per_onboarding": (after["statements"] - before["statements"]) / runs,
    }


def _on_run_end(store: Any) -> Callable[[str], str]:
    """A wait for a run's end, told by the store's transition that ends it (the store's own
    method wrapped, in this benchmark's process only); the status it ended with."""
    ends: dict[str, str] = {}
    changed = threading.Condition()
    transition = store.transition

    def told(run: Any, **writes: Any) -> Any:
        stored = transition(run, **writes)
        if stored.status.terminal:
            with changed:
                ends[stored.run_id] = stored.status.value
                changed.notify_all()
        return stored

    store.transition = told

    def wait(run_id: str) -> str:
        with changed:
            if not changed.wait_for(lambda: run_id in ends, timeout=120):
                raise SystemExit(f"run {run_id} did not end within 120 s")
            return ends.pop(run_id)

    return wait


def run_worker(side: str, runs: int, sandbox_url: str, tag: str) -> dict[str, Any]:
    env = {**os.environ, **CHIMERA_ENV}
    if side == "chimera":
        env["CHIMERA_QUEUE_RATE_LIMITS"] = "off"
    answer = subprocess.run(
        [sys.executable, __file__, "worker", side, str(runs), sandbox_url, tag],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if answer.returncode != 0:
        raise SystemExit(f"{side} worker failed:\n{answer.stderr[-3000:]}")
    return json.loads(answer.stdout.strip().splitlines()[-1])


def sandbox_calls(home: Path) -> dict[str, Counter[str]]:
    """Per side (from the company names' prefix), the vendor calls the sandbox recorded."""
    from sandbox.records import RecordStore

    calls: dict[str, Counter[str]] = {}
    for record in RecordStore(home).list():
        calls.setdefault(record.get("run_id") or "", Counter())[
            f"{record['vendor']} {record['action']}"
        ] += 1
    return calls


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "worker":
        side, runs, url, tag = sys.argv[2:6]
        print(json.dumps(worker(side, int(runs), url, tag)))
        return
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sides", default=",".join(SIDES))
    args = parser.parse_args()
    sides = args.sides.split(",")
    with tempfile.TemporaryDirectory() as sandbox_home:
        sandbox, url = start_sandbox(sandbox_home)
        try:
            rounds = []
            for n in range(args.rounds):
                for side in sides:
                    result = run_worker(side, args.runs, url, f"r{n}-{side}")
                    print(f"round {n + 1}, {side}: {result['onboardings_per_s']:.1f}/s")
                    rounds.append(result)
        finally:
            sandbox.terminate()
            sandbox.wait(timeout=30)
    summary = {s: _medians([r for r in rounds if r["side"] == s]) for s in sides}
    _print(summary)
    save_results("engine", {"runs": args.runs, "rounds": rounds, "median": summary})


def _medians(results: list[dict[str, Any]]) -> dict[str, float]:
    keys = [k for k in results[0] if isinstance(results[0][k], float)]
    return {k: median(r[k] for r in results) for k in keys}


def _print(summary: dict[str, dict[str, float]]) -> None:
    sides = list(summary)
    table = Table("engine: onboardings one after another (medians)", ["measure", *sides])
    for key in summary[sides[0]]:
        cells = [f"{summary[s][key]:.1f}" for s in sides]
        if "dbos" in summary and summary["dbos"][key]:
            cells = [
                f"{summary[s][key]:.1f}"
                + (f" ({summary[s][key] / summary['dbos'][key]:.2f}x)" if s != "dbos" else "")
                for s in sides
            ]
        table.row(key, *cells)
    table.print()


if __name__ == "__main__":
    main()

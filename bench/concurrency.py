"""Concurrency: 2,000 onboardings submitted at once to `chimera dev` and to a DBOS queue.

    .venv/bin/python bench/concurrency.py [--runs 2000] [--rounds 1] [--latencies 0,100]
        [--clients 64] [--dbos-concurrency 60] [--dbos-polling 0.1] [--timeout 1800]

One batch, interleaved: for each vendor latency (the sandbox's `*.latency_ms`), one external
sandbox process; for each round, Chimera then DBOS, each in a fresh process and home.

- Chimera: `chimera dev --sandbox-url ...` run through this script's `serve` wrapper, which
  counts SQLite statements in the process (bench/sql_counter.py) and writes the counts to a
  file on SIGUSR1 and when stopped. Settings as bench/engine.py's comparison: model planning
  and verification off, the queues' dispatch rates lifted (CHIMERA_QUEUE_RATE_LIMITS=off).
  The runs are POSTed to /runs with the local credential from `--clients` connections at
  once; the end is read from the runs table (read-only, from this process).
- DBOS Transact: bench/peer_dbos.py's workflow, enqueued `--runs` times at once from
  `--clients` threads on a queue with worker_concurrency=`--dbos-concurrency` (default 60:
  the vendor calls Chimera's tool queues may have in flight at once, 20+10+20+10), polled
  every `--dbos-polling` s (DBOS's default is 1 s; 0.1 s is Chimera's dispatcher poll); its
  executor starts a thread per running workflow (DBOS's default, unbounded max_executor_threads).

Both keep SQLite in WAL with synchronous=NORMAL. Chimera's limits, printed with the table:
each queue's max_concurrent_dispatches (capped by the dispatcher's workers), at most
vendor_concurrency calls in flight per vendor, and CHIMERA_HTTP_THREADS request threads.

Per side: total time from the first submit to the last run's end, runs/s, peak RSS and peak
threads of the engine process (sampled every 50 ms), SQLite write transactions and
statements per onboarding (a warm-up run excluded), and the peak calls in flight at each
vendor (the sandbox's gauge, GET /_sandbox/in_flight). Every run must succeed, judged also
from the sandbox's records: each run made the same vendor calls, each side effect once.
JSON in bench/results/concurrency-*.json; a table per latency.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from statistics import median
from typing import Any

import psutil
import requests
from support import (
    ROOT,
    Table,
    chimera_dev,
    free_port,
    onboarding,
    save_results,
    signed_in,
    start_sandbox,
    wait_for,
)

SIDES = ("chimera", "dbos")
# Chimera's settings for the comparison (bench/engine.py's): what the peer does not do is off.
CHIMERA_ENV = {
    "CHIMERA_AGENT_REASONING": "false",
    "CHIMERA_VERIFY_STEPS": "false",
    "CHIMERA_QUEUE_RATE_LIMITS": "off",
}
ENDED = ("succeeded", "parked", "cancelled")
DBOS_ENDED = ("SUCCESS", "ERROR", "CANCELLED", "MAX_RECOVERY_ATTEMPTS_EXCEEDED")
# Each side effect at most this many times per run; the default plan asks for three issues.
ONCE = {"jira.project": 1, "sendgrid.mail": 1, "slack.message": 1, "jira.issue": 3}
VENDORS = ("clearbit", "jira", "sendgrid", "slack")
IN_FLIGHT = "/_sandbox/in_flight"
SAMPLE_S = 0.05
SUBMIT_ATTEMPTS = 10
QUIET_S = 1.0  # after the last end: deliveries' settles are written within 0.25 s


class Sampler:
    """Peak RSS and threads of a process, read every SAMPLE_S from outside it."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.peak_rss_mb = 0.0
        self.peak_threads = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.is_set():
            try:
                with self.process.oneshot():
                    rss, threads = self.process.memory_info().rss, self.process.num_threads()
            except psutil.Error:
                return  # it ended
            self.peak_rss_mb = max(self.peak_rss_mb, rss / 2**20)
            self.peak_threads = max(self.peak_threads, threads)
            self._stop.wait(SAMPLE_S)

    def stop(self) -> dict[str, float]:
        self._stop.set()
        self._thread.join(timeout=5)
        return {"peak_rss_mb": self.peak_rss_mb, "peak_threads": self.peak_threads}


# --- inside the engines' processes -------------------------------------------------------


def serve(counts_path: Path, cli_args: list[str]) -> int:
    """`chimera dev` in this process, counting its SQL; counts to `counts_path` on SIGUSR1
    and when it stops."""
    import sql_counter

    counts = sql_counter.install()
    written = 0

    def write(*_: object) -> None:
        nonlocal written
        written += 1
        partial = counts_path.with_suffix(".partial")
        partial.write_text(json.dumps({"seq": written, **counts.snapshot()}))
        partial.replace(counts_path)

    signal.signal(signal.SIGUSR1, write)
    from chimera.cli import main as cli_main

    code = cli_main(cli_args)
    write()
    return code


def dbos_worker(args: argparse.Namespace) -> dict[str, Any]:
    """The batch on a DBOS queue in this process: ready, then (on a line from stdin) go."""
    untraced = sqlite3.connect  # the wait's own reads are not the engine's
    import sql_counter

    counts = sql_counter.install()
    import peer_dbos
    from dbos import DBOS

    from shared.settings import Settings

    home = Path(tempfile.mkdtemp(prefix="bench-conc-dbos-"))
    settings = Settings.from_env().replace(home=home, sandbox_url=args.sandbox_url)
    peer_dbos.launch(home, settings)
    queue = DBOS.register_queue(
        "onboardings",
        worker_concurrency=args.concurrency,
        polling_interval_sec=args.polling,
    )
    queue.enqueue(peer_dbos.onboard, onboarding(0, f"{args.tag}-warm", "Dbos")).get_result()
    watch = untraced(f"file:{home / 'dbos.sqlite'}?mode=ro", uri=True)

    def ended() -> tuple[int, int, float]:
        marks = ",".join("?" * len(DBOS_ENDED))
        done, failed, last = watch.execute(
            f"SELECT COUNT(*), SUM(status != 'SUCCESS'), MAX(updated_at) FROM workflow_status"
            f" WHERE status IN ({marks})",
            DBOS_ENDED,
        ).fetchone()
        return done - 1, failed or 0, (last or 0) / 1000  # the warm-up's excluded

    print("ready", flush=True)
    sys.stdin.readline()
    before = counts.snapshot()
    began = time.time()

    def enqueue(i: int) -> str:
        request = onboarding(i, args.tag, "Dbos")
        queue.enqueue(peer_dbos.onboard, request)
        return _run_id(request)

    with ThreadPoolExecutor(args.clients) as pool:
        run_ids = list(pool.map(enqueue, range(args.runs)))
    submitted = time.time()
    deadline = time.monotonic() + args.timeout
    while (state := ended())[0] < args.runs:
        if time.monotonic() > deadline:
            raise SystemExit(f"dbos: {state[0]} of {args.runs} runs ended in {args.timeout}s")
        time.sleep(0.1)
    time.sleep(QUIET_S)
    after = counts.snapshot()
    done, failed, last_end = ended()
    peer_dbos.shutdown()
    return {
        "run_ids": run_ids,
        "failed": failed,
        "submit_s": submitted - began,
        "total_s": last_end - began,
        "counts": {k: after[k] - before[k] for k in after},
    }


def _run_id(request: dict[str, str]) -> str:
    from shared.model import OnboardingRequest

    return OnboardingRequest.model_validate(request).run_id()


# --- the driver ------------------------------------------------------------------------------


def chimera_side(
    args: argparse.Namespace, sandbox_url: str, tag: str, env: dict[str, str]
) -> dict[str, Any]:
    home = Path(tempfile.mkdtemp(prefix="bench-conc-chimera-"))
    counts_path = home / "sql-counts.json"
    port = free_port()
    cli_args = chimera_dev(port, "--sandbox-url", sandbox_url)[3:]  # after `python -m chimera.cli`
    process = subprocess.Popen(
        [sys.executable, __file__, "serve", str(counts_path), *cli_args],
        cwd=ROOT,
        env={**env, **CHIMERA_ENV, "CHIMERA_HOME": str(home)},
        stdout=subprocess.DEVNULL,
        stderr=open(home / "dev.log", "ab"),  # noqa: SIM115 - the child owns it
    )
    url = f"http://127.0.0.1:{port}"
    sampler = None
    try:
        wait_for(f"{url}/runs", timeout=60)
        sampler = Sampler(process.pid)
        database = home / "chimera.db"
        session = signed_in(home)
        warm = session.post(f"{url}/runs", json=onboarding(0, f"{tag}-warm", "Chimera"), timeout=30)
        warm.raise_for_status()
        _until(lambda: _chimera_ended(database)[0] >= 1, args.timeout, "the warm-up run")
        time.sleep(QUIET_S)
        before = _counts(process, counts_path, 0)
        requests.post(f"{sandbox_url}{IN_FLIGHT}", timeout=10).raise_for_status()
        sessions = threading.local()

        refused = Counter[str]()

        def submit(i: int) -> str:
            # A client sends again what the intake could not take (idempotent by request id);
            # each such answer is counted and reported.
            if not hasattr(sessions, "session"):
                sessions.session = signed_in(home)
            for _ in range(SUBMIT_ATTEMPTS):
                try:
                    answer = sessions.session.post(
                        f"{url}/runs", json=onboarding(i, tag, "Chimera"), timeout=60
                    )
                except requests.RequestException as exc:
                    refused[type(exc).__name__] += 1
                    continue
                if answer.status_code in (200, 202):
                    return str(answer.json()["run_id"])
                refused[str(answer.status_code)] += 1
                time.sleep(0.1)
            raise SystemExit(f"the intake refused run {i} {SUBMIT_ATTEMPTS} times: {refused}")

        began = time.time()
        with ThreadPoolExecutor(args.clients) as pool:
            run_ids = list(pool.map(submit, range(args.runs)))
        submitted = time.time()
        _until(lambda: _chimera_ended(database)[0] >= args.runs + 1, args.timeout, "every run")
        time.sleep(QUIET_S)
        after = _counts(process, counts_path, before["seq"])
        done, failed, last_end = _chimera_ended(database)
        in_flight = requests.get(f"{sandbox_url}{IN_FLIGHT}", timeout=10).json()
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
        peaks = sampler.stop() if sampler else {}
    return {
        **_measures(
            "chimera",
            run_ids,
            failed,
            submitted - began,
            last_end - began,
            {k: after[k] - before[k] for k in ("statements", "write_transactions")},
            peaks,
            in_flight,
        ),
        "intake_refusals": sum(refused.values()),
        "intake_refusals_by_answer": dict(refused),
        # SQLite's busy timeout expiring in the engine (the intake's 500s among them).
        "database_locked_errors": (home / "dev.log")
        .read_text(errors="replace")
        .count("sqlite3.OperationalError: database is locked"),
        "home": str(home),
    }


def _chimera_ended(database: Path) -> tuple[int, int, float]:
    """Runs ended, of which not succeeded, and the last end (epoch s), read-only."""
    conn = sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=30)
    try:
        marks = ",".join("?" * len(ENDED))
        done, failed, last = conn.execute(
            f"SELECT COUNT(*), SUM(status != 'succeeded'), MAX(updated_at) FROM runs"
            f" WHERE status IN ({marks})",
            ENDED,
        ).fetchone()
    except sqlite3.OperationalError:
        return 0, 0, 0.0  # not created yet
    finally:
        conn.close()
    return done, failed or 0, datetime.fromisoformat(last).timestamp() if last else 0.0


def _counts(process: subprocess.Popen, path: Path, seq: int) -> dict[str, int]:
    """Ask the serve wrapper for its SQL counts (SIGUSR1) and read them once written."""
    process.send_signal(signal.SIGUSR1)
    end = time.monotonic() + 30
    while time.monotonic() < end:
        try:
            counts = json.loads(path.read_text())
            if counts["seq"] > seq:
                return counts
        except (OSError, ValueError):
            pass
        time.sleep(0.02)
    raise SystemExit("chimera dev wrote no SQL counts")


def _until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            raise SystemExit(f"{what}: not ended after {timeout}s")
        time.sleep(0.1)


def dbos_side(
    args: argparse.Namespace, sandbox_url: str, tag: str, env: dict[str, str]
) -> dict[str, Any]:
    command = [sys.executable, __file__, "dbos-worker", sandbox_url, tag]
    command += ["--runs", str(args.runs), "--clients", str(args.clients)]
    command += ["--concurrency", str(args.dbos_concurrency), "--polling", str(args.dbos_polling)]
    command += ["--timeout", str(args.timeout)]
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdin and process.stdout and process.stderr
    sampler = Sampler(process.pid)
    if process.stdout.readline().strip() != "ready":
        sampler.stop()
        raise SystemExit(f"dbos worker failed:\n{process.stderr.read()[-3000:]}")
    requests.post(f"{sandbox_url}{IN_FLIGHT}", timeout=10).raise_for_status()
    process.stdin.write("go\n")
    process.stdin.flush()
    out, err = process.communicate()
    peaks = sampler.stop()
    if process.returncode != 0:
        raise SystemExit(f"dbos worker failed:\n{err[-3000:]}")
    in_flight = requests.get(f"{sandbox_url}{IN_FLIGHT}", timeout=10).json()
    result = json.loads(out.strip().splitlines()[-1])
    return {"intake_refusals": 0, "intake_refusals_by_answer": {}} | _measures(
        "dbos",
        result["run_ids"],
        result["failed"],
        result["submit_s"],
        result["total_s"],
        result["counts"],
        peaks,
        in_flight,
    )


def _measures(
    side: str,
    run_ids: list[str],
    failed: int,
    submit_s: float,
    total_s: float,
    counts: dict[str, int],
    peaks: dict[str, float],
    in_flight: dict[str, dict[str, int]],
) -> dict[str, Any]:
    runs = len(run_ids)
    return {
        "side": side,
        "run_ids": run_ids,
        "runs": runs,
        "failed": failed,
        "submit_s": submit_s,
        "total_s": total_s,
        "runs_per_s": runs / total_s,
        "peak_rss_mb": peaks.get("peak_rss_mb", 0.0),
        "peak_threads": peaks.get("peak_threads", 0),
        "write_transactions_per_onboarding": counts["write_transactions"] / runs,
        "statements_per_onboarding": counts["statements"] / runs,
        **{f"in_flight_peak_{v}": in_flight.get(v, {}).get("peak", 0) for v in VENDORS},
    }


def judge(sandbox_home: Path, results: list[dict[str, Any]]) -> dict[str, Any]:
    """From the sandbox's own records, per side: runs lacking a vendor call every run makes,
    calls made again (a refused one, such as a Jira key already taken and then another
    tried, is the vendor's no and not counted), and side effects not made exactly once."""
    from sandbox.effects import side_effects
    from sandbox.records import sandbox_database

    conn = sandbox_database(sandbox_home).connection()
    calls: dict[str, Counter[str]] = {}
    for run_id, vendor, action in conn.execute(
        "SELECT run_id, vendor, action FROM sandbox_calls WHERE run_id IS NOT NULL AND status < 400"
    ):
        calls.setdefault(run_id, Counter())[f"{vendor} {action}"] += 1
    effects = side_effects(sandbox_home)
    every = [r for result in results for r in result["run_ids"]]
    # What every run makes: the calls of the run that made the fewest of each.
    expected = Counter(
        {
            call: min(calls.get(r, Counter())[call] for r in every)
            for call in {c for r in every for c in calls.get(r, Counter())}
        }
    )
    expected = +expected
    verdict: dict[str, Any] = {"expected_calls_per_run": dict(expected)}
    for side in SIDES:
        wanted = [r for result in results if result["side"] == side for r in result["run_ids"]]
        again = Counter[str]()
        for r in wanted:
            again.update(calls.get(r, Counter()) - expected)
        not_once = [
            r for r in wanted if any(effects.get(r, Counter())[k] != n for k, n in ONCE.items())
        ]
        verdict[side] = {
            "failed": sum(r["failed"] for r in results if r["side"] == side),
            "runs_missing_calls": sum(bool(expected - calls.get(r, Counter())) for r in wanted),
            "calls_made_again": dict(again),
            "effects_not_exactly_once": len(not_once),
            # The evidence: what the vendors hold and were asked, for a few of those runs.
            "effects_not_exactly_once_seen": {
                r: {"effects": dict(effects.get(r, Counter())), "calls": dict(calls.get(r, {}))}
                for r in not_once[:5]
            },
        }
    verdict["ok"] = bool(expected) and not any(
        verdict[side][k]
        for side in SIDES
        for k in ("failed", "runs_missing_calls", "effects_not_exactly_once")
    )
    return verdict


def chimera_limits() -> dict[str, Any]:
    """Chimera's concurrency as configured: what the table states beside DBOS's."""
    from shared.local_dispatcher import LocalDispatcher
    from shared.queues import QUEUES
    from shared.settings import Settings

    workers = inspect.signature(LocalDispatcher).parameters["workers"].default
    settings = Settings.from_env()
    return {
        "queue_concurrency": {
            name: min(q.max_concurrent_dispatches, workers) for name, q in QUEUES.items()
        },
        "vendor_concurrency": settings.vendor_concurrency,
        "http_threads": getattr(settings, "http_threads", None),
    }


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "serve":
        sys.exit(serve(Path(sys.argv[2]), sys.argv[3:]))
    if len(sys.argv) > 1 and sys.argv[1] == "dbos-worker":
        worker = argparse.ArgumentParser()
        worker.add_argument("sandbox_url")
        worker.add_argument("tag")
        for name in ("--runs", "--clients", "--concurrency"):
            worker.add_argument(name, type=int)
        worker.add_argument("--polling", type=float)
        worker.add_argument("--timeout", type=float)
        print(json.dumps(dbos_worker(worker.parse_args(sys.argv[2:]))))
        return
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--latencies", default="0,100", help="vendor latencies, ms")
    parser.add_argument("--clients", type=int, default=64, help="connections submitting at once")
    parser.add_argument("--dbos-concurrency", type=int, default=60)
    parser.add_argument("--dbos-polling", type=float, default=0.1)
    parser.add_argument("--timeout", type=float, default=1800, help="per side, seconds")
    args = parser.parse_args()
    latencies = [int(ms) for ms in args.latencies.split(",") if ms.strip()]
    env = dict(os.environ)
    limits = chimera_limits()
    batch: dict[str, Any] = {
        "runs": args.runs,
        "rounds": args.rounds,
        "clients": args.clients,
        "synchronous": {"chimera": "NORMAL (WAL)", "dbos": "NORMAL (WAL)"},
        "chimera_limits": limits,
        "dbos_limits": {
            "worker_concurrency": args.dbos_concurrency,
            "polling_interval_sec": args.dbos_polling,
            "max_executor_threads": "unbounded (DBOS's default)",
        },
        "latencies": {},
    }
    ok = True
    for latency in latencies:
        with tempfile.TemporaryDirectory(prefix="bench-conc-sandbox-") as sandbox_home:
            sandbox, url = start_sandbox(sandbox_home, f"*.latency_ms={latency}" if latency else "")
            rounds = []
            try:
                for n in range(args.rounds):
                    for side in SIDES:
                        run = chimera_side if side == "chimera" else dbos_side
                        result = run(args, url, f"c{latency}-r{n}-{side}-{int(time.time())}", env)
                        print(
                            f"{latency} ms vendors, round {n + 1}, {side}: "
                            f"{result['runs_per_s']:.1f} runs/s, {result['peak_rss_mb']:.0f} MB, "
                            f"{result['peak_threads']} threads",
                            flush=True,
                        )
                        rounds.append(result)
            finally:
                sandbox.terminate()
                sandbox.wait(timeout=30)
            verdict = judge(Path(sandbox_home), rounds)
        ok = ok and verdict["ok"]
        summary = {s: _medians([r for r in rounds if r["side"] == s]) for s in SIDES}
        _print(latency, args, summary, verdict, limits)
        for result in rounds:
            result.pop("run_ids")
        batch["latencies"][str(latency)] = {"rounds": rounds, "median": summary, "judged": verdict}
    save_results("concurrency", batch)
    if not ok:
        raise SystemExit("a run failed, was lost, or made other vendor calls than expected")


def _medians(results: list[dict[str, Any]]) -> dict[str, float]:
    keys = [k for k, v in results[0].items() if isinstance(v, int | float)]
    return {k: median(r[k] for r in results) for k in keys}


def _print(
    latency: int,
    args: argparse.Namespace,
    summary: dict[str, dict[str, float]],
    verdict: dict[str, Any],
    limits: dict[str, Any],
) -> None:
    title = (
        f"concurrency: {args.runs} onboardings at once from {args.clients} connections, "
        f"{latency} ms vendors ({'median of ' + str(args.rounds) if args.rounds > 1 else '1'}"
        f" round{'s' if args.rounds > 1 else ''})"
    )
    table = Table(title, ["measure", "chimera", "dbos", "chimera / dbos"])
    chimera, dbos = summary["chimera"], summary["dbos"]
    for key in chimera:
        if key in ("runs", "failed"):
            continue
        theirs = dbos.get(key)
        ratio = f"{chimera[key] / theirs:.2f}x" if theirs else "-"
        table.row(key, _cell(chimera[key]), "-" if theirs is None else _cell(theirs), ratio)
    table.row("synchronous", "NORMAL (WAL)", "NORMAL (WAL)", "")
    queues = ", ".join(f"{q} {n}" for q, n in limits["queue_concurrency"].items())
    table.row(
        "concurrency",
        f"queues {queues}; {limits['vendor_concurrency']} per vendor; "
        f"{limits['http_threads']} HTTP threads",
        f"worker_concurrency {args.dbos_concurrency}, polled every {args.dbos_polling}s",
        "",
    )
    table.row("judged (sandbox records)", *(_judged(verdict[s]) for s in SIDES), "")
    table.print()


def _judged(side: dict[str, Any]) -> str:
    again = sum(side["calls_made_again"].values())
    return (
        f"{side['failed']} failed, {side['runs_missing_calls']} missing calls, "
        f"{side['effects_not_exactly_once']} effects not once, {again} calls made again"
    )


def _cell(value: float) -> str:
    return f"{value:.0f}" if float(value).is_integer() else f"{value:.2f}"


if __name__ == "__main__":
    main()

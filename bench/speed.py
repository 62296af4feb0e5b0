"""How fast is an onboarding? One at a time in process, then a burst against `chimera dev`.

    .venv/bin/python bench/speed.py [--sequential 20] [--burst 200]

Vendors are the sandbox with zero added latency, so this measures Chimera itself: the
decisions, the queue hops, the state writes and the real SDKs' HTTP round trips.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from support import chimera_dev, free_port, onboarding, percentile, signed_in, wait_for
from werkzeug.test import Client

from chimera.stack import LocalStack
from shared.model import RunStatus
from shared.settings import Settings

ROOT = Path(__file__).resolve().parents[1]


def sequential(n: int) -> dict[str, float]:
    """Submit one run, wait until it succeeds, repeat: the latency of a whole onboarding."""
    with tempfile.TemporaryDirectory() as home:
        stack = LocalStack(Settings(home=Path(home))).start()
        assert stack.runtime is not None
        store = stack.runtime.store
        intake = Client(stack.intake())
        durations = []
        try:
            for i in range(n + 1):
                began = time.perf_counter()
                run_id = intake.post("/runs", json=onboarding(i, "seq")).get_json()["run_id"]
                while True:
                    run = store.load(run_id)
                    if run and (run.status.terminal or run.status is RunStatus.PARKED):
                        break
                    time.sleep(0.002)
                if run.status is not RunStatus.SUCCEEDED:
                    raise SystemExit(f"run {run_id} ended {run.status}: {run.reason}")
                if i:  # the first warms up imports and connections
                    durations.append(time.perf_counter() - began)
        finally:
            stack.stop()
    return {
        "runs": n,
        "p50_ms": percentile(durations, 0.5) * 1000,
        "p95_ms": percentile(durations, 0.95) * 1000,
        "max_ms": max(durations) * 1000,
    }


def burst(n: int) -> dict[str, float]:
    """Submit n runs at once to `chimera dev` over HTTP; time until every one succeeded."""
    with tempfile.TemporaryDirectory() as home:
        port, sandbox_port = free_port(), free_port()
        env = {**os.environ, "CHIMERA_HOME": home}
        server = subprocess.Popen(
            chimera_dev(port, "--sandbox-port", str(sandbox_port)),
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            wait_for(f"{base}/runs")
            session = signed_in(home)
            began = time.perf_counter()
            with ThreadPoolExecutor(32) as pool:
                answers = list(
                    pool.map(
                        lambda i: session.post(
                            f"{base}/runs", json=onboarding(i, "burst"), timeout=30
                        ).json(),
                        range(n),
                    )
                )
            submitted = time.perf_counter() - began
            run_ids = {a["run_id"] for a in answers}
            while True:
                runs = session.get(f"{base}/runs", params={"limit": 1000}, timeout=30).json()
                done = [
                    r
                    for r in runs["runs"]
                    if r["run_id"] in run_ids
                    and r["status"] in ("succeeded", "parked", "cancelled")
                ]
                if len(done) == len(run_ids):
                    break
                time.sleep(0.2)
            elapsed = time.perf_counter() - began
            succeeded = sum(r["status"] == "succeeded" for r in done)
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=30)
    return {
        "runs": n,
        "succeeded": succeeded,
        "submit_s": submitted,
        "all_done_s": elapsed,
        "runs_per_s": n / elapsed,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sequential", type=int, default=20)
    parser.add_argument("--burst", type=int, default=200)
    args = parser.parse_args()
    results = {}
    if args.sequential:
        results["one_onboarding"] = sequential(args.sequential)
        print("one onboarding, in process:", json.dumps(results["one_onboarding"]))
    if args.burst:
        results["burst"] = burst(args.burst)
        print(f"{args.burst} at once to chimera dev:", json.dumps(results["burst"]))


if __name__ == "__main__":
    main()

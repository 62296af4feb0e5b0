"""What verification costs: added latency and vendor calls per onboarding.

    .venv/bin/python bench/verify_cost.py [--pairs 20] [--latency-ms 20]

One embedded stack and sandbox, one batch: onboardings one at a time, alternating with and
without verification (CHIMERA_VERIFY_STEPS, switched in the installed runtime between runs),
so both halves share the machine's load and the vendors' latency. For each run, from the
run document, the sandbox's records and the run's events: its completion time, the wait
between its last step's success and the run's success (what the last look at a vendor adds to
the run; the steps themselves never wait for a look), each verification's own duration, and
the vendor calls the onboarding made.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from support import onboarding, percentile  # noqa: E402
from werkzeug.test import Client  # noqa: E402

from chimera.stack import LocalStack  # noqa: E402
from sandbox.records import RecordStore  # noqa: E402
from shared.model import RunStatus  # noqa: E402
from shared.runtime import install  # noqa: E402
from shared.settings import Settings  # noqa: E402

SETTLE_TIMEOUT_S = 60


def one_run(stack: LocalStack, records: RecordStore, i: int, tag: str, verify: bool) -> dict:
    assert stack.runtime is not None
    base = stack.runtime
    install(replace(base, settings=base.settings.replace(verify_steps=verify)))
    before = len(records.list())
    answer = Client(stack.intake()).post("/runs", json=onboarding(i, tag, "Verify")).get_json()
    run_id = answer["run_id"]
    end = time.monotonic() + SETTLE_TIMEOUT_S
    while True:
        run = base.store.load(run_id)
        if run and (run.status.terminal or run.status is RunStatus.PARKED):
            break
        if time.monotonic() > end:
            raise SystemExit(f"run {run_id} did not settle in {SETTLE_TIMEOUT_S} s")
        time.sleep(0.01)
    if run.status is not RunStatus.SUCCEEDED:
        raise SystemExit(f"run {run_id} {run.status.value}: {run.reason}")
    calls = records.list()[before:]
    events = base.store.events(run_id)
    last_step = max(e.at for e in events if e.kind == "step.succeeded")
    dispatched = {e.step_id: e.at for e in events if e.kind == "verification.dispatched"}
    looks = {
        e.step_id: (e.at - dispatched[e.step_id]).total_seconds() * 1000
        for e in events
        if e.kind in ("verification.verified", "verification.unverifiable")
    }
    return {
        "verify": verify,
        "completion_ms": (run.updated_at - run.created_at).total_seconds() * 1000,
        "after_last_step_ms": (run.updated_at - last_step).total_seconds() * 1000,
        "looks_ms": looks,
        "calls": Counter(f"{c['vendor']} {c['action']}" for c in calls),
    }


def summary(runs: list[dict]) -> dict:
    completion = [r["completion_ms"] for r in runs]
    tail = [r["after_last_step_ms"] for r in runs]
    calls: Counter[str] = Counter()
    for r in runs:
        calls.update(r["calls"])
    looks: dict[str, list[float]] = defaultdict(list)
    for r in runs:
        for step, ms in r["looks_ms"].items():
            looks[step].append(ms)
    return {
        "runs": len(runs),
        "completion_ms": {
            "p50": round(percentile(completion, 0.5)),
            "p95": round(percentile(completion, 0.95)),
            "mean": round(statistics.mean(completion)),
        },
        "after_last_step_ms": {
            "p50": round(percentile(tail, 0.5)),
            "p95": round(percentile(tail, 0.95)),
        },
        "look_ms_p50": {step: round(percentile(v, 0.5)) for step, v in sorted(looks.items())},
        "calls_per_onboarding": round(sum(calls.values()) / len(runs), 2),
        "calls_by_action": {k: round(v / len(runs), 2) for k, v in sorted(calls.items())},
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pairs", type=int, default=20)
    parser.add_argument("--latency-ms", type=float, default=20.0, help="added to every call")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="chimera-verify-cost-"))
    faults = f"*.latency_ms={args.latency_ms:g}" if args.latency_ms else ""
    stack = LocalStack(Settings(home=home, log_format="text"), faults=faults).start()
    records = RecordStore(home)
    tag = f"vc-{int(time.time())}"
    runs: list[dict] = []
    try:
        for i in range(args.pairs):
            # Alternate which half goes first, so neither always runs on a warmer stack.
            order = (True, False) if i % 2 == 0 else (False, True)
            for verify in order:
                runs.append(one_run(stack, records, len(runs), tag, verify))
    finally:
        stack.stop()

    on = summary([r for r in runs if r["verify"]])
    off = summary([r for r in runs if not r["verify"]])
    report = {"pairs": args.pairs, "latency_ms": args.latency_ms, "on": on, "off": off}
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"verify-cost-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(report, indent=2))

    print(f"\n| {args.pairs} pairs, {args.latency_ms:g} ms per vendor call | verify on | off |")
    print("|---|---|---|")
    rows = [
        (
            "completion p50 / p95",
            lambda s: f"{s['completion_ms']['p50']} / {s['completion_ms']['p95']} ms",
        ),
        (
            "last step to run success p50 / p95",
            lambda s: f"{s['after_last_step_ms']['p50']} / {s['after_last_step_ms']['p95']} ms",
        ),
        ("vendor calls per onboarding", lambda s: s["calls_per_onboarding"]),
        (
            "each look, p50",
            lambda s: ", ".join(f"{k} {v} ms" for k, v in s["look_ms_p50"].items()) or "-",
        ),
    ]
    for name, cell in rows:
        print(f"| {name} | {cell(on)} | {cell(off)} |")
    added = {
        k: round(v - off["calls_by_action"].get(k, 0), 2)
        for k, v in on["calls_by_action"].items()
        if v - off["calls_by_action"].get(k, 0) > 0.01
    }
    print(f"\ncalls verification adds per onboarding: {added}")
    print(f"(full report: {path})")


if __name__ == "__main__":
    main()

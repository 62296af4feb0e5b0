"""Soak: a generated client list through randomly drawn, seeded vendor fault mixes.

    .venv/bin/python bench/soak.py [--runs 300] [--seeds 1,2,3] [--backoff-scale 0.25]
    .venv/bin/python bench/soak.py --drop 0.1 [--mismatch-limit 4]   # vendors that lose work

For each seed, a fresh home: the vendor sandbox (its own process) with a fault mix drawn from
the seed (each vendor fails up to 40% of its calls, split at random between 5xx errors, 429s,
timeouts after the work is done and garbage bodies), and `chimera dev` serving `--runs`
clients drawn from the same generator as the property tests (names sharing long prefixes,
long labels, Unicode, subdomains, punycode). Judged from the sandbox's own records: every run
must succeed and each side effect must exist exactly once. Also reported: completion p50/p95
and how long each vendor's circuit breaker was open (sampled from the shared breaker state).

With `--drop P`, Jira, SendGrid and Slack also drop P of their calls (answer 2xx, keep
nothing): verification must find each loss and the step's re-run repair it, so every effect
still exists exactly once, none missing, no run flagged verification_failed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

from support import signed_in, start_sandbox
from torture import SETTLED, Stack, analyse

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the client generator lives with the tests that share it

from sandbox.effects import side_effects  # noqa: E402
from sandbox.records import RecordStore  # noqa: E402
from shared.model import Attention  # noqa: E402
from shared.registry import TOOLS  # noqa: E402
from shared.run_filter import RunFilter  # noqa: E402
from shared.runtime import build_runtime  # noqa: E402
from shared.settings import Settings  # noqa: E402
from tests.strategies import sample_requests  # noqa: E402

FAULT_KINDS = ("error", "rate_limit", "timeout", "garbage")
FAULTED_VENDORS = ("clearbit", "jira", "sendgrid", "slack", "gemini")
# The vendors whose calls make the onboarding's effects: the ones a `drop` can lose work at.
EFFECT_VENDORS = ("jira", "sendgrid", "slack")
ONCE = {"jira.project": 1, "jira.issue": 3, "sendgrid.mail": 1, "slack.message": 1}
MAX_FAILING = 0.40
BREAKER_SAMPLE_S = 0.25


def fault_mix(seed: int, hang_s: float, drop: float = 0.0) -> str:
    """Each vendor fails a random share of its calls (up to 40%), split at random by kind;
    with `drop`, the effect vendors also lose that share of their calls' work."""
    rng = random.Random(seed)
    entries = []
    for vendor in FAULTED_VENDORS:
        failing = rng.uniform(0.05, MAX_FAILING)
        weights = [rng.random() for _ in FAULT_KINDS]
        for kind, weight in zip(FAULT_KINDS, weights, strict=True):
            entries.append(f"{vendor}.{kind}={failing * weight / sum(weights):.3f}")
    if drop:
        entries += [f"{vendor}.drop={drop:g}" for vendor in EFFECT_VENDORS]
    return ",".join([*entries, f"seed={seed}", f"hang_s={hang_s}"])


def verification_report(home: Path, wanted: set[str]) -> dict:
    """From the sandbox's records and the runs: effects missing, calls dropped, and what
    verification found and repaired."""
    store = build_runtime(Settings(home=home)).store
    runs = [r for r in store.list_runs(RunFilter(limit=1000)) if r.run_id in wanted]
    effects = side_effects(home)
    looks = [s.verification for r in runs for s in r.steps.values() if s.verification]
    dropped = sum(c["dropped"] for c in RecordStore(home).list())
    return {
        "missing": sum(
            any(effects.get(r.run_id, Counter())[kind] < n for kind, n in ONCE.items())
            for r in runs
            if r.status.value == "succeeded"
        ),
        "dropped_calls": dropped,
        "mismatches": sum(look.mismatches for look in looks),
        "repaired_steps": sum(1 for look in looks if look.mismatches and look.status == "verified"),
        "unverifiable": sum(look.status == "unverifiable" for look in looks),
        "flagged_runs": sum(Attention.VERIFICATION_FAILED in r.attention for r in runs),
    }


class BreakerWatch:
    """Samples each vendor's shared breaker state: seconds spent open, times it opened."""

    def __init__(self, home: Path) -> None:
        self.store = build_runtime(Settings(home=home)).store
        self.vendors = sorted({spec.vendor for spec in TOOLS.values()})
        self.open_s = dict.fromkeys(self.vendors, 0.0)
        self.openings = dict.fromkeys(self.vendors, 0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def start(self) -> BreakerWatch:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _sample(self) -> None:
        was_open = dict.fromkeys(self.vendors, False)
        last = time.monotonic()
        while not self._stop.wait(BREAKER_SAMPLE_S):
            now = time.monotonic()
            for vendor in self.vendors:
                try:
                    is_open = self.store.breaker(vendor).state != "closed"
                except Exception:  # noqa: BLE001 - the stack is starting; sample again
                    continue
                if is_open:
                    self.open_s[vendor] += now - last
                    self.openings[vendor] += not was_open[vendor]
                was_open[vendor] = is_open
            last = now


def soak_one(seed: int, args: argparse.Namespace) -> dict:
    home = Path(tempfile.mkdtemp(prefix=f"chimera-soak-{seed}-"))
    faults = fault_mix(seed, args.hang_s, args.drop)
    env = {
        **os.environ,
        "CHIMERA_HOME": str(home),
        "CHIMERA_LOCAL_BACKOFF_SCALE": str(args.backoff_scale),
        "CHIMERA_VENDOR_READ_TIMEOUT": str(args.read_timeout),
        "CHIMERA_VERIFY_MISMATCH_LIMIT": str(args.mismatch_limit),
        # The sandbox's activity feed does not lag: absent a second after the send is lost.
        "CHIMERA_VERIFY_MAX_LAG": "1",
    }
    sandbox, sandbox_url = start_sandbox(home, faults, env)
    stack = Stack(home, sandbox_url, env)
    stack.start()
    watch = BreakerWatch(home).start()
    t0 = time.time()
    print(f"seed {seed}: {args.runs} clients, faults {faults}", flush=True)

    clients = sample_requests(args.runs, seed)
    session = signed_in(home)
    wanted: set[str] = set()
    for client in clients:
        body = client.model_dump(exclude_none=True)
        answer = session.post(f"{stack.url}/runs", json=body, timeout=30)
        if answer.status_code not in (200, 202):
            raise SystemExit(f"seed {seed}: the intake refused a generated client: {answer.text}")
        wanted.add(answer.json()["run_id"])
    if len(wanted) != args.runs:
        raise SystemExit(f"seed {seed}: {args.runs} clients made only {len(wanted)} runs")

    while time.time() - t0 < args.timeout:
        listed = session.get(f"{stack.url}/runs", params={"limit": 1000}, timeout=30).json()
        statuses = {r["run_id"]: r["status"] for r in listed["runs"]}
        # Parked is settled for the count; the pass condition says none may be.
        if all(statuses.get(r) in SETTLED for r in wanted):
            break
        time.sleep(1)
    elapsed = time.time() - t0
    watch.stop()
    stack.stop()
    sandbox.send_signal(signal.SIGTERM)
    sandbox.wait(30)

    args.seed, args.faults, args.kills = seed, faults, 0
    report = analyse(home, wanted, args, 0, elapsed, stack)
    report["breaker_open_s"] = {v: round(s, 1) for v, s in watch.open_s.items()}
    report["breaker_openings"] = watch.openings
    report["home"] = str(home)
    report.update(verification_report(home, wanted))
    return report


def passed(report: dict) -> bool:
    return (
        report["succeeded"] == report["submitted"] == report["runs"]
        and not report["lost"]
        and not any(report["duplicates"].values())
        and not report["missing"]
        and not report["flagged_runs"]
    )


def print_table(reports: list[dict]) -> None:
    seeds = [r["seed"] for r in reports]
    print(
        f"\n| soak: {reports[0]['runs']} generated clients per seed | "
        + " | ".join(f"seed {s}" for s in seeds)
        + " |"
    )
    print("|---|" + "---|" * len(reports))
    rows = {
        "succeeded": lambda r: r["succeeded"],
        "parked": lambda r: (
            sum(r["parked"].values())
            and ", ".join(f"{k} x{v}" for k, v in r["parked"].items())
            or 0
        ),
        "lost (must be 0)": lambda r: r["lost"],
        "duplicate side effects (must be 0)": lambda r: sum(r["duplicates"].values()),
        "runs missing an effect (must be 0)": lambda r: r["missing"],
        "dropped calls / mismatches / steps repaired": lambda r: (
            f"{r['dropped_calls']} / {r['mismatches']} / {r['repaired_steps']}"
        ),
        "unverifiable / flagged runs (must be 0)": lambda r: (
            f"{r['unverifiable']} / {r['flagged_runs']}"
        ),
        "completion p50 / p95": lambda r: (
            f"{r['completion_s'].get('p50')} s / {r['completion_s'].get('p95')} s"
        ),
        "attempts per step, max": lambda r: ", ".join(
            f"{k} {v['max']}" for k, v in r["attempts"].items()
        ),
        "breaker open, s (openings)": lambda r: ", ".join(
            f"{v} {s} ({r['breaker_openings'][v]})" for v, s in r["breaker_open_s"].items()
        ),
        "wall time": lambda r: f"{r['elapsed_s']} s",
    }
    for name, cell in rows.items():
        print(f"| {name} | " + " | ".join(str(cell(r)) for r in reports) + " |")
    for r in reports:
        print(f"\nseed {r['seed']} faults: {r['faults']}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--backoff-scale", type=float, default=0.25)
    parser.add_argument("--read-timeout", type=float, default=3.0)
    parser.add_argument("--hang-s", type=float, default=4.0)
    parser.add_argument("--timeout", type=float, default=1200)
    parser.add_argument(
        "--drop", type=float, default=0.0, help="share of Jira, SendGrid, Slack calls dropped"
    )
    parser.add_argument(
        "--mismatch-limit",
        type=int,
        default=4,
        help="CHIMERA_VERIFY_MISMATCH_LIMIT: re-runs before a run is flagged",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()

    reports = [soak_one(int(seed), args) for seed in args.seeds.split(",")]
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"soak-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(reports, indent=2))
    print_table(reports)
    print(f"\n(full report: {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path})")
    if not all(passed(r) for r in reports):
        sys.exit(1)


if __name__ == "__main__":
    main()

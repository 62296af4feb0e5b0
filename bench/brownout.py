"""Brownout: one vendor answers in 45 s for a minute while onboardings keep arriving.

    .venv/bin/python bench/brownout.py [--vendor jira] [--rate 5] [--window 5]
    .venv/bin/python bench/brownout.py --short        # 12 s calls for 15 s: a quick smoke run

The vendor sandbox runs as its own process with `<vendor>.brownout_ms=45000,brownout=A-B`
(A = 20 s after the first arrival, B = A + 60 s), and `chimera dev` against it with the
default settings: the real timeouts (10 s read), breakers, queues and concurrency limits, and
verification on; only model planning is off (CHIMERA_AGENT_REASONING=false, `--reasoning`
turns it on), as in bench/engine.py. Onboardings arrive at `--rate` per second from t0 until
15 s after the brownout ends; then every run is waited for (up to `--deadline` seconds).

Sampled every 250 ms: the `chimera dev` process's RSS, threads and CPU time (psutil) and the
slowed vendor's shared breaker state; each arrival's intake latency. Judged afterwards, from
the run store (each step's summary: when it became ready, when it finished, its attempts, its
retries' codes) and the sandbox's own records (each effect exactly once):
- RSS flat: the brownout's maximum within `--rss-bound-mb` of the before maximum;
- threads flat: the brownout's maximum within the slowed vendor's queue's pool of the before
  maximum, and every sample within the configured ceiling (the dispatcher's pools and the
  server's fixed threads);
- the other tools kept completing: in every window overlapping the brownout where a step of
  theirs waited at least `--min-wait` seconds, at least one step of that tool finished;
- every run ended succeeded (none parked, cancelled or lost), each effect exactly once;
- the brownout was felt (when its calls outlast the read timeout): the slowed steps were
  retried during it.
Also reported: how long after the window's end the last run finished, what the slowed tool's
steps did (attempts, retry codes, breaker openings), and what an operator saw three quarters
into the window (`chimera runs list` and `runs show`, the console's health numbers and queue
depths). JSON in bench/results/; exits 1 naming each failed check.
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import requests
from support import ROOT, Table, onboarding, percentile, save_results, signed_in, start_sandbox
from torture import ONCE, SETTLED, Stack

from sandbox.effects import side_effects
from sandbox.records import RecordStore
from shared.history import RETRIES_FOLDED, RETRY
from shared.local_dispatcher import LocalDispatcher
from shared.model import RunState, RunStatus, StepStatus
from shared.queues import QUEUES
from shared.registry import TOOLS
from shared.run_filter import RunFilter
from shared.runtime import Runtime, build_runtime
from shared.settings import Settings

SAMPLE_S = 0.25
ARRIVAL_WORKERS = 8
INTAKE_TRIES = 5
# Threads `chimera dev` has whatever its load: the main one, the dispatcher's loop and the HTTP
# server's; plus one per request in flight (at most the arrivals' workers).
FIXED_THREADS = 3 + ARRIVAL_WORKERS
# The vendors a brownout can slow: those the onboarding's tools call.
VENDORS = tuple(sorted({spec.vendor for spec in TOOLS.values()}))
STEP_IDS = tuple(spec.step_id for spec in TOOLS.values())
PAGE = 1000
SHOW_LINES = 20


@dataclass(frozen=True)
class Timeline:
    """Seconds from t0, the first arrival: the brownout's window and the arrivals' end."""

    lead_s: float  # the brownout starts this long after t0
    length_s: float
    latency_s: float  # added to each of the vendor's calls that starts inside the window
    tail_s: float  # arrivals go on this long after the window ends

    @property
    def start(self) -> float:
        return self.lead_s

    @property
    def end(self) -> float:
        return self.lead_s + self.length_s

    @property
    def arrivals_end(self) -> float:
        return self.end + self.tail_s

    def phase(self, t: float) -> str:
        return "before" if t < self.start else "during" if t < self.end else "after"


# 20 s before the brownout: the dispatcher's pools start threads on demand and the first drafts
# wait for the model SDK's import, so the before level is the warm one.
FULL = Timeline(lead_s=20, length_s=60, latency_s=45, tail_s=15)
# Calls still outlast the 10 s read timeout, so the smoke run takes the same paths.
SHORT = Timeline(lead_s=10, length_s=15, latency_s=12, tail_s=5)


@dataclass
class Sample:
    t: float  # seconds from t0
    rss_mb: float
    threads: int
    cpu_s: float  # the process's CPU time so far, all threads
    breaker: str


@dataclass
class Sampler:
    """The `chimera dev` process's RSS and threads, and the slowed vendor's breaker state."""

    pid: int
    runtime: Runtime
    vendor: str
    t0: float
    samples: list[Sample] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> Sampler:
        threading.Thread(target=self._loop, name="sampler", daemon=True).start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        import psutil  # the benchmark extra's: the analysis below imports without it

        process = psutil.Process(self.pid)
        breaker = "closed"
        while not self._stop.wait(SAMPLE_S):
            try:
                with process.oneshot():
                    rss, threads = process.memory_info().rss, process.num_threads()
                    cpu = process.cpu_times()
            except psutil.Error:
                return  # the stack is gone
            # A busy database: keep the last state seen.
            with contextlib.suppress(Exception):
                breaker = self.runtime.store.breaker(self.vendor).state
            self.samples.append(
                Sample(time.time() - self.t0, rss / 2**20, threads, cpu.user + cpu.system, breaker)
            )


@dataclass
class Arrival:
    i: int
    sent_s: float  # from t0
    answered_s: float
    run_id: str | None
    # What the intake answered before it accepted (or the last try): statuses, or the error.
    refusals: list[str] = field(default_factory=list)


def arrive(stack_url: str, home: Path, t0: float, timeline: Timeline, rate: float) -> list[Arrival]:
    """One onboarding every 1/rate seconds from t0 until the arrivals end, each posted on
    time by a small pool (a slow answer does not delay the next). Like a real client, a post
    that fails (5xx, no answer) is sent again with the same request id, a few times."""
    count = int(timeline.arrivals_end * rate)
    tag = f"brownout-{int(t0)}"
    local = threading.local()

    def post(i: int) -> Arrival:
        session = getattr(local, "session", None) or signed_in(home)
        local.session = session
        sent = time.time()
        refusals: list[str] = []
        for attempt in range(INTAKE_TRIES):
            try:
                answer = session.post(
                    f"{stack_url}/runs", json=onboarding(i, tag, "Brownout"), timeout=30
                )
                if answer.status_code in (200, 202):
                    run_id = answer.json()["run_id"]
                    return Arrival(i, sent - t0, time.time() - t0, run_id, refusals)
                refusals.append(str(answer.status_code))
                if answer.status_code < 500:
                    break  # refused for good: the same body would be refused again
            except requests.RequestException as exc:
                refusals.append(type(exc).__name__)
            time.sleep(2**attempt)
        return Arrival(i, sent - t0, time.time() - t0, None, refusals)

    futures = []
    with ThreadPoolExecutor(ARRIVAL_WORKERS, thread_name_prefix="arrivals") as pool:
        for i in range(count):
            time.sleep(max(0.0, t0 + i / rate - time.time()))
            futures.append(pool.submit(post, i))
    return [f.result() for f in futures]


def operator_view(home: Path, runtime: Runtime, slowed: set[str], env: dict[str, str]) -> dict:
    """What an operator sees in the middle of the brownout: `chimera runs list`, the runs per
    status, the console's health numbers and `chimera runs show` of a run held by the slowed
    step."""
    from chimera.console.health import health
    from shared.model import utcnow

    def cli(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "chimera.cli", "-q", "runs", *args],
            cwd=ROOT,
            env={**env, "COLUMNS": "140"},
            capture_output=True,
            text=True,
            timeout=60,
        )
        return done.stdout + done.stderr

    counts = runtime.store.count_runs(RunFilter())
    page = runtime.store.list_runs(RunFilter(limit=PAGE))
    waiting = [
        (max(s.attempts for s in r.steps.values() if s.step_id in slowed), r)
        for r in page
        if any(s.status is StepStatus.DISPATCHED and s.step_id in slowed for s in r.steps.values())
    ]
    # The longest held: the most attempts, then the oldest.
    held = min(waiting, key=lambda pair: (-pair[0], pair[1].created_at))[1] if waiting else None
    seen = health(runtime, utcnow())
    return {
        "runs_per_status": {k: v for k, v in counts.items() if v},
        "runs_list": cli("list", "--limit", "8"),
        "held_run": held.run_id if held else None,
        "runs_show": cli("show", held.run_id) if held else "",
        "health_vendors": [asdict(v) for v in seen.vendors],
        "health_queues": [asdict(q) for q in seen.queues],
    }


def all_runs(runtime: Runtime) -> list[RunState]:
    runs: list[RunState] = []
    while True:
        page = runtime.store.list_runs(RunFilter(limit=PAGE, offset=len(runs)))
        runs += page
        if len(page) < PAGE:
            return runs


@dataclass(frozen=True)
class StepSpan:
    """One run's step: when it could start (its dependencies done) and when it finished."""

    step_id: str
    ready: float  # seconds from t0
    finished: float | None  # None: never succeeded


def step_spans(runs: Iterable[RunState], t0: float) -> list[StepSpan]:
    spans = []
    for run in runs:
        done = {
            s.step_id: s.finished_at.timestamp() - t0
            for s in run.steps.values()
            if s.status is StepStatus.SUCCEEDED and s.finished_at is not None
        }
        for step in run.plan:
            deps = [done.get(d) for d in step.depends_on]
            if any(d is None for d in deps):
                continue  # never ready: it did not wait on anything
            ready = max([run.created_at.timestamp() - t0, *[d for d in deps if d is not None]])
            spans.append(StepSpan(step.step_id, ready, done.get(step.step_id)))
    return spans


@dataclass(frozen=True)
class Window:
    start: float
    end: float
    phase: str
    finished: dict[str, int]  # steps finished per step id
    waited_s: dict[str, float]  # per step id, the longest one step waited inside the window


def windows(
    spans: Sequence[StepSpan], timeline: Timeline, width: float, until: float
) -> list[Window]:
    """Fixed windows from t0 to `until`, each with its steps finished and waiting per step id;
    a window is in the phase its middle is in."""
    found = []
    start = 0.0
    while start < until:
        end = start + width
        finished: Counter[str] = Counter()
        waited: dict[str, float] = defaultdict(float)
        for span in spans:
            if span.finished is not None and start <= span.finished < end:
                finished[span.step_id] += 1
            stop = until if span.finished is None else span.finished
            overlap = min(stop, end) - max(span.ready, start)
            if overlap > 0:
                waited[span.step_id] = max(waited[span.step_id], overlap)
        found.append(
            Window(
                start,
                end,
                timeline.phase((start + end) / 2),
                {s: finished[s] for s in STEP_IDS},
                {s: round(waited.get(s, 0.0), 2) for s in STEP_IDS},
            )
        )
        start = end
    return found


def starved(
    found: Sequence[Window], slowed: set[str], min_wait: float, timeline: Timeline
) -> list[str]:
    """Windows overlapping the brownout where a step of a tool other than the slowed one
    waited at least `min_wait` seconds, and no step of that tool finished."""
    return [
        f"{step} finished nothing in {w.start:g}-{w.end:g} s while a step of it waited "
        f"{w.waited_s[step]:g} s"
        for w in found
        if w.start < timeline.end and w.end > timeline.start
        for step in STEP_IDS
        if step not in slowed and w.waited_s[step] >= min_wait and w.finished[step] == 0
    ]


def phase_stats(samples: Sequence[Sample], timeline: Timeline, last_s: float) -> dict[str, dict]:
    """Per phase (after: until the last run finished), RSS and threads min and max."""
    stats = {}
    for phase in ("before", "during", "after"):
        mine = [s for s in samples if timeline.phase(s.t) == phase and s.t >= 0 and s.t <= last_s]
        stats[phase] = (
            {
                "samples": len(mine),
                "rss_mb": [
                    round(min(s.rss_mb for s in mine), 1),
                    round(max(s.rss_mb for s in mine), 1),
                ],
                "threads": [min(s.threads for s in mine), max(s.threads for s in mine)],
            }
            if mine
            else {"samples": 0}
        )
    return stats


def breaker_report(samples: Sequence[Sample], timeline: Timeline) -> dict:
    """From the samples: how often the slowed vendor's breaker opened, for how long, when first."""
    openings, open_s, first = 0, 0.0, None
    for before, sample in zip(samples, samples[1:], strict=False):
        if sample.breaker != "closed":
            open_s += sample.t - before.t
            if before.breaker == "closed":
                openings += 1
                first = sample.t if first is None else first
    return {
        "openings": openings,
        "open_s": round(open_s, 1),
        "first_opened_s_after_start": round(first - timeline.start, 1)
        if first is not None
        else None,
    }


def retry_codes(
    runtime: Runtime, runs: Iterable[RunState], slowed: set[str], t0: float, width: float
) -> tuple[Counter[str], dict[int, Counter[str]]]:
    """The slowed steps' retries by code, in all and per window (folded retries have no
    single time: counted in the total only)."""
    total: Counter[str] = Counter()
    per_window: dict[int, Counter[str]] = defaultdict(Counter)
    for run in runs:
        if not any(run.steps[s].attempts > 1 for s in slowed if s in run.steps):
            continue
        for event in runtime.store.events(run.run_id):
            if event.step_id not in slowed:
                continue
            if event.kind == RETRY:
                code = str(event.detail.get("code") or "unknown")
                total[code] += 1
                per_window[int((event.at.timestamp() - t0) // width)][code] += 1
            elif event.kind == RETRIES_FOLDED:
                total.update({str(k): int(v) for k, v in (event.detail.get("codes") or {}).items()})
    return total, per_window


def vendor_calls(home: Path, vendor: str, t0: float, width: float) -> dict[int, Counter[str]]:
    """The slowed vendor's calls as the sandbox answered them, per window: 2xx or other
    (a 400 is often a project key another client holds: the tool moves to the next one)."""
    found: dict[int, Counter[str]] = defaultdict(Counter)
    for call in RecordStore(home).list(vendor=vendor):
        at = datetime.fromisoformat(call["at"]).timestamp() - t0
        found[int(at // width)]["2xx" if call["status"] < 300 else "other"] += 1
    return found


@dataclass
class Verdict:
    check: str
    ok: bool
    detail: str


def judge(report: dict, rss_bound_mb: float) -> list[Verdict]:
    """Each check the scenario makes, passed or not, with what was seen."""
    phases, runs = report["phases"], report["runs"]
    verdicts = []
    before, during = phases["before"], phases["during"]
    if before["samples"] and during["samples"]:
        grew = during["rss_mb"][1] - before["rss_mb"][1]
        verdicts.append(
            Verdict(
                f"RSS flat: the brownout's max within {rss_bound_mb:g} MB of the before max",
                grew <= rss_bound_mb,
                f"{before['rss_mb'][1]} MB before, {during['rss_mb'][1]} MB during ({grew:+.1f})",
            )
        )
        pool, more = report["slowed_pool"], during["threads"][1] - before["threads"][1]
        verdicts.append(
            Verdict(
                f"threads flat: the brownout's max within the slowed queues' concurrency ({pool}) "
                "of the before max",
                more <= pool,
                f"{before['threads'][1]} before, {during['threads'][1]} during ({more:+d})",
            )
        )
    else:
        verdicts.append(Verdict("RSS and threads sampled before and during", False, str(phases)))
    most = max((p["threads"][1] for p in phases.values() if p["samples"]), default=0)
    verdicts.append(
        Verdict(
            f"threads bounded by configuration: at most the dispatcher's pools and "
            f"{FIXED_THREADS} others ({report['thread_ceiling']})",
            most <= report["thread_ceiling"],
            f"{most} at most",
        )
    )
    verdicts.append(
        Verdict(
            "the other tools kept completing",
            not report["starved"],
            "; ".join(report["starved"][:5]) or "every window where a step waited finished one",
        )
    )
    verdicts.append(
        Verdict(
            "every run ended succeeded (none parked, cancelled or lost)",
            runs["arrivals"] == runs["accepted"] == runs["succeeded"],
            f"{runs['arrivals']} arrivals, {runs['accepted']} accepted, {runs['succeeded']} "
            f"succeeded, parked {sum(runs['parked'].values())}, cancelled {runs['cancelled']}, "
            f"lost {runs['lost']}",
        )
    )
    verdicts.append(
        Verdict(
            "each effect exactly once (the sandbox's records)",
            not any(report["duplicates"].values()) and not report["missing"],
            f"duplicates {report['duplicates']}, runs missing an effect {report['missing']}",
        )
    )
    slowed = report["slowed"]
    if report["timeline"]["latency_s"] > report["read_timeout_s"]:
        verdicts.append(
            Verdict(
                "the brownout was felt: the slowed steps were retried during it",
                slowed["retries_during"] > 0,
                f"{slowed['retries_during']} retries of {', '.join(slowed['steps'])} in the window",
            )
        )
    return verdicts


def analyse(
    home: Path,
    runtime: Runtime,
    arrivals: list[Arrival],
    samples: list[Sample],
    timeline: Timeline,
    t0: float,
    args: argparse.Namespace,
) -> dict[str, Any]:
    vendor, width = args.vendor, args.window
    slowed = {spec.step_id for spec in TOOLS.values() if spec.vendor == vendor}
    wanted = {a.run_id for a in arrivals if a.run_id}
    runs = [r for r in all_runs(runtime) if r.run_id in wanted]
    by_status = Counter(r.status for r in runs)
    parked = Counter(
        next((f"{s.step_id}: {s.error.code}" for s in r.steps.values() if s.error), r.reason)
        for r in runs
        if r.status is RunStatus.PARKED
    )
    lost = len(wanted) - sum(by_status[RunStatus(s)] for s in SETTLED)
    last_s = max((r.updated_at.timestamp() - t0 for r in runs if r.status.terminal), default=0.0)
    effects = side_effects(home)
    duplicates = {
        kind: sum(effects.get(r, Counter())[kind] > n for r in wanted) for kind, n in ONCE.items()
    }
    missing = sum(
        any(effects.get(r.run_id, Counter())[kind] < n for kind, n in ONCE.items())
        for r in runs
        if r.status is RunStatus.SUCCEEDED
    )
    spans = step_spans(runs, t0)
    found = windows(spans, timeline, width, max(last_s, timeline.arrivals_end))
    codes, codes_by_window = retry_codes(runtime, runs, slowed, t0, width)
    calls_by_window = vendor_calls(home, vendor, t0, width)
    attempts = [r.steps[s].attempts for r in runs for s in slowed if s in r.steps]
    in_window = [
        n
        for i, per_code in codes_by_window.items()
        for n in per_code.values()
        if timeline.start <= (i + 0.5) * width < timeline.end
    ]
    queues = {TOOLS_BY_STEP[s].queue for s in slowed}
    settings = Settings()
    intake = {
        phase: [a.answered_s - a.sent_s for a in arrivals if timeline.phase(a.sent_s) == phase]
        for phase in ("before", "during", "after")
    }
    return {
        "vendor": vendor,
        "timeline": asdict(timeline),
        "rate_per_s": args.rate,
        "window_s": width,
        "reasoning": args.reasoning,
        "verification": True,
        "read_timeout_s": settings.vendor_read_timeout,
        "slowed_pool": sum(pool_size(q) for q in queues),
        "thread_ceiling": sum(pool_size(q) for q in QUEUES) + FIXED_THREADS,
        "runs": {
            "arrivals": len(arrivals),
            "accepted": len(wanted),
            "succeeded": by_status[RunStatus.SUCCEEDED],
            "parked": dict(parked),
            "cancelled": by_status[RunStatus.CANCELLED],
            "lost": lost,
            "intake_refusals": dict(Counter(r for a in arrivals for r in a.refusals)),
            "arrivals_refused_then_accepted": sum(bool(a.refusals and a.run_id) for a in arrivals),
        },
        "duplicates": duplicates,
        "missing": missing,
        "last_run_s_after_end": round(last_s - timeline.end, 1),
        "phases": phase_stats(samples, timeline, last_s),
        "intake_p95_s": {p: p95_or_none(v) for p, v in intake.items()},
        "starved": starved(found, slowed, args.min_wait, timeline),
        "windows": [
            {
                **asdict(w),
                "slowed_retries": dict(codes_by_window.get(i, {})),
                "slowed_vendor_calls": dict(calls_by_window.get(i, {})),
                "cpu_share": cpu_share(samples, w.start, w.end),
                "intake_p95_s": p95_or_none(
                    [a.answered_s - a.sent_s for a in arrivals if w.start <= a.sent_s < w.end]
                ),
                "breaker": sorted(
                    {s.breaker for s in samples if w.start <= s.t < w.end}, key=BREAKER_ORDER.index
                ),
            }
            for i, w in enumerate(found)
        ],
        "slowed": {
            "steps": sorted(slowed),
            "attempts_mean": round(sum(attempts) / len(attempts), 2) if attempts else None,
            "attempts_max": max(attempts, default=0),
            "retry_codes": dict(codes.most_common()),
            "retries_during": sum(in_window),
            "breaker": breaker_report(samples, timeline),
        },
        "samples": [asdict(s) for s in samples],
    }


def cpu_share(samples: Sequence[Sample], start: float, end: float) -> float | None:
    """The process's CPU seconds per second between the first and last sample in [start, end)
    (1.0 is one core busy)."""
    mine = [s for s in samples if start <= s.t < end]
    if len(mine) < 2 or mine[-1].t <= mine[0].t:
        return None
    return round((mine[-1].cpu_s - mine[0].cpu_s) / (mine[-1].t - mine[0].t), 2)


def p95_or_none(values: list[float]) -> float | None:
    return round(percentile(values, 0.95), 3) if values else None


def pool_size(queue: str) -> int:
    """The threads the local dispatcher may run for `queue`: its pool's size."""
    workers = inspect.signature(LocalDispatcher).parameters["workers"].default
    return min(QUEUES[queue].max_concurrent_dispatches, workers)


TOOLS_BY_STEP = {spec.step_id: spec for spec in TOOLS.values()}
BREAKER_ORDER = ["closed", "half_open", "open"]


def print_report(report: dict, verdicts: list[Verdict], view: dict | None) -> None:
    tl = report["timeline"]
    title = (
        f"brownout: {report['vendor']} +{tl['latency_s']:g} s a call from {tl['lead_s']:g} s to "
        f"{tl['lead_s'] + tl['length_s']:g} s; {report['rate_per_s']:g} onboardings/s until "
        f"{tl['lead_s'] + tl['length_s'] + tl['tail_s']:g} s"
    )
    phases = Table(title, ["phase", "samples", "RSS MB min-max", "threads min-max", "intake p95"])
    for phase, stats in report["phases"].items():
        if not stats["samples"]:
            phases.row(phase, 0, "-", "-", "-")
            continue
        rss, threads = stats["rss_mb"], stats["threads"]
        p95 = report["intake_p95_s"].get(phase)
        phases.row(
            phase,
            stats["samples"],
            f"{rss[0]}-{rss[1]}",
            f"{threads[0]}-{threads[1]}",
            f"{p95 * 1000:.0f} ms" if p95 is not None else "-",
        )
    phases.print()

    slowed = set(report["slowed"]["steps"])
    steps = [s for s in STEP_IDS]
    per_window = Table(
        f"steps finished per {report['window_s']:g} s window (* = the slowed tool; a step of it "
        "waited but none finished: 0!)",
        [
            "window s",
            "phase",
            *[f"{s}*" if s in slowed else s for s in steps],
            f"{report['vendor']} calls 2xx/other",
            "slowed retries",
            "breaker",
            "CPU",
            "intake p95",
        ],
    )
    for w in report["windows"]:
        cells = []
        for s in steps:
            n = w["finished"][s]
            starving = s not in slowed and n == 0 and w["waited_s"][s] >= 1
            cells.append(f"{n}!" if starving else str(n))
        calls = w["slowed_vendor_calls"]
        per_window.row(
            f"{w['start']:g}-{w['end']:g}",
            w["phase"],
            *cells,
            f"{calls.get('2xx', 0)}/{calls.get('other', 0)}",
            ", ".join(f"{k} {v}" for k, v in w["slowed_retries"].items()) or "-",
            "/".join(w["breaker"]) or "-",
            f"{w['cpu_share']:.2f}" if w["cpu_share"] is not None else "-",
            f"{w['intake_p95_s'] * 1000:.0f} ms" if w["intake_p95_s"] is not None else "-",
        )
    per_window.print()

    runs, s = report["runs"], report["slowed"]
    summary = Table("outcome", ["measure", "value"])
    summary.row(
        "intake refusals (each retried, same request id) / arrivals they hit",
        f"{runs['intake_refusals'] or 'none'} / {runs['arrivals_refused_then_accepted']}",
    )
    summary.row(
        "arrivals / accepted / succeeded",
        f"{runs['arrivals']} / {runs['accepted']} / {runs['succeeded']}",
    )
    summary.row(
        "parked / cancelled / lost",
        f"{sum(runs['parked'].values())} / {runs['cancelled']} / {runs['lost']}",
    )
    summary.row(
        "duplicate effects / runs missing one",
        f"{sum(report['duplicates'].values())} / {report['missing']}",
    )
    summary.row("last run finished after the window's end", f"{report['last_run_s_after_end']} s")
    summary.row(
        f"{', '.join(s['steps'])} attempts mean / max",
        f"{s['attempts_mean']} / {s['attempts_max']}",
    )
    summary.row(
        f"{', '.join(s['steps'])} retries by code",
        ", ".join(f"{k} {v}" for k, v in s["retry_codes"].items()) or "none",
    )
    b = s["breaker"]
    summary.row(
        f"{report['vendor']} breaker openings / open s / first opened",
        f"{b['openings']} / {b['open_s']} s / "
        + (
            f"{b['first_opened_s_after_start']} s into the window"
            if b["first_opened_s_after_start"] is not None
            else "never"
        ),
    )
    summary.print()

    if view:
        seen = Table(
            f"what the operator saw {view['at_s']:g} s into the window (runs per status: "
            f"{view['runs_per_status']})",
            ["vendor", "attempts", "failed", "error rate", "p50", "p99", "breaker"],
        )
        for v in view["health_vendors"]:
            seen.row(
                v["vendor"],
                v["attempts"],
                v["failures"],
                f"{v['error_rate'] * 100:.0f}%" if v["error_rate"] is not None else "-",
                f"{v['p50_ms']:.0f} ms" if v["p50_ms"] is not None else "-",
                f"{v['p99_ms']:.0f} ms" if v["p99_ms"] is not None else "-",
                v["breaker"],
            )
        seen.print()
        depth = ", ".join(
            f"{q['queue']} {q['depth']} ({q['scheduled']} later"
            + (f", oldest due {q['oldest_age_s']:.0f} s)" if q["oldest_age_s"] else ")")
            for q in view["health_queues"]
        )
        print(f"queues then (depth): {depth}")
        if view["held_run"]:
            shown = view["runs_show"].splitlines()
            print(f"\n`chimera runs show` of a run held by the brownout ({len(shown)} lines):")
            print("\n".join(shown[:SHOW_LINES]))

    checks = Table("checks", ["check", "result", "seen"])
    for v in verdicts:
        checks.row(v.check, "pass" if v.ok else "FAIL", v.detail)
    checks.print()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--vendor", choices=VENDORS, default="jira")
    parser.add_argument("--rate", type=float, default=5.0, help="onboardings per second")
    parser.add_argument("--short", action="store_true", help=f"the smoke timeline: {SHORT}")
    parser.add_argument("--lead", type=float, help="seconds from the first arrival to the brownout")
    parser.add_argument("--length", type=float, help="the brownout's length, seconds")
    parser.add_argument("--latency", type=float, help="seconds added to each call in the window")
    parser.add_argument("--tail", type=float, help="arrivals go on this long after the window")
    parser.add_argument("--window", type=float, default=5.0, help="seconds per counting window")
    parser.add_argument(
        "--min-wait",
        type=float,
        default=1.0,
        help="a tool whose step waited this long in a window must finish one there",
    )
    parser.add_argument(
        "--rss-bound-mb",
        type=float,
        default=20.0,
        help="how far the brownout's max RSS may rise over the before max",
    )
    parser.add_argument(
        "--deadline", type=float, default=1800, help="seconds to wait for every run"
    )
    parser.add_argument("--reasoning", action="store_true", help="model planning on")
    args = parser.parse_args()

    timeline = SHORT if args.short else FULL
    timeline = replace(
        timeline,
        **{
            k: v
            for k, v in (
                ("lead_s", args.lead),
                ("length_s", args.length),
                ("latency_s", args.latency),
                ("tail_s", args.tail),
            )
            if v is not None
        },
    )
    home = Path(tempfile.mkdtemp(prefix="chimera-brownout-"))
    env = {**os.environ, "CHIMERA_HOME": str(home)}
    if not args.reasoning:
        env["CHIMERA_AGENT_REASONING"] = "false"
    # t0, the first arrival, leaves the stack time to start; the window counts from it.
    t0 = time.time() + STARTUP_S
    faults = (
        f"{args.vendor}.brownout_ms={timeline.latency_s * 1000:g},"
        f"brownout={timeline.start:g}-{timeline.end:g},t0={t0:.3f}"
    )
    sandbox, sandbox_url = start_sandbox(home, faults, env)
    stack = Stack(home, sandbox_url, env)
    stack.start()
    assert stack.process is not None
    if time.time() > t0:
        raise SystemExit(f"chimera dev took over {STARTUP_S} s to start: the timeline is lost")
    runtime = build_runtime(Settings(home=home))
    sampler = Sampler(stack.process.pid, runtime, args.vendor, t0).start()
    print(f"home {home}; faults {faults}", flush=True)

    slowed = {spec.step_id for spec in TOOLS.values() if spec.vendor == args.vendor}
    view: dict[str, Any] = {}

    def look() -> None:
        at = timeline.start + timeline.length_s * 0.75
        time.sleep(max(0.0, t0 + at - time.time()))
        looked_s = round(time.time() - t0 - timeline.start, 1)
        view.update(operator_view(home, runtime, slowed, env), at_s=looked_s)

    looking = threading.Thread(target=look, daemon=True)
    looking.start()
    time.sleep(max(0.0, t0 - time.time()))
    arrivals = arrive(stack.url, home, t0, timeline, args.rate)
    print(
        f"  {len(arrivals)} arrivals by +{time.time() - t0:.0f} s; waiting for every run",
        flush=True,
    )
    looking.join()
    end = t0 + timeline.arrivals_end + args.deadline
    wanted = len({a.run_id for a in arrivals if a.run_id})
    while time.time() < end:
        counts = runtime.store.count_runs(RunFilter())
        if sum(counts.get(s, 0) for s in SETTLED) >= wanted:
            break
        time.sleep(1)
    time.sleep(2 * SAMPLE_S)  # a few samples after the last run
    sampler.stop()
    stack.stop()
    sandbox.send_signal(signal.SIGTERM)
    sandbox.wait(30)
    print(f"  settled by +{time.time() - t0:.0f} s", flush=True)

    report = analyse(home, runtime, arrivals, sampler.samples, timeline, t0, args)
    report["operator_view"] = view
    report["home"] = str(home)
    verdicts = judge(report, args.rss_bound_mb)
    report["checks"] = [asdict(v) for v in verdicts]
    print_report(report, verdicts, view or None)
    save_results("brownout", report)
    failed = [v for v in verdicts if not v.ok]
    if failed:
        sys.exit("brownout failed: " + "; ".join(f"{v.check} ({v.detail})" for v in failed))


STARTUP_S = 15.0

if __name__ == "__main__":
    main()

"""How long the console takes to render, with 10,000 runs in the store.

Seeds a fresh SQLite home in bulk with varied runs (every status, steps out at each tool,
attention flags, model decisions, 10 to 60 events each, one run retried 40 times and resumed),
then renders through the console's app, interleaved: the runs list plain, filtered (status and
tool), searched (a company word), and the retried run's page. Prints p50/p95/max ms per page
and saves them as JSON in bench/results/.

    make bench-console                      # or: python bench/console.py --runs 10000 --rounds 40
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from support import percentile

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from chimera.console import create_app  # noqa: E402
from orchestrator.planning import default_plan  # noqa: E402
from shared.keys import SESSION_COOKIE, Keys, local_credential  # noqa: E402
from shared.model import (  # noqa: E402
    Event,
    OnboardingRequest,
    ReasoningSummary,
    RunState,
    RunStatus,
    StepError,
    StepStatus,
    StepSummary,
    Totals,
)
from shared.runtime import build_runtime  # noqa: E402
from shared.settings import Settings  # noqa: E402
from shared.sqlite_queries import row_columns  # noqa: E402

WORDS = ("Acme", "Globex", "Initech", "Umbrella", "Stark", "Wayne", "Tyrell", "Cyberdyne")
FORMS = ("Ltd", "GmbH", "Inc.", "SA", "AG", "")
STATUSES = [
    (RunStatus.SUCCEEDED, 70),
    (RunStatus.PARKED, 10),
    (RunStatus.RUNNING, 8),
    (RunStatus.WAITING, 4),
    (RunStatus.CANCELLED, 5),
    (RunStatus.PENDING, 3),
]
FLAGS = ("template_email", "injection_suspected", "draft_refused")


def _run(i: int, rng: random.Random, at: datetime, retries: int = 0) -> tuple[RunState, list]:
    word = rng.choice(WORDS)
    request = OnboardingRequest(
        company_name=f"{word} {i} {rng.choice(FORMS)}".strip(),
        domain=f"{word.lower()}{i}.example",
        contact_email=f"ops{i}@{word.lower()}{i}.example",
        contact_name="Ada Lovelace",
        request_id=f"bench-{i}",
    )
    status = rng.choices([s for s, _ in STATUSES], [w for _, w in STATUSES])[0]
    if retries:
        status = RunStatus.SUCCEEDED
    run = RunState(
        run_id=request.run_id(),
        request_key=request.idempotency_key(),
        request=request,
        created_at=at,
    )
    plan = default_plan(run)
    # How far it got: every step for a finished run, a few for the rest.
    done = len(plan) if status in (RunStatus.SUCCEEDED,) else rng.randrange(0, len(plan))
    steps, events, clock = {}, [], at + timedelta(seconds=1)
    events.append(Event(run_id=run.run_id, kind="run.created", actor="bench", at=at))
    for n, step in enumerate(plan):
        if n > done:
            break
        dispatched = clock
        events.append(
            Event(
                run_id=run.run_id,
                kind="step.dispatched",
                actor="orchestrator",
                at=dispatched,
                step_id=step.step_id,
                detail={"tool": step.tool, "generation": 1},
            )
        )
        tries = retries if (retries and step.step_id == "jira") else rng.choice((0, 0, 0, 1, 2))
        for a in range(1, tries + 1):
            started = clock + timedelta(milliseconds=20)
            clock = started + timedelta(milliseconds=rng.randint(5, 200))
            events.append(
                Event(
                    run_id=run.run_id,
                    kind="step.retry",
                    actor="tool",
                    at=clock,
                    step_id=step.step_id,
                    detail={
                        "code": "unavailable",
                        "message": "503",
                        "retryable": True,
                        "attempt": a,
                        "max_attempts": 40,
                        "next_attempt_at": (clock + timedelta(seconds=1)).isoformat(),
                        "gives_up_at": (clock + timedelta(minutes=30)).isoformat(),
                        "started_at": started.isoformat(),
                    },
                )
            )
            clock += timedelta(seconds=1)
        latency = rng.randint(5, 400)
        finished = clock + timedelta(milliseconds=latency + 10)
        if n < done:
            summary = StepSummary(
                step_id=step.step_id,
                tool=step.tool,
                status=StepStatus.SUCCEEDED,
                attempts=tries + 1,
                started_at=dispatched,
                finished_at=finished,
                latency_ms=latency,
                output="done",
            )
            kind = "step.succeeded"
            detail: dict[str, object] = {"attempts": tries + 1, "latency_ms": latency}
        elif status is RunStatus.PARKED:
            error = StepError(code=rng.choice(("unavailable", "rate_limited")), message="down")
            summary = StepSummary(
                step_id=step.step_id,
                tool=step.tool,
                status=StepStatus.FAILED,
                attempts=40,
                error=error,
            )
            kind, detail = "step.failed", {"error": error.model_dump()}
        else:
            summary = StepSummary(
                step_id=step.step_id, tool=step.tool, status=StepStatus.DISPATCHED
            )
            kind = ""
        steps[step.step_id] = summary
        if kind:
            events.append(
                Event(
                    run_id=run.run_id,
                    kind=kind,
                    actor="orchestrator",
                    at=finished,
                    step_id=step.step_id,
                    detail=detail,
                )
            )
        clock = finished
    run = run.evolve(
        status=status,
        plan=plan,
        steps=steps,
        version=len(events),
        reason="step jira failed: unavailable" if status is RunStatus.PARKED else "",
        attention=(rng.choice(FLAGS),) if rng.random() < 0.05 else (),
        reasoning={"plan": ReasoningSummary(key="plan", source="model", calls=1, llm_tokens=1200)},
        totals=Totals(steps=len(plan), steps_succeeded=done, llm_tokens=2900, cost_usd=0.0026),
        updated_at=clock,
    )
    return run, events


def seed(home: Path, runs: int, seed_value: int) -> str:
    """`runs` runs into home's store, one transaction; the retried run's id."""
    rt = build_runtime(Settings(home=home))
    db = rt.store.db  # type: ignore[attr-defined]
    rng = random.Random(seed_value)
    start = datetime.now(UTC) - timedelta(days=30)
    rows, event_rows = [], []
    retried = ""
    for i in range(runs):
        at = start + timedelta(seconds=i * (30 * 86400 / runs))
        run, events = _run(i, rng, at, retries=40 if i == runs // 2 else 0)
        if i == runs // 2:
            retried = run.run_id
        rows.append(
            (
                run.run_id,
                run.request_key,
                run.status.value,
                run.version,
                run.model_dump_json(),
                run.created_at.isoformat(),
                run.updated_at.isoformat(),
                *row_columns(run).values(),
            )
        )
        event_rows += [(e.run_id, e.at.isoformat(), e.model_dump_json()) for e in events]
    with db.transaction() as conn:
        conn.executemany(
            "INSERT INTO runs (run_id, request_key, status, version, doc, created_at, updated_at,"
            " search_keys, current_tools) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        conn.executemany("INSERT INTO events (run_id, at, doc) VALUES (?, ?, ?)", event_rows)
    conn.execute("ANALYZE")
    return retried


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--seed", type=int, default=12)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="chimera-bench-console-"))
    began = time.perf_counter()
    retried = seed(home, args.runs, args.seed)
    seeded_s = time.perf_counter() - began
    rt = build_runtime(Settings(home=home))
    client = create_app(rt).test_client()
    session = Keys(rt.store, home).session_for(local_credential(home))
    client.set_cookie(SESSION_COOKIE, session)
    pages = {
        "runs list": "/",
        "runs list, parked on jira": "/?status=parked&tool=jira",
        "runs list, searched": "/?q=globex",
        "run page (40 retries)": f"/run/{retried}",
    }
    for path in pages.values():  # templates compiled, caches warm
        assert client.get(path).status_code == 200, path
    times: dict[str, list[float]] = {name: [] for name in pages}
    for _ in range(args.rounds):
        for name, path in pages.items():  # interleaved
            t = time.perf_counter()
            answer = client.get(path)
            times[name].append((time.perf_counter() - t) * 1000)
            assert answer.status_code == 200, (path, answer.status_code)
    results = {
        name: {
            "p50_ms": round(percentile(values, 0.5), 1),
            "p95_ms": round(percentile(values, 0.95), 1),
            "max_ms": round(max(values), 1),
        }
        for name, values in times.items()
    }
    print(f"{args.runs} runs seeded in {seeded_s:.1f} s; {args.rounds} rounds, interleaved")
    print(f"{'page':<28} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}")
    for name, r in results.items():
        print(f"{name:<28} {r['p50_ms']:>8} {r['p95_ms']:>8} {r['max_ms']:>8}")
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    saved = out / f"console-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    saved.write_text(
        json.dumps({"runs": args.runs, "rounds": args.rounds, "pages": results}, indent=2)
    )
    print(f"saved {saved}")


if __name__ == "__main__":
    main()

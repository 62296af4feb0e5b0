"""bench/brownout.py's judgement: the windows it counts steps in, when it calls a tool starved,
and that each of its checks fails when its condition breaks (pure: no stack, no sandbox)."""

from __future__ import annotations

import copy
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from orchestrator.planning import default_plan
from shared.model import OnboardingRequest, RunState, StepStatus, StepSummary

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import brownout  # noqa: E402
from brownout import (
    FULL,
    STEP_IDS,
    Sample,
    StepSpan,
    Timeline,
    judge,
    starved,
    step_spans,
    windows,
)  # noqa: E402

T0 = datetime(2026, 1, 1, tzinfo=UTC)
OTHERS = tuple(s for s in STEP_IDS if s != "jira")

spans_of = st.lists(
    st.builds(
        StepSpan,
        step_id=st.sampled_from(STEP_IDS),
        ready=st.floats(0, 80, allow_nan=False),
        finished=st.none() | st.floats(0, 120, allow_nan=False),
    ).filter(lambda s: s.finished is None or s.finished >= s.ready),
    max_size=60,
)


@given(spans_of, st.sampled_from([1.0, 2.5, 5.0]), st.floats(1, 120, allow_nan=False))
def test_every_finished_step_counts_in_exactly_one_window_when_spans_are_random(
    spans, width, until
):
    found = windows(spans, FULL, width, until)
    assert found[0].start == 0 and found[-1].end >= until
    assert all(a.end == b.start for a, b in zip(found, found[1:], strict=False))
    counted = sum(sum(w.finished.values()) for w in found)
    assert counted == sum(s.finished is not None and s.finished < found[-1].end for s in spans)
    # No step waits longer in a window than the window is wide.
    assert all(0 <= waited <= width + 1e-9 for w in found for waited in w.waited_s.values())


@given(
    step=st.sampled_from(OTHERS),
    gap_start=st.integers(2, 12),
    gap_windows=st.integers(1, 4),
    width=st.sampled_from([2.0, 5.0]),
)
def test_a_tool_is_starved_exactly_where_its_step_waits_and_none_finishes(
    step, gap_start, gap_windows, width
):
    until = 20 * width
    # Every tool finishes one step per window, each ready a moment before it finishes;
    # the slowed one (jira) finishes nothing at all and is never called starved.
    flowing = [StepSpan(s, k * width + 0.1, k * width + 0.4) for s in OTHERS for k in range(20)] + [
        StepSpan("jira", 0.0, None)
    ]
    gap = range(gap_start, gap_start + gap_windows)
    spans = [s for s in flowing if not (s.step_id == step and int(s.ready // width) in gap)]
    # One step of it waits through the gap, finishing just after.
    spans.append(StepSpan(step, gap_start * width, (gap_start + gap_windows) * width + 0.4))

    everywhere = Timeline(lead_s=0, length_s=until, latency_s=45, tail_s=0)
    reasons = starved(windows(spans, FULL, width, until), {"jira"}, 1.0, everywhere)

    assert len(reasons) == gap_windows
    assert all(r.startswith(f"{step} finished nothing in ") for r in reasons)
    assert not starved(windows(flowing, FULL, width, until), {"jira"}, 1.0, everywhere)
    # Only the windows the brownout overlaps are judged: a cold start before it is not.
    after_gap = Timeline(
        lead_s=(gap_start + gap_windows) * width, length_s=width, latency_s=45, tail_s=0
    )
    assert not starved(windows(spans, FULL, width, until), {"jira"}, 1.0, after_gap)


def test_a_step_is_ready_when_its_last_dependency_finished_and_never_when_one_did_not():
    request = OnboardingRequest(
        company_name="Acme", domain="acme.example", contact_email="ada@acme.example"
    )
    run = RunState(run_id="run-1", request_key="k", request=request, created_at=T0)
    run = run.evolve(plan=default_plan(run))
    done = {"enrich": 1, "jira": 50, "draft": 3, "email": 4, "slack": 51}
    steps = {
        p.step_id: StepSummary(
            step_id=p.step_id,
            tool=p.tool,
            status=StepStatus.SUCCEEDED,
            finished_at=T0 + timedelta(seconds=done[p.step_id]),
        )
        for p in run.plan
    }
    spans = {s.step_id: s for s in step_spans([run.evolve(steps=steps)], T0.timestamp())}
    assert (spans["enrich"].ready, spans["enrich"].finished) == (0, 1)
    assert spans["jira"].ready == spans["draft"].ready == 1
    assert spans["slack"].ready == 50  # after Jira, the later of its two dependencies

    steps["jira"] = steps["jira"].model_copy(
        update={"status": StepStatus.DISPATCHED, "finished_at": None}
    )
    spans = {s.step_id: s for s in step_spans([run.evolve(steps=steps)], T0.timestamp())}
    assert spans["jira"].finished is None  # it waits still
    assert "slack" not in spans  # never ready: it waited on nothing


def passing_report() -> dict:
    phase = {"samples": 40, "rss_mb": [90.0, 100.0], "threads": [40, 50]}
    return {
        "phases": {"before": phase, "during": dict(phase), "after": dict(phase)},
        "slowed_pool": 10,
        "thread_ceiling": 103,
        "starved": [],
        "runs": {
            "arrivals": 10,
            "accepted": 10,
            "succeeded": 10,
            "parked": {},
            "cancelled": 0,
            "lost": 0,
        },
        "duplicates": {"jira.project": 0},
        "missing": 0,
        "timeline": {"latency_s": 45.0},
        "read_timeout_s": 10.0,
        "slowed": {"steps": ["jira"], "retries_during": 30},
    }


BREAKS = {
    "RSS flat": lambda r: r["phases"].update(
        during={**r["phases"]["during"], "rss_mb": [90.0, 130.0]}
    ),
    "threads flat": lambda r: r["phases"].update(
        during={**r["phases"]["during"], "threads": [40, 61]}
    ),
    "threads bounded": lambda r: r["phases"].update(
        after={**r["phases"]["after"], "threads": [40, 104]}
    ),
    "the other tools": lambda r: r["starved"].append("email finished nothing in 20-25 s"),
    "every run ended": lambda r: r["runs"].update(succeeded=9, lost=1),
    "each effect": lambda r: r["duplicates"].update({"jira.project": 1}),
    "the brownout was felt": lambda r: r["slowed"].update(retries_during=0),
}


def test_each_check_fails_alone_when_its_condition_breaks():
    assert all(v.ok for v in judge(passing_report(), rss_bound_mb=20))
    for check, breaks in BREAKS.items():
        report = copy.deepcopy(passing_report())
        breaks(report)
        failed = [v.check for v in judge(report, rss_bound_mb=20) if not v.ok]
        assert len(failed) == 1 and failed[0].startswith(check), (check, failed)


def test_a_brownout_shorter_than_the_read_timeout_is_not_required_to_cause_retries():
    report = passing_report()
    report["timeline"]["latency_s"] = 5.0
    report["slowed"]["retries_during"] = 0
    assert all(v.ok for v in judge(report, rss_bound_mb=20))


def test_the_breaker_report_counts_each_opening_once_with_its_half_open_probes():
    states = ["closed", "open", "open", "half_open", "open", "closed", "closed", "open"]
    samples = [Sample(FULL.start + i, 100.0, 40, 0.0, s) for i, s in enumerate(states)]
    seen = brownout.breaker_report(samples, FULL)
    assert seen["openings"] == 2
    assert seen["open_s"] == 5.0  # the intervals ending in a sample that is not closed
    assert seen["first_opened_s_after_start"] == 1.0

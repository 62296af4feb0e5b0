"""The CLI's tables on an 80-column terminal: a run id is never cut, whatever the rest holds."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from rich.cells import cell_len
from rich.console import Console

from chimera import render
from sandbox.faults import KINDS, VENDORS
from shared.model import Event, PlanStep, RunState, RunStatus, StepStatus, StepSummary
from shared.queues import QUEUES
from shared.retry_outlook import RetryOutlook
from tests.conftest import make_run
from tests.strategies import onboarding_requests

RUN_IDS = st.from_regex(r"run-[0-9a-f]{20}", fullmatch=True)
# What people name companies: long, any script, emoji, wide characters, no control codes.
COMPANY_NAMES = st.text(
    st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")), min_size=1, max_size=200
)
FLAGS = st.from_regex(r"[a-z][a-z0-9_]{0,63}", fullmatch=True)


@st.composite
def runs(draw) -> RunState:  # type: ignore[no-untyped-def]
    request = draw(onboarding_requests())
    if draw(st.booleans()):
        request = request.model_copy(update={"company_name": draw(COMPANY_NAMES)})
    return make_run(request=request).model_copy(
        update={
            "run_id": draw(RUN_IDS),
            "status": draw(st.sampled_from(RunStatus)),
            "attention": tuple(sorted(set(draw(st.lists(FLAGS, max_size=12))))),
            "reason": draw(st.sampled_from(("", "slack answered channel_not_found " * 4))),
        }
    )


def printed(renderable, width: int = 80) -> str:  # type: ignore[no-untyped-def]
    console = Console(width=width, record=True, file=io.StringIO(), color_system=None)
    console.print(renderable)
    return console.export_text()


def _fits(text: str, width: int = 80) -> bool:
    return all(cell_len(line) <= width for line in text.splitlines())


@hypothesis_settings(max_examples=60)
@given(st.lists(runs(), min_size=1, max_size=8))
def test_the_runs_list_keeps_every_run_id_whole_when_80_columns_wide(listed):
    text = printed(render.runs_table(listed))
    assert all(run.run_id in text for run in listed)
    assert _fits(text)


@hypothesis_settings(max_examples=30)
@given(st.lists(runs(), min_size=1, max_size=4), st.sampled_from((100, 120, 200)))
def test_the_runs_list_keeps_every_run_id_whole_when_wider(listed, width):
    text = printed(render.runs_table(listed), width)
    assert all(run.run_id in text for run in listed)
    assert _fits(text, width)


def test_the_runs_list_keeps_the_known_flags_whole_when_the_company_is_long():
    run = make_run(attention=("injection_suspected", "template_email")).model_copy(
        update={"request": make_run().request.model_copy(update={"company_name": "Zürich " * 30})}
    )
    lines = printed(render.runs_table([run])).splitlines()
    assert "injection_suspected" in lines[1] and "template_email" in lines[2]
    assert "…" in lines[1]


def test_the_runs_list_has_steps_and_attempts_when_the_terminal_is_wide():
    run = make_run()
    assert "attempts" in printed(render.runs_table([run]), 140)
    assert "attempts" not in printed(render.runs_table([run]), 80)
    assert printed(render.runs_table([]), 80).split() == ["run", "status", "company"] + [
        "attention",
        "created",
    ]


@hypothesis_settings(max_examples=60)
@given(runs())
def test_runs_show_header_keeps_the_run_id_whole_when_80_columns_wide(run):
    text = printed(render.timeline(run, []))
    assert run.run_id in text.splitlines()[0]
    assert _fits(text)


RECORDS = st.fixed_dictionaries(
    {
        "at": st.datetimes(timezones=st.just(UTC)).map(datetime.isoformat),
        "vendor": st.sampled_from(VENDORS),
        "action": st.text(min_size=1, max_size=60),
        "status": st.sampled_from((200, 201, 202, 204, 400, 404, 429, 500, 503)),
        "run_id": st.one_of(st.none(), RUN_IDS),
        "fault": st.one_of(st.none(), st.sampled_from(KINDS), st.text(max_size=80)),
    }
)


@hypothesis_settings(max_examples=60)
@given(st.lists(RECORDS, min_size=1, max_size=10))
def test_sandbox_records_keep_every_run_id_whole_when_80_columns_wide(records):
    text = printed(render.records_table(records))
    assert all(r["run_id"] in text for r in records if r["run_id"])
    assert _fits(text)


def _retrying(now: datetime) -> tuple[RunState, list[Event]]:
    run = make_run(
        status=RunStatus.RUNNING,
        plan=(PlanStep(step_id="jira", tool="create_jira_project"),),
        steps={
            "jira": StepSummary(
                step_id="jira", tool="create_jira_project", status=StepStatus.DISPATCHED
            )
        },
    )
    outlook = RetryOutlook.after_failure(QUEUES["tool-jira"], 3, now)
    detail = {"code": "unavailable", "message": "Jira answered 503", "retryable": True}
    retry = Event(
        run_id=run.run_id,
        kind="step.retry",
        actor="tool-jira",
        step_id="jira",
        at=now,
        detail={**detail, **outlook.detail(), "started_at": now.isoformat()},
    )
    return run, [retry]


def test_a_retrying_step_says_which_attempt_when_the_next_comes_and_when_it_parks():
    now = datetime(2026, 5, 1, 14, 0, 0, tzinfo=UTC)
    run, events = _retrying(now)
    outlook = RetryOutlook.from_detail(events[0].detail)
    assert outlook is not None
    for view in (render.live_view(run, events, now), render.timeline(run, events)):
        text = " ".join(printed(view, 200).split())
        assert f"3/{outlook.max_attempts}" in text
        assert f"gives up and parks the run at {outlook.gives_up_at:%H:%M:%S} UTC" in text
    later = " ".join(printed(render.steps_table(run, events, now), 200).split())
    assert outlook.says(now) in later and "next attempt in 4 s" in later
    # Seen later, the same table counts down.
    sooner = printed(render.steps_table(run, events, now + timedelta(seconds=3)), 200)
    assert "next attempt in 1 s" in " ".join(sooner.split())


def test_an_event_line_is_one_line_with_its_time_step_kind_and_retry_outlook():
    now = datetime(2026, 5, 1, 14, 0, 0, 250000, tzinfo=UTC)
    _, [retry] = _retrying(now)
    line = render.event_line(retry)
    assert "\n" not in line
    assert line.startswith("14:00:00.250  jira    step.retry")
    assert "unavailable: Jira answered 503; attempt 3/" in line and "next attempt in 4 s" in line
    folded = retry.model_copy(update={"kind": "guard.draft_refused", "detail": {"reason": "a\nb"}})
    assert "\n" not in render.event_line(folded) and render.event_line(folded).endswith("a b")

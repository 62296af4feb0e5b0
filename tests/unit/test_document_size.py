"""Firestore documents stay far below their 1 MiB limit: the run document even for the largest
run the intake and the plan checks let through, and the summary a long retry streak folds into.
Sizes are Firestore's own storage-size rules, on the fields the store writes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from shared.firestore_state import _fields, document_bytes
from shared.history import RETRY, fold_retries
from shared.model import (
    Approval,
    Attention,
    Event,
    OnboardingRequest,
    PlanStep,
    ReasoningSummary,
    RunState,
    RunStatus,
    StepError,
    StepStatus,
    StepSummary,
    Totals,
)
from shared.registry import DraftEmailArgs, JiraProjectArgs, SlackNoticeArgs
from tests.strategies import onboarding_requests

MIB = 1024 * 1024
# "Far below": an eighth of the limit, for a case far larger than any run has been.
BUDGET = MIB // 8
WIDE = "😀"  # four bytes in UTF-8, and the intake takes it: the most bytes per character
NOW = datetime(2030, 1, 1, tzinfo=UTC)


def test_the_size_rules_give_firestores_own_documented_example():
    # users/jeff/tasks/my_task_id with four fields is 147 bytes in Firestore's documentation.
    fields = {
        "type": "Personal",
        "done": False,
        "priority": 1,
        "description": "Learn Cloud Firestore",
    }
    assert document_bytes("users/jeff/tasks/my_task_id", fields) == 147


def _widest_request() -> OnboardingRequest:
    return OnboardingRequest(
        company_name=WIDE * 200,
        domain=("a" * 63 + ".") * 3 + "a" * 53 + ".example",  # 253, the most DNS takes
        contact_email="a" * 64 + "@" + "b" * 63 + "." + "c" * 63 + ".example",
        contact_name=WIDE * 200,
        goal=WIDE * 2000,
        slack_channel="#" + "c" * 79,
        request_id=WIDE * 128,
    )


def _largest_plan(request: OnboardingRequest) -> tuple[PlanStep, ...]:
    """The default plan's steps with every argument at the most the plan checks let through."""
    jira = JiraProjectArgs(
        key="ABCDEFGHIJ", name="N" * 80, kickoff_issues=tuple(WIDE * 255 for _ in range(10))
    )
    draft = DraftEmailArgs(tone=WIDE * 100, highlights=tuple(WIDE * 500 for _ in range(5)))
    return (
        PlanStep(step_id="enrich", tool="enrich_company", args={"domain": request.domain}),
        PlanStep(
            step_id="jira",
            tool="create_jira_project",
            args=jira.model_dump(),
            depends_on=("enrich",),
        ),
        PlanStep(
            step_id="draft",
            tool="draft_welcome_email",
            args=draft.model_dump(),
            depends_on=("enrich",),
        ),
        PlanStep(step_id="email", tool="send_welcome_email", depends_on=("draft",)),
        PlanStep(
            step_id="slack",
            tool="post_slack_notice",
            args=SlackNoticeArgs(channel=request.slack_channel).model_dump(),
            depends_on=("jira", "email"),
        ),
    )


def _largest_run(request: OnboardingRequest) -> RunState:
    plan = _largest_plan(request)
    steps = {
        s.step_id: StepSummary(
            step_id=s.step_id,
            tool=s.tool,
            status=StepStatus.FAILED,
            generation=1_000,
            attempts=40,
            started_at=NOW,
            finished_at=NOW,
            latency_ms=30_000,
            output=WIDE * 160,  # the orchestrator keeps SUMMARY_CHARS of a step's summary
            # Vendors' messages are cut at 300 characters; this is beyond any of them.
            error=StepError(code="c" * 64, message=WIDE * 2000, retryable=True),
            llm_tokens=10**9,
            cost_usd=1e6,
        )
        for s in plan
    }
    reasoning = {
        key: ReasoningSummary(key=key, source="model", calls=2, note=WIDE * 160)
        for key in ["plan", *(f"adapt-{s.step_id}" for s in plan)]
    }
    # Every flag the guards raise, and as many others as an operator could care to read.
    attention = [*Attention, *(f"flag_{i:02d}_" + "x" * 55 for i in range(20))]
    return RunState(
        run_id=request.run_id(),
        request_key=request.idempotency_key(),
        request=request,
        status=RunStatus.CANCELLED,
        reason=WIDE * 500,
        plan=plan,
        steps=steps,
        reasoning=reasoning,
        approval=Approval(
            step_id="email",
            status="rejected",
            subject=WIDE * 160,
            actor=WIDE * 200,
            reason=WIDE * 500,
            at=NOW,
        ),
        attention=attention,
        totals=Totals(steps=5, steps_succeeded=5, attempts=200, llm_tokens=10**9, cost_usd=1e6),
        version=10**6,
    )


def _run_document_bytes(run: RunState) -> int:
    return document_bytes(f"runs/{run.run_id}", _fields(run, NOW + timedelta(days=30)))


def test_the_run_document_stays_far_below_the_limit_when_every_field_is_at_its_largest():
    size = _run_document_bytes(_largest_run(_widest_request()))
    assert 60_000 < size < BUDGET  # large indeed (about 90 kB), and an eighth of 1 MiB


@given(onboarding_requests())
def test_the_run_document_stays_far_below_the_limit_for_any_client(request):
    assert _run_document_bytes(_largest_run(request)) < BUDGET


@given(
    st.lists(
        st.sampled_from(["unavailable", "rate_limited", "timeout", "circuit_open"]),
        min_size=2,
        max_size=400,
    )
)
def test_a_folded_retry_streak_is_one_small_event_however_long_it_ran(codes):
    retries = [
        (
            i,
            Event(
                run_id="run-x",
                kind=RETRY,
                actor="tool-jira",
                step_id="jira",
                at=NOW + timedelta(minutes=i),
                detail={"attempt": i + 1, "code": code, "message": WIDE * 300, "retryable": True},
            ),
        )
        for i, code in enumerate(codes)
    ]
    (summary,) = fold_retries(retries).writes.values()
    assert (
        document_bytes("runs/run-x/events/00000000000000000000-abcdefgh", _fields(summary)) < 1024
    )

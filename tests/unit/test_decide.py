"""The orchestrator's decisions, pure: a run and a happening in, the next run out."""

from __future__ import annotations

import pytest

from orchestrator import core
from shared.model import (
    OrchestratorTask,
    RunStatus,
    StepError,
    StepOutcome,
    StepStatus,
    utcnow,
)
from tests.conftest import make_request, make_run

START = OrchestratorTask(run_id="r", kind="start")


def finished(step_id: str) -> OrchestratorTask:
    return OrchestratorTask(run_id="r", kind="step_finished", step_id=step_id)


def ok(run, step_id, **output) -> StepOutcome:
    return StepOutcome(run_id=run.run_id, step_id=step_id, tool=run.steps[step_id].tool,
                       ok=True, output=output, summary=f"{step_id} done", attempts=2,
                       latency_ms=12)


def _started():
    decision = core.decide(make_run(), START, {}, utcnow())
    return decision.run.evolve(version=2)


def test_start_plans_and_dispatches_enrichment_first():
    decision = core.decide(make_run(), START, {}, utcnow())
    assert decision.run.status is RunStatus.RUNNING
    assert [s.step_id for s in decision.run.plan] == ["enrich", "jira", "draft", "email",
                                                      "slack"]
    assert [c.step_id for c in decision.calls] == ["enrich"]
    assert decision.run.steps["enrich"].status is StepStatus.DISPATCHED
    assert [e.kind for e in decision.events] == ["run.planned", "step.dispatched"]


def test_start_does_nothing_when_the_run_already_started():
    decision = core.decide(_started(), START, {}, utcnow())
    assert not decision.changed and decision.calls == []


def test_enrichment_done_dispatches_jira_and_draft_in_parallel():
    run = _started()
    outcome = ok(run, "enrich", found=True, company={"name": "Acme"})
    decision = core.decide(run, finished("enrich"), {"enrich": outcome}, utcnow())
    assert sorted(c.step_id for c in decision.calls) == ["draft", "jira"]
    jira = next(c for c in decision.calls if c.step_id == "jira")
    assert jira.inputs["enrich"]["company"] == {"name": "Acme"}
    step = decision.run.steps["enrich"]
    assert (step.status, step.attempts, step.latency_ms) == (StepStatus.SUCCEEDED, 2, 12)
    assert decision.run.totals.attempts == 2


def test_redelivered_report_changes_nothing():
    run = _started()
    outcomes = {"enrich": ok(run, "enrich")}
    once = core.decide(run, finished("enrich"), outcomes, utcnow()).run
    again = core.decide(once, finished("enrich"), outcomes, utcnow())
    assert not again.changed and again.calls == []


def test_failed_step_parks_the_run_with_its_reason():
    run = _started()
    failure = StepOutcome(run_id=run.run_id, step_id="enrich", tool="enrich_company", ok=False,
                          error=StepError(code="timeout", message="gave up after 8 attempts",
                                          retryable=True), attempts=8)
    decision = core.decide(run, finished("enrich"), {"enrich": failure}, utcnow())
    assert decision.run.status is RunStatus.PARKED
    assert "enrich" in decision.run.reason and "timeout" in decision.run.reason
    assert decision.calls == []


def test_run_succeeds_when_every_step_succeeded():
    run = _started()
    outcomes: dict[str, StepOutcome] = {}
    for step_id in ("enrich", "jira", "draft", "email", "slack"):
        outcomes[step_id] = ok(run, step_id)
        run = core.decide(run, finished(step_id), outcomes, utcnow()).run
    assert run.status is RunStatus.SUCCEEDED
    assert run.totals.steps_succeeded == 5 and run.totals.attempts == 10


def test_report_for_an_unknown_step_changes_nothing():
    run = _started()
    decision = core.decide(run, finished("nope"), {}, utcnow())
    assert not decision.changed


def test_redispatch_lists_dispatched_steps_without_outcome():
    run = _started()
    calls = core.redispatch(run, {})
    assert [c.step_id for c in calls] == ["enrich"]
    assert core.dispatch_task(calls[0]).name == f"{run.run_id}-enrich-g1"


@pytest.mark.parametrize(("name", "key"), [
    ("Acme Corp", "AC"), ("Globex", "GLOBEX"), ("Initech Software Holdings", "ISH"),
    ("3M", "MX"), ("!!!", "CLIENT"), ("A", "AX"),
])
def test_project_key_is_a_valid_jira_key(name, key):
    assert core.project_key(name) == key


def test_plan_uses_the_request_channel():
    run = make_run(request=make_request(slack_channel="#vip"))
    decision = core.decide(run, START, {}, utcnow())
    slack = next(s for s in decision.run.plan if s.step_id == "slack")
    assert slack.args == {"channel": "#vip"}

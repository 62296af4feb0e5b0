"""The orchestrator's decisions, pure: a run and a happening in, the next run out."""

from __future__ import annotations

import pytest

from orchestrator import core, planning, tasks
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
    return StepOutcome(
        run_id=run.run_id,
        step_id=step_id,
        tool=run.steps[step_id].tool,
        ok=True,
        output=output,
        summary=f"{step_id} done",
        attempts=2,
        latency_ms=12,
    )


def _started():
    decision = core.decide(make_run(), START, {}, utcnow())
    return decision.run.evolve(version=2)


def test_start_plans_and_dispatches_enrichment_first():
    decision = core.decide(make_run(), START, {}, utcnow())
    assert decision.run.status is RunStatus.RUNNING
    assert [s.step_id for s in decision.run.plan] == ["enrich", "jira", "draft", "email", "slack"]
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
    # A reference to the step, nothing more: the tool reads the enrichment from the ledger.
    assert jira.model_dump() == {
        "run_id": run.run_id,
        "step_id": "jira",
        "tool": "create_jira_project",
        "generation": 1,
    }
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
    failure = StepOutcome(
        run_id=run.run_id,
        step_id="enrich",
        tool="enrich_company",
        ok=False,
        error=StepError(code="timeout", message="gave up after 8 attempts", retryable=True),
        attempts=8,
    )
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
    assert tasks.dispatch_task(calls[0]).name == f"{run.run_id}-enrich-g1"


@pytest.mark.parametrize(
    ("domain", "name", "key"),
    [
        ("acme.example", "Acme Corp", "ACME"),
        ("client7.example", "Client 7 Ltd", "CLIENT7"),
        ("3m.com", "3M", "X3M"),
        ("very-long-company-name.io", "Long", "VERYLONGCO"),
        ("x.example", "Initech Software Holdings", "ISH"),
        ("x.example", "!!!", "CLIENT"),
        ("x.example", "Zed", "ZED"),
        ("eu.shop.acme.co.uk", "Acme", "ACME"),
        ("xn--mnchen-3ya.de", "München AG", "MUNCHEN"),
        ("xn--1lqs71d.jp", "東京", "CLIENT"),
        ("do.example", "Do", "DOX"),
    ],
)
def test_project_key_is_a_valid_jira_key(domain, name, key):
    assert planning.project_key(domain, name) == key


def test_plan_uses_the_request_channel():
    run = make_run(request=make_request(slack_channel="#vip"))
    decision = core.decide(run, START, {}, utcnow())
    slack = next(s for s in decision.run.plan if s.step_id == "slack")
    assert slack.args == {"channel": "#vip"}


def _parked_on_jira():
    run = _started()
    outcomes = {"enrich": ok(run, "enrich")}
    run = core.decide(run, finished("enrich"), outcomes, utcnow()).run
    outcomes["draft"] = ok(run, "draft")
    run = core.decide(run, finished("draft"), outcomes, utcnow()).run
    failure = StepOutcome(
        run_id=run.run_id,
        step_id="jira",
        tool="create_jira_project",
        ok=False,
        error=StepError(code="unavailable", message="503"),
    )
    run = core.decide(run, finished("jira"), {**outcomes, "jira": failure}, utcnow()).run
    assert run.status is RunStatus.PARKED
    return run, outcomes


def test_resume_retries_only_the_failed_step_with_a_new_generation():
    run, outcomes = _parked_on_jira()
    decision = core.resume(run, outcomes, utcnow())
    assert decision.run.status is RunStatus.RUNNING and decision.run.reason == ""
    assert [(c.step_id, c.generation) for c in decision.calls] == [("jira", 2)]
    assert decision.run.steps["enrich"].status is StepStatus.SUCCEEDED
    assert decision.run.steps["draft"].status is StepStatus.SUCCEEDED
    assert tasks.dispatch_task(decision.calls[0]).name.endswith("-jira-g2")


def test_resume_does_nothing_when_the_run_is_not_parked():
    assert not core.resume(_started(), {}, utcnow()).changed


def test_old_generation_report_is_ignored_after_resume():
    run, outcomes = _parked_on_jira()
    run = core.resume(run, outcomes, utcnow()).run
    stale = StepOutcome(
        run_id=run.run_id, step_id="jira", tool="create_jira_project", ok=True, generation=1
    )
    assert not core.decide(run, finished("jira"), {**outcomes, "jira": stale}, utcnow()).changed


def test_cancel_skips_pending_steps_and_keeps_dispatched_ones_visible():
    decision = core.cancel(_started(), "client withdrew", utcnow())
    run = decision.run
    assert run.status is RunStatus.CANCELLED and run.reason == "client withdrew"
    assert run.steps["jira"].status is StepStatus.SKIPPED
    assert decision.events[0].detail["in_flight"] == ["enrich"]
    assert not core.cancel(run, "again", utcnow()).changed


def watchdog(step_id: str, generation: int = 1) -> OrchestratorTask:
    return OrchestratorTask(run_id="r", kind="watchdog", step_id=step_id, generation=generation)


def test_watchdog_parks_a_run_whose_step_never_reported():
    decision = core.decide(_started(), watchdog("enrich"), {}, utcnow())
    assert decision.run.status is RunStatus.PARKED
    assert decision.run.steps["enrich"].error.code == "no_report"


def test_watchdog_takes_in_an_outcome_whose_report_was_lost():
    run = _started()
    decision = core.decide(run, watchdog("enrich"), {"enrich": ok(run, "enrich")}, utcnow())
    assert decision.run.steps["enrich"].status is StepStatus.SUCCEEDED
    assert sorted(c.step_id for c in decision.calls) == ["draft", "jira"]


def test_watchdog_does_nothing_when_the_step_finished_or_moved_on():
    run = _started()
    outcomes = {"enrich": ok(run, "enrich")}
    run = core.decide(run, finished("enrich"), outcomes, utcnow()).run
    assert not core.decide(run, watchdog("enrich"), outcomes, utcnow()).changed
    assert not core.decide(run, watchdog("jira", generation=7), outcomes, utcnow()).changed


def test_watchdog_fires_after_the_queue_would_have_given_up():
    call = core.decide(make_run(), START, {}, utcnow()).calls[0]
    now = utcnow()
    task = tasks.watchdog_task(call, now, dispatch_deadline=30)
    assert task.queue == "orchestrator"
    # tool-clearbit: 8 attempts of up to 30 s plus backoffs of 0.5..8 s, and a margin.
    assert (task.schedule_time - now).total_seconds() > 8 * 30 + 60

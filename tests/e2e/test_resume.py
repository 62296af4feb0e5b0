"""A run parked by a vendor outage goes on from its failed step only, once resumed."""

from __future__ import annotations

from collections import Counter

import pytest

from orchestrator import service
from sandbox.effects import side_effects
from sandbox.records import RecordStore
from shared.model import RunStatus, StepStatus
from shared.queues import QUEUES, tool_queue
from tests.e2e.conftest import ONE_ONBOARDING, body, submit, wait_until_settled

pytestmark = pytest.mark.slow


def test_parked_run_resumes_from_the_failed_step_only(start_stack, tmp_path):
    home = tmp_path / "home"
    # Jira is down for good: its step spends every attempt (backoffs shrunk) and parks the run.
    # Its breaker never decides (too few calls), so every attempt reaches the sandbox at once.
    outage = start_stack(
        "jira.error=1",
        local_backoff_scale=0.001,
        breaker_window=1000,
        breaker_minimum_calls=1000,
    )
    run_id = submit(outage, body())[1]["run_id"]
    parked = wait_until_settled(outage, [run_id])[run_id]
    assert parked.status is RunStatus.PARKED
    jira = parked.steps["jira"]
    every = QUEUES[tool_queue("jira")].max_attempts
    assert jira.status is StepStatus.FAILED and jira.attempts == every
    assert f"gave up after {every} attempts" in parked.reason
    # Steps that did not need Jira went on: the email is out, Slack waits for Jira.
    assert parked.steps["email"].status is StepStatus.SUCCEEDED
    assert parked.steps["slack"].status is StepStatus.PENDING
    outage.stop()

    recovered = start_stack()  # Jira is back
    assert service.resume(recovered.runtime, run_id) == "running"
    run = wait_until_settled(recovered, [run_id])[run_id]
    assert run.status is RunStatus.SUCCEEDED
    assert run.steps["jira"].generation == 2 and run.steps["jira"].attempts == 1
    assert side_effects(home)[run_id] == ONE_ONBOARDING

    calls = Counter((r["vendor"], r["action"]) for r in RecordStore(home).list(run_id=run_id))
    # Finished steps were not redone: one lookup, one plan, one revision, one draft, one email.
    assert calls[("clearbit", "company.find")] == 1
    assert calls[("gemini", "generateContent")] == 3
    assert calls[("sendgrid", "mail.send")] == 1
    kinds = [e.kind for e in recovered.runtime.store.events(run_id)]
    assert "run.parked" in kinds and "run.resumed" in kinds and kinds[-1] == "run.succeeded"


def test_resume_refuses_a_run_that_is_not_parked(start_stack):
    stack = start_stack()
    run_id = submit(stack, body())[1]["run_id"]
    wait_until_settled(stack, [run_id])
    with pytest.raises(service.NotAllowed):
        service.resume(stack.runtime, run_id)

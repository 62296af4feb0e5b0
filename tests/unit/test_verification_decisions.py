"""The orchestrator's verification decisions, pure: dispatched beside the next steps, a
mismatch re-runs only its step, the limit flags the run instead of looping."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from orchestrator import core, tasks
from shared.model import (
    Attention,
    OrchestratorTask,
    RunState,
    RunStatus,
    StepOutcome,
    StepStatus,
    VerificationResult,
    VerificationStatus,
    utcnow,
    verification_key,
)
from shared.registry import TOOLS
from tests.conftest import make_run

ON = core.VerificationPolicy(enabled=True, mismatch_limit=2)
START = OrchestratorTask(run_id="r", kind="start")


def finished(step_id: str) -> OrchestratorTask:
    return OrchestratorTask(run_id="r", kind="step_finished", step_id=step_id)


def verified_task(step_id: str, generation: int, kind: str = "verified") -> OrchestratorTask:
    return OrchestratorTask(run_id="r", kind=kind, step_id=step_id, generation=generation)


def ok(run: RunState, step_id: str, **output) -> StepOutcome:
    step = run.steps[step_id]
    return StepOutcome(
        run_id=run.run_id,
        step_id=step_id,
        tool=step.tool,
        ok=True,
        output=output,
        generation=step.generation,
    )


def finding(run: RunState, step_id: str, status: str, reason: str = "why") -> StepOutcome:
    step = run.steps[step_id]
    result = VerificationResult(status=VerificationStatus(status), reason=reason)
    return StepOutcome(
        run_id=run.run_id,
        step_id=verification_key(step_id, step.generation),
        tool=step.tool,
        ok=result.status is not VerificationStatus.MISMATCH,
        output=result.model_dump(mode="json"),
        generation=step.generation,
    )


class Ledger:
    """Drives a run through core.decide as the service would, keeping its ledger."""

    def __init__(self, policy: core.VerificationPolicy = ON) -> None:
        self.policy = policy
        self.outcomes: dict[str, StepOutcome] = {}
        self.run = self.apply(START)

    def apply(self, happening: OrchestratorTask) -> RunState:
        run = getattr(self, "run", None) or make_run()
        self.decision = core.decide(
            run, happening, self.outcomes, utcnow(), verification=self.policy
        )
        for step_id in self.decision.forget:
            self.outcomes.pop(step_id, None)
        self.run = self.decision.run
        return self.run

    def succeed(self, step_id: str, **output) -> RunState:
        self.outcomes[step_id] = ok(self.run, step_id, **output)
        return self.apply(finished(step_id))

    def verify(self, step_id: str, status: str, reason: str = "why") -> RunState:
        found = finding(self.run, step_id, status, reason)
        self.outcomes[found.step_id] = found
        return self.apply(verified_task(step_id, self.run.steps[step_id].generation))


def through_all_steps(ledger: Ledger) -> None:
    for step_id in ("enrich", "jira", "draft", "email", "slack"):
        ledger.succeed(step_id)


def test_a_verifiable_step_dispatches_its_verification_with_the_next_steps():
    ledger = Ledger()
    ledger.succeed("enrich")
    assert ledger.decision.verifications == [], "enrichment has no effect to verify"
    ledger.succeed("jira")
    decision = ledger.decision
    assert [(v.step_id, v.generation) for v in decision.verifications] == [("jira", 1)]
    verification = ledger.run.steps["jira"].verification
    assert verification is not None and verification.status is VerificationStatus.PENDING
    assert "verification.dispatched" in [e.kind for e in decision.events]
    task = tasks.verification_task(decision.verifications[0], "create_jira_project")
    assert task.queue == TOOLS["create_jira_project"].queue
    assert task.payload == {
        "kind": "verify",
        "run_id": ledger.run.run_id,
        "step_id": "jira",
        "generation": 1,
    }


def test_the_next_steps_are_not_held_by_a_pending_verification():
    ledger = Ledger()
    ledger.succeed("enrich")
    ledger.succeed("jira")
    ledger.succeed("draft")
    assert [c.step_id for c in ledger.decision.calls] == ["email"]
    ledger.succeed("email")
    assert [c.step_id for c in ledger.decision.calls] == ["slack"], "jira's look is still out"


def test_the_run_succeeds_only_when_every_verification_is_in():
    ledger = Ledger()
    through_all_steps(ledger)
    assert ledger.run.status is RunStatus.RUNNING
    assert "run.succeeded" not in [e.kind for e in ledger.decision.events]
    ledger.verify("jira", "verified")
    ledger.verify("email", "unverifiable", "no Email Activity on this account")
    assert ledger.run.status is RunStatus.RUNNING
    ledger.verify("slack", "verified")
    assert ledger.run.status is RunStatus.SUCCEEDED
    assert ledger.run.steps["email"].verification.status is VerificationStatus.UNVERIFIABLE
    assert not ledger.run.attention


def test_the_run_succeeds_without_verifications_when_verification_is_off():
    ledger = Ledger(core.VERIFY_OFF)
    through_all_steps(ledger)
    assert ledger.run.status is RunStatus.SUCCEEDED
    assert all(s.verification is None for s in ledger.run.steps.values())


def test_a_mismatch_reruns_only_that_step_under_a_new_generation():
    ledger = Ledger()
    through_all_steps(ledger)
    ledger.verify("jira", "mismatch", "1 of 3 kickoff issues missing")
    decision = ledger.decision
    assert decision.forget == ["jira"]
    assert [(c.step_id, c.generation) for c in decision.calls] == [("jira", 2)]
    jira = ledger.run.steps["jira"]
    assert (jira.status, jira.generation) == (StepStatus.DISPATCHED, 2)
    assert jira.verification.mismatches == 1
    others = {s.step_id: s.status for s in ledger.run.steps.values() if s.step_id != "jira"}
    assert set(others.values()) == {StepStatus.SUCCEEDED}
    mismatch = next(e for e in decision.events if e.kind == "verification.mismatch")
    assert mismatch.detail["repair_generation"] == 2
    assert ledger.run.status is RunStatus.RUNNING

    ledger.succeed("jira")
    assert [(v.step_id, v.generation) for v in ledger.decision.verifications] == [("jira", 2)]
    ledger.verify("jira", "verified")
    ledger.verify("email", "verified")
    ledger.verify("slack", "verified")
    assert ledger.run.status is RunStatus.SUCCEEDED
    assert ledger.run.steps["jira"].verification.mismatches == 1


@given(limit=st.integers(min_value=1, max_value=6))
def test_the_run_is_flagged_not_looped_after_the_mismatch_limit(limit):
    ledger = Ledger(core.VerificationPolicy(enabled=True, mismatch_limit=limit))
    through_all_steps(ledger)
    ledger.verify("email", "verified")
    ledger.verify("slack", "verified")
    reruns = 0
    for _ in range(limit + 3):  # a vendor that always drops the work
        if ledger.run.steps["jira"].status is not StepStatus.SUCCEEDED:
            reruns += 1
            ledger.succeed("jira")
        if ledger.run.status is RunStatus.SUCCEEDED:
            break
        ledger.verify("jira", "mismatch", "project lost")
    assert reruns == limit - 1
    jira = ledger.run.steps["jira"]
    assert (jira.generation, jira.verification.mismatches) == (limit, limit)
    assert jira.verification.status is VerificationStatus.MISMATCH
    assert Attention.VERIFICATION_FAILED in ledger.run.attention
    assert ledger.run.status is RunStatus.SUCCEEDED
    assert "verification.failed" in [e.kind for e in ledger.decision.events]


def test_a_redelivered_or_stale_verification_changes_nothing():
    ledger = Ledger()
    through_all_steps(ledger)
    ledger.verify("jira", "verified")
    again = core.decide(
        ledger.run, verified_task("jira", 1), ledger.outcomes, utcnow(), verification=ON
    )
    assert not again.changed
    stale = core.decide(
        ledger.run, verified_task("email", 7), ledger.outcomes, utcnow(), verification=ON
    )
    assert not stale.changed


def test_a_verification_not_yet_in_the_ledger_changes_nothing():
    ledger = Ledger()
    through_all_steps(ledger)
    decision = core.decide(
        ledger.run, verified_task("jira", 1), ledger.outcomes, utcnow(), verification=ON
    )
    assert not decision.changed


def test_a_lost_verification_is_unverifiable_when_its_watchdog_fires():
    ledger = Ledger()
    through_all_steps(ledger)
    ledger.verify("jira", "verified")
    ledger.verify("email", "verified")
    ledger.apply(verified_task("slack", 1, kind="verify_watchdog"))
    slack = ledger.run.steps["slack"].verification
    assert slack.status is VerificationStatus.UNVERIFIABLE and "lost" in slack.reason
    assert ledger.run.status is RunStatus.SUCCEEDED


def test_a_mismatch_in_a_parked_run_reopens_the_step_for_the_resume():
    ledger = Ledger()
    ledger.succeed("enrich")
    ledger.succeed("jira")
    failure = StepOutcome(
        run_id=ledger.run.run_id, step_id="draft", tool="draft_welcome_email", ok=False
    )
    ledger.outcomes["draft"] = failure
    ledger.apply(finished("draft"))
    assert ledger.run.status is RunStatus.PARKED
    ledger.verify("jira", "mismatch", "project lost")
    assert ledger.decision.calls == [] and ledger.decision.forget == ["jira"]
    assert ledger.run.steps["jira"].status is StepStatus.PENDING
    ledger.outcomes.pop("draft")
    resumed = core.resume(ledger.run, ledger.outcomes, utcnow())
    assert sorted(c.step_id for c in resumed.calls) == ["draft", "jira"]

"""Verification in the orchestrator's decisions: a read-only look at each side effect,
dispatched beside the steps that follow, and what its result does to the run (pure)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime

from orchestrator.audit import SUMMARY_CHARS, event
from orchestrator.decision import Decision
from shared.model import (
    Attention,
    Event,
    OrchestratorTask,
    RunState,
    RunStatus,
    StepOutcome,
    StepStatus,
    StepSummary,
    Verification,
    VerificationCall,
    VerificationResult,
    VerificationStatus,
    verification_key,
)
from shared.registry import TOOLS


@dataclass(frozen=True)
class VerificationPolicy:
    """Whether side effects are verified, and how many mismatches re-run a step before the
    run is flagged instead (docs/decisions/0011v-verify-what-was-done.md)."""

    enabled: bool = False
    mismatch_limit: int = 2


VERIFY_OFF = VerificationPolicy()


@dataclass(frozen=True)
class Look:
    """What a verification's result does to the run: the run and its events, the steps whose
    outcome is forgotten (a re-run), and whether the run then advances."""

    run: RunState
    events: list[Event]
    forget: list[str] = field(default_factory=list)
    advance: bool = True


def verify_succeeded(
    decision: Decision,
    before: RunState,
    step_id: str,
    policy: VerificationPolicy,
    now: datetime,
) -> Decision:
    """When the decision took in a verifiable step's success, dispatch its verification too.

    The next steps are dispatched by the same decision, so the look never delays them; the
    run only waits for it to finish (see _all_done).
    """
    step = decision.run.steps.get(step_id)
    was = before.steps.get(step_id)
    if (
        not policy.enabled
        or step is None
        or step.status is not StepStatus.SUCCEEDED
        or (was is not None and was.status is StepStatus.SUCCEEDED)
        or not TOOLS[step.tool].verifiable
    ):
        return decision
    prior = step.verification
    pending = Verification(generation=step.generation, mismatches=prior.mismatches if prior else 0)
    run = decision.run.evolve(
        steps={**decision.run.steps, step_id: step.model_copy(update={"verification": pending})}
    )
    if run.status is RunStatus.SUCCEEDED:  # decided before the verification was pending
        run = run.evolve(status=RunStatus.RUNNING)
    events = [e for e in decision.events if e.kind != "run.succeeded" or run.status.terminal]
    events.append(
        event(
            run,
            "verification.dispatched",
            now,
            step_id,
            generation=step.generation,
            queue=TOOLS[step.tool].queue,
        )
    )
    call = VerificationCall(run_id=run.run_id, step_id=step_id, generation=step.generation)
    return dataclasses.replace(
        decision, run=run, events=events, verifications=[*decision.verifications, call]
    )


def take_verification(
    run: RunState,
    happening: OrchestratorTask,
    outcomes: dict[str, StepOutcome],
    now: datetime,
    mismatch_limit: int,
) -> Look | None:
    """A step's verification came in (or its watchdog found it lost): record it on the step.

    A mismatch re-runs only that step, under a new generation, until `mismatch_limit`
    generations were found wrong: then the run is flagged, and goes on.
    """
    step = run.steps.get(happening.step_id or "")
    pending = step.verification if step else None
    if (
        step is None
        or pending is None
        or run.status.terminal
        or pending.settled
        or step.status is not StepStatus.SUCCEEDED
        or step.generation != happening.generation
    ):
        return None
    record = outcomes.get(verification_key(step.step_id, step.generation))
    if record is not None:
        result = VerificationResult.model_validate(record.output)
    elif happening.kind == "verify_watchdog":
        result = VerificationResult(
            status=VerificationStatus.UNVERIFIABLE,
            reason="no verification within its queue's whole retry window: its task was lost",
        )
    else:
        return None
    mismatched = result.status is VerificationStatus.MISMATCH
    found = pending.model_copy(
        update={
            "status": result.status,
            "reason": result.reason[:SUMMARY_CHARS],
            "mismatches": pending.mismatches + mismatched,
            "at": now,
        }
    )
    detail: dict[str, object] = {
        "generation": step.generation,
        "reason": result.reason[:SUMMARY_CHARS],
    }
    if mismatched and found.mismatches < mismatch_limit:
        # Re-run the step: its tool adopts what exists and creates only what is missing.
        rerun = StepSummary(
            step_id=step.step_id,
            tool=step.tool,
            generation=step.generation + 1,
            verification=found,
        )
        run = run.evolve(steps={**run.steps, step.step_id: rerun})
        events = [
            event(
                run,
                "verification.mismatch",
                now,
                step.step_id,
                repair_generation=rerun.generation,
                extra=detail,
            )
        ]
        # Resuming a parked run dispatches the re-run; a running one advances now.
        return Look(run, events, forget=[step.step_id], advance=run.status is not RunStatus.PARKED)
    run = run.evolve(
        steps={**run.steps, step.step_id: step.model_copy(update={"verification": found})}
    )
    if mismatched:
        run = run.flagged(Attention.VERIFICATION_FAILED)
        kind = "verification.failed"
        detail["mismatches"] = found.mismatches
    else:
        kind = f"verification.{result.status.value}"
    events = [event(run, kind, now, step.step_id, extra=detail)]
    return Look(run, events, advance=run.status is not RunStatus.PARKED)

"""The orchestrator's mind: from a run and what just happened, the next run and what to do.

Pure: no I/O, no clock of its own. The handler loads, calls `decide`, and commits the result
with the tasks it emits in one versioned transition, so a redelivered message never decides
twice and never dispatches twice.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime

from orchestrator import agent
from orchestrator.audit import ACTOR, SUMMARY_CHARS, event
from orchestrator.decision import Decision, unchanged
from orchestrator.verification import (
    VERIFY_OFF,
    VerificationPolicy,
    take_verification,
    verify_succeeded,
)
from shared.model import (
    Approval,
    Event,
    OrchestratorTask,
    PlanStep,
    RunState,
    RunStatus,
    StepError,
    StepOutcome,
    StepStatus,
    StepSummary,
    ToolTask,
    Totals,
    guard_notes,
)
from shared.registry import TOOLS


def decide(
    run: RunState,
    happening: OrchestratorTask,
    outcomes: dict[str, StepOutcome],
    now: datetime,
    *,
    require_approval: bool = False,
    verification: VerificationPolicy = VERIFY_OFF,
) -> Decision:
    """The next run for what happened. `outcomes` is the run's ledger: the steps' outcomes and
    the model's checkpointed decisions (the plan, the revision after enrichment), which this
    takes as they are: the model is asked before, never here."""
    if happening.kind == "start":
        return _start(run, outcomes, now, require_approval)
    if happening.kind == "step_finished" and happening.step_id:
        decision = _take_outcome(run, outcomes.get(happening.step_id), outcomes, now)
        return verify_succeeded(decision, run, happening.step_id, verification, now)
    if happening.kind in ("verified", "verify_watchdog") and happening.step_id:
        look = take_verification(run, happening, outcomes, now, verification.mismatch_limit or 1)
        if look is None:
            return unchanged(run)
        if not look.advance:
            return Decision(run=look.run, events=look.events, forget=look.forget)
        advanced = _advance(look.run, outcomes, now, look.events)
        return dataclasses.replace(advanced, forget=look.forget)
    if happening.kind == "watchdog" and happening.step_id:
        decision = _watch(run, happening.step_id, happening.generation, outcomes, now)
        return verify_succeeded(decision, run, happening.step_id, verification, now)
    if happening.kind == "watchdog":
        return _watch_start(run, now)
    return unchanged(run)


def _watch_start(run: RunState, now: datetime) -> Decision:
    """The start task has had all the time its queue allows. A run still pending never
    started (its task was lost, or failed every attempt): park it, so a person sees it."""
    if run.status is not RunStatus.PENDING:
        return unchanged(run)
    error = StepError(
        code="no_start",
        retryable=True,
        message="the run never started within its queue's whole retry window: its start task "
        "was lost or failed every attempt; resuming the run starts it",
    )
    reason = f"not started: {error.code}: {error.message}"
    parked = run.evolve(status=RunStatus.PARKED, reason=reason)
    events = [event(run, "run.parked", now, reason=reason, code=error.code)]
    return Decision(run=parked, events=events)


def _watch(
    run: RunState,
    step_id: str,
    generation: int | None,
    outcomes: dict[str, StepOutcome],
    now: datetime,
) -> Decision:
    """A step's tasks have had all the time their queue allows. If it never reported (its
    last attempt died with its instance, and the queue dropped the task), park the run."""
    step = run.steps.get(step_id)
    if (
        step is None
        or run.status.terminal
        or step.status is not StepStatus.DISPATCHED
        or step.generation != generation
    ):
        return unchanged(run)
    if step_id in outcomes:  # it finished, but its report was lost
        return _take_outcome(run, outcomes[step_id], outcomes, now)
    error = StepError(
        code="no_report",
        retryable=True,
        message="no result within the queue's whole retry window; its task was lost",
    )
    failed = step.model_copy(
        update={"status": StepStatus.FAILED, "error": error, "finished_at": now}
    )
    run = run.evolve(steps={**run.steps, step_id: failed})
    events = [event(run, "step.failed", now, step_id, error=error.model_dump())]
    return _park(run, step_id, error, now, events)


def resume(
    run: RunState, outcomes: dict[str, StepOutcome], now: datetime, actor: str = ACTOR
) -> Decision:
    """A parked run goes on from its failed steps only; finished steps are never redone.
    `actor` is who resumed it, for the audit trail.

    Each retried step gets a new generation, so its tasks get new names and anything still
    in flight from the old generation is ignored when it arrives.
    """
    if run.status is not RunStatus.PARKED:
        return unchanged(run)
    if not run.plan:  # parked before it started: it starts again (the service queues it)
        pending = run.evolve(status=RunStatus.PENDING, reason="")
        return Decision(run=pending, events=[event(run, "run.resumed", now, actor=actor, steps=[])])
    retried = [s.step_id for s in run.steps.values() if s.status is StepStatus.FAILED]
    steps = dict(run.steps)
    for step_id in retried:
        old = steps[step_id]
        steps[step_id] = StepSummary(step_id=step_id, tool=old.tool, generation=old.generation + 1)
    resumed = run.evolve(status=RunStatus.RUNNING, reason="", steps=steps)
    events = [event(run, "run.resumed", now, actor=actor, steps=retried)]
    return _advance(resumed, outcomes, now, events)


def cancel(run: RunState, reason: str, now: datetime, actor: str = ACTOR) -> Decision:
    """Stop a run: steps not yet dispatched are skipped; tasks in flight find it cancelled.
    `actor` is who stopped it, for the audit trail.

    Side effects already made stay made (see docs/decisions/0003-cancel-keeps-side-effects.md).
    """
    if run.status.terminal:
        return unchanged(run)
    steps = {
        sid: s.model_copy(update={"status": StepStatus.SKIPPED})
        if s.status is StepStatus.PENDING
        else s
        for sid, s in run.steps.items()
    }
    cancelled = run.evolve(status=RunStatus.CANCELLED, reason=reason or "cancelled", steps=steps)
    return Decision(
        run=cancelled,
        events=[
            event(
                run,
                "run.cancelled",
                now,
                actor=actor,
                reason=cancelled.reason,
                in_flight=[s.step_id for s in steps.values() if s.status is StepStatus.DISPATCHED],
            )
        ],
    )


def approve(run: RunState, actor: str, outcomes: dict[str, StepOutcome], now: datetime) -> Decision:
    """A person approved the step waiting for it: it is dispatched (a parked run keeps the
    approval and dispatches it when resumed)."""
    waiting = run.approval
    if run.status.terminal or waiting is None or waiting.status != "waiting":
        return unchanged(run)
    approved = waiting.model_copy(update={"status": "approved", "actor": actor, "at": now})
    events = [
        event(run, "approval.approved", now, waiting.step_id, actor=actor, subject=waiting.subject)
    ]
    if run.status is RunStatus.PARKED:
        return Decision(run=run.evolve(approval=approved), events=events)
    return _advance(
        run.evolve(status=RunStatus.RUNNING, reason="", approval=approved), outcomes, now, events
    )


def reject(run: RunState, actor: str, reason: str, now: datetime) -> Decision:
    """A person rejected the step waiting for approval: the run is cancelled, the step never
    runs, and what was already done stays done (as for any cancel)."""
    waiting = run.approval
    if run.status.terminal or waiting is None or waiting.status != "waiting":
        return unchanged(run)
    reason = reason or "no reason given"
    rejected = waiting.model_copy(
        update={"status": "rejected", "actor": actor, "reason": reason, "at": now}
    )
    rejection = event(
        run,
        "approval.rejected",
        now,
        waiting.step_id,
        actor=actor,
        subject=waiting.subject,
        reason=reason,
    )
    cancelled = cancel(
        run.evolve(approval=rejected),
        f"{waiting.step_id} rejected by {actor}: {reason}",
        now,
        actor=actor,
    )
    return Decision(run=cancelled.run, events=[rejection, *cancelled.events])


def _start(
    run: RunState, outcomes: dict[str, StepOutcome], now: datetime, require_approval: bool
) -> Decision:
    if run.status is not RunStatus.PENDING:
        return unchanged(run)
    run, events = agent.adopt_plan(run, outcomes, now)
    approval = None
    if require_approval:
        gated = next((s for s in run.plan if TOOLS[s.tool].needs_approval), None)
        approval = Approval(step_id=gated.step_id) if gated else None
    steps = {s.step_id: StepSummary(step_id=s.step_id, tool=s.tool) for s in run.plan}
    started = run.evolve(status=RunStatus.RUNNING, steps=steps, approval=approval)
    return _advance(started, outcomes, now, events)


def _take_outcome(
    run: RunState, outcome: StepOutcome | None, outcomes: dict[str, StepOutcome], now: datetime
) -> Decision:
    if outcome is None or outcome.step_id not in run.steps or run.status.terminal:
        return unchanged(run)
    step = run.steps[outcome.step_id]
    if step.status is not StepStatus.DISPATCHED or step.generation != outcome.generation:
        return unchanged(run)  # taken in already: this is a redelivery

    usage = outcome.usage
    finished = step.model_copy(
        update={
            "status": StepStatus.SUCCEEDED if outcome.ok else StepStatus.FAILED,
            "attempts": outcome.attempts,
            "finished_at": outcome.finished_at,
            "latency_ms": outcome.latency_ms,
            "output": outcome.summary[:SUMMARY_CHARS],
            "error": outcome.error,
            "llm_tokens": (usage.input_tokens + usage.output_tokens) if usage else 0,
            "cost_usd": usage.cost_usd if usage else 0.0,
        }
    )
    run = run.evolve(steps={**run.steps, step.step_id: finished})
    events = [
        event(
            run,
            "step.succeeded" if outcome.ok else "step.failed",
            now,
            step.step_id,
            attempts=outcome.attempts,
            latency_ms=outcome.latency_ms,
            summary=outcome.summary[:SUMMARY_CHARS],
            extra={
                **({"error": outcome.error.model_dump()} if outcome.error else {}),
                **({"usage": usage.model_dump()} if usage else {}),
            },
        )
    ]
    if not outcome.ok:
        return _park(run, step.step_id, outcome.error, now, events)
    # What the tool's guard did (a draft refused, the template sent): in the audit trail,
    # and on the run document as flags operators filter on.
    for note in guard_notes(outcome.output):
        run = run.flagged(*note.attention)
        events.append(event(run, note.kind, now, step.step_id, extra=note.detail))
    if step.tool == "enrich_company":
        run, adapted = agent.adopt_revision(run, step.step_id, outcomes, now)
        events += adapted
    return _advance(run, outcomes, now, events)


def _advance(
    run: RunState, outcomes: dict[str, StepOutcome], now: datetime, events: list[Event]
) -> Decision:
    """Dispatch every step whose dependencies succeeded; finish the run when all did.

    A step that needs a person's approval is not dispatched until it is given: the run waits,
    holding nothing but this document.
    """
    steps = dict(run.steps)
    calls: list[ToolTask] = []
    approval = run.approval
    for plan_step in run.plan:
        summary = steps[plan_step.step_id]
        if summary.status is not StepStatus.PENDING:
            continue
        if any(steps[dep].status is not StepStatus.SUCCEEDED for dep in plan_step.depends_on):
            continue
        if approval and approval.step_id == plan_step.step_id and approval.status != "approved":
            if approval.status == "pending":
                approval = approval.model_copy(
                    update={
                        "status": "waiting",
                        "subject": _subject(plan_step, outcomes),
                        "at": now,
                    }
                )
                events.append(
                    event(
                        run,
                        "approval.requested",
                        now,
                        plan_step.step_id,
                        subject=approval.subject,
                        approve=f"chimera runs approve {run.run_id}",
                        reject=f"chimera runs reject {run.run_id} --reason TEXT",
                    )
                )
            continue
        steps[plan_step.step_id] = summary.model_copy(
            update={"status": StepStatus.DISPATCHED, "started_at": now}
        )
        calls.append(
            ToolTask(
                run_id=run.run_id,
                step_id=plan_step.step_id,
                tool=plan_step.tool,
                generation=summary.generation,
            )
        )
        events.append(
            event(
                run,
                "step.dispatched",
                now,
                plan_step.step_id,
                tool=plan_step.tool,
                queue=TOOLS[plan_step.tool].queue,
                generation=summary.generation,
            )
        )
    run = run.evolve(steps=steps, approval=approval)
    run = run.evolve(totals=_totals(run))
    if approval and approval.status == "waiting" and run.status is RunStatus.RUNNING:
        run = run.evolve(
            status=RunStatus.WAITING,
            reason=f'waiting for approval of the welcome email "{approval.subject}"',
        )
    if _all_done(steps):
        run = run.evolve(status=RunStatus.SUCCEEDED, reason="")
        events.append(event(run, "run.succeeded", now, **run.totals.model_dump()))
    return Decision(run=run, events=events, calls=calls)


def _all_done(steps: dict[str, StepSummary]) -> bool:
    """Every step succeeded, and every verification is in: a run succeeds once, for good."""
    return all(
        s.status is StepStatus.SUCCEEDED and (s.verification is None or s.verification.settled)
        for s in steps.values()
    )


def _inputs(run: RunState, outcomes: dict[str, StepOutcome]) -> dict[str, dict]:
    """What the run has learned so far: every succeeded step's output, by step id (the
    ledger's reasoning records are the orchestrator's own, not a tool's input)."""
    return {step_id: o.output for step_id, o in outcomes.items() if o.ok and step_id in run.steps}


def _subject(step: PlanStep, outcomes: dict[str, StepOutcome]) -> str:
    """The subject of the draft the step would send, from the steps it reads."""
    for read in TOOLS[step.tool].reads:
        outcome = outcomes.get(read)
        if outcome and outcome.ok and outcome.output.get("subject"):
            return str(outcome.output["subject"])[:SUMMARY_CHARS]
    return ""


def _park(
    run: RunState, step_id: str, error: StepError | None, now: datetime, events: list[Event]
) -> Decision:
    code = error.code if error else "unknown"
    reason = f"step {step_id} failed: {code}: {error.message if error else ''}".strip()
    run = run.evolve(status=RunStatus.PARKED, reason=reason)
    run = run.evolve(totals=_totals(run))
    events.append(event(run, "run.parked", now, step_id, reason=reason, code=code))
    return Decision(run=run, events=events)


def _totals(run: RunState) -> Totals:
    """The steps' counts; tokens and cost of the steps and of the model's decisions."""
    summaries = run.steps.values()
    thoughts = run.reasoning.values()
    return Totals(
        steps=len(run.steps),
        steps_succeeded=sum(s.status is StepStatus.SUCCEEDED for s in summaries),
        attempts=sum(s.attempts for s in summaries),
        llm_tokens=sum(s.llm_tokens for s in summaries) + sum(t.llm_tokens for t in thoughts),
        cost_usd=round(sum(s.cost_usd for s in summaries) + sum(t.cost_usd for t in thoughts), 6),
    )


def redispatch(run: RunState, outcomes: dict[str, StepOutcome]) -> list[ToolTask]:
    """The tasks of steps dispatched but not finished: sent again under the same task names.

    After a crash between a committed decision and its enqueue (possible where the queue is
    not in the store's transaction), this repairs the gap; elsewhere the names dedupe it.
    """
    return [
        ToolTask(
            run_id=run.run_id, step_id=step.step_id, tool=step.tool, generation=step.generation
        )
        for step in run.steps.values()
        if step.status is StepStatus.DISPATCHED and step.step_id not in outcomes
    ]

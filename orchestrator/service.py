"""The orchestrator's use cases over the ports: take a request in, take a task in."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager

from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind

from orchestrator import agent, core, tasks
from shared import metrics, telemetry
from shared.errors import Conflict
from shared.llm import LanguageModel
from shared.model import (
    Event,
    OnboardingRequest,
    OrchestratorTask,
    RunState,
    RunStatus,
    StepOutcome,
    StepStatus,
    Task,
    ToolTask,
    utcnow,
)
from shared.runtime import Runtime

log = logging.getLogger(__name__)

# Two reports for one run can race (parallel steps); the loser reloads and decides again.
CONFLICT_RETRIES = 8


class RequestKeyReused(Exception):
    """A request_id already names a run with a different request."""


def submit(
    rt: Runtime, request: OnboardingRequest, *, source: str, actor: str = ""
) -> tuple[RunState, bool]:
    """Create the run for `request` (once, however often it is submitted) and queue its start;
    `actor` is the verified caller who asked, when the source knows one.

    A new run opens its onboarding's trace: the root span's context is stored with the run, in
    the write that creates it and its start task. A request for a run that exists continues
    that run's trace.
    """
    existing = rt.store.load(request.run_id())
    parent = telemetry.run_context(existing) if existing else Context()  # Context(): a new trace
    with telemetry.span(
        f"intake {source}",
        kind=SpanKind.SERVER,
        parent=parent,
        attributes={"chimera.run_id": request.run_id(), "chimera.source": source},
    ) as root:
        stored, created = _create(rt, request, source, actor, telemetry.traceparent_of(root))
        root.set_attribute("chimera.created", created)
    return stored, created


def _create(
    rt: Runtime, request: OnboardingRequest, source: str, actor: str, traceparent: str
) -> tuple[RunState, bool]:
    run = RunState(
        run_id=request.run_id(),
        request_key=request.idempotency_key(),
        request=request,
        traceparent=traceparent,
    )
    created_event = Event(
        run_id=run.run_id,
        kind="run.created",
        actor=actor or f"intake-{source}",
        detail={"company": request.company_name, "domain": request.domain},
    )
    start = tasks.start_task(run.run_id)
    stored, created = rt.store.create_run(
        run,
        events=[created_event],
        tasks=[start],
        watchdogs=[tasks.start_watchdog_task(start, utcnow(), rt.settings.dispatch_deadline)],
    )
    if not created and stored.request != request:
        raise RequestKeyReused(
            f"request_id {request.request_id!r} already names run {stored.run_id} "
            "with a different request"
        )
    if not created and stored.status is RunStatus.PENDING:
        # The first submitter may have died between the commit and the enqueue.
        rt.queue.enqueue(start)
    log.info(
        "run %s %s from %s",
        stored.run_id,
        "created" if created else "already exists",
        source,
        extra={"run_id": stored.run_id},
    )
    return stored, created


def take(rt: Runtime, happening: OrchestratorTask, model: LanguageModel | None = None) -> str:
    """Apply one task to its run and commit the decision with the calls it dispatches.

    When the decision needs the model's (a start needs a plan; enrichment's report, a
    revision), the model is asked first and its answer checkpointed; without a model, the
    default plan runs unrevised. The run is loaded once for both. Returns what happened, for
    the log and the HTTP answer.
    """
    run = rt.store.load(happening.run_id)
    if run is None:
        return _unknown(happening.run_id)
    deliberated = agent.deliberate(rt, run, happening, model)
    require_approval = rt.settings.require_approval
    verification = core.VerificationPolicy(
        rt.settings.verify_steps, rt.settings.verify_mismatch_limit
    )
    return _apply(
        rt,
        run,
        lambda run, outcomes: core.decide(
            run,
            happening,
            outcomes,
            utcnow(),
            require_approval=require_approval,
            verification=verification,
        ),
        deliberated,
    )


class NotAllowed(Exception):
    """Only a parked run can be resumed, only a run that is not over can be cancelled, and
    only a run waiting for approval can be approved or rejected."""


def resume(rt: Runtime, run_id: str, actor: str = "orchestrator") -> str:
    """Go on from the failed steps of a parked run; `actor` (who asked) goes in the audit trail."""
    run = _existing(rt, run_id)
    if run.status is not RunStatus.PARKED:
        raise NotAllowed(f"run {run_id} is {run.status.value}, not parked")
    for step in run.steps.values():
        if step.status is StepStatus.FAILED:
            # Forget the failure so the step's next generation can record its own outcome.
            rt.store.discard_outcome(run_id, step.step_id)
    with _action_span("resume", run, actor):
        return _apply(rt, run, lambda run, outcomes: core.resume(run, outcomes, utcnow(), actor))


def approve(rt: Runtime, run_id: str, actor: str) -> str:
    """A person approves the step the run waits for (the welcome email): it is dispatched."""
    run = _waiting(rt, run_id)
    with _action_span("approve", run, actor):
        return _apply(rt, run, lambda run, outcomes: core.approve(run, actor, outcomes, utcnow()))


def reject(rt: Runtime, run_id: str, actor: str, reason: str) -> str:
    """A person rejects the step the run waits for: the run is cancelled, the email unsent."""
    run = _waiting(rt, run_id)
    with _action_span("reject", run, actor):
        return _apply(rt, run, lambda run, _: core.reject(run, actor, reason, utcnow()))


def _waiting(rt: Runtime, run_id: str) -> RunState:
    run = _existing(rt, run_id)
    if run.status.terminal or run.approval is None or run.approval.status != "waiting":
        raise NotAllowed(f"run {run_id} is {run.status.value} and waits for no approval")
    return run


def cancel(rt: Runtime, run_id: str, reason: str = "", actor: str = "orchestrator") -> str:
    """Stop a run; `actor` (who stops it) goes in the audit trail."""
    run = _existing(rt, run_id)
    if run.status.terminal:
        raise NotAllowed(f"run {run_id} is already {run.status.value}")
    with _action_span("cancel", run, actor):
        return _apply(rt, run, lambda run, _: core.cancel(run, reason, utcnow(), actor))


def _action_span(action: str, run: RunState, actor: str) -> AbstractContextManager[Span]:
    """A person's action on a run, in the run's trace: what it dispatches joins it too."""
    return telemetry.span(
        f"orchestrator {action}",
        parent=telemetry.run_context(run),
        attributes={"chimera.run_id": run.run_id, "chimera.actor": actor},
    )


def _watchdogs_for(calls: list[ToolTask], dispatch_deadline: float) -> list[Task]:
    now = utcnow()
    return [tasks.watchdog_task(c, now, dispatch_deadline) for c in calls]


def _existing(rt: Runtime, run_id: str) -> RunState:
    run = rt.store.load(run_id)
    if run is None:
        raise LookupError(f"no run {run_id}")
    return run


def _unknown(run_id: str) -> str:
    log.warning("task for run %s, which does not exist: acknowledged", run_id)
    return "unknown_run"


Decide = Callable[[RunState, dict[str, StepOutcome]], core.Decision]


def _apply(
    rt: Runtime, loaded: RunState, decide: Decide, deliberated: Sequence[StepOutcome] = ()
) -> str:
    """Decide on the run as loaded and commit with the emitted tasks; on a conflict, reload
    and decide again (the versioned transition is what makes a stale load safe).
    `deliberated`: checkpoints that asked no model, decided on as if recorded and recorded
    with the transition."""
    store, run_id = rt.store, loaded.run_id
    run: RunState | None = loaded
    for attempt in range(CONFLICT_RETRIES):
        if attempt:
            run = store.load(run_id)
        if run is None:
            return _unknown(run_id)
        outcomes = store.outcomes(run_id)
        unrecorded = [o for o in deliberated if o.step_id not in outcomes]
        outcomes.update((o.step_id, o) for o in unrecorded)
        decision = decide(run, outcomes)
        deadline = rt.settings.dispatch_deadline
        if not decision.changed:
            # A repaired dispatch gets its watchdog again too: it may have been lost with it.
            repaired = core.redispatch(run, outcomes)
            for task in _watchdogs_for(repaired, deadline):
                rt.queue.enqueue(task)
            for call in repaired:
                rt.queue.enqueue(tasks.dispatch_task(call))
            return "no_change"
        emitted = [tasks.dispatch_task(c) for c in decision.calls]
        watchdogs = _watchdogs_for(decision.calls, deadline)
        for check in decision.verifications:
            tool = decision.run.steps[check.step_id].tool
            emitted.append(tasks.verification_task(check, tool))
            watchdogs.append(tasks.verification_watchdog_task(check, tool, utcnow(), deadline))
        for step_id in decision.forget:
            # A step re-run after a mismatch records its new generation's outcome afresh.
            store.discard_outcome(run_id, step_id)
        if decision.run.status is RunStatus.PENDING:  # a run that never started, resumed
            restart = tasks.start_task(run_id, f"v{run.version + 1}")
            emitted.append(restart)
            watchdogs.append(tasks.start_watchdog_task(restart, utcnow(), deadline))
        try:
            store.transition(
                decision.run,
                expected_version=run.version,
                events=decision.events,
                tasks=emitted,
                watchdogs=watchdogs,
                outcomes=unrecorded,
                cancelled=tasks.moot_watchdogs(run, decision.run),
            )
        except Conflict:
            time.sleep(random.uniform(0, 0.01 * 2**attempt))
            continue
        if decision.run.status is not run.status:
            # Counted by the transition that made it so: a redelivery changes nothing.
            metrics.run_entered(decision.run.status.value)
        if decision.run.status is RunStatus.PARKED:
            # One line per parked run: the log-based metric behind the parked-runs alert.
            log.error(
                "run parked: %s", decision.run.reason, extra={"outcome": "parked", "run_id": run_id}
            )
        return decision.run.status.value
    raise Conflict(f"run {run_id} kept changing under us")

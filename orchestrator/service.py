"""The orchestrator's use cases over the ports: take a request in, take a task in."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import Any

from orchestrator import core, reasoning
from orchestrator.reasoning import Deliberation, ModelCall
from shared.breaker import BreakerPolicy, CircuitBreaker
from shared.errors import BadVendorReply, ChimeraError, Conflict
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
    ToolCall,
    utcnow,
)
from shared.queues import ORCHESTRATOR_QUEUE
from shared.registry import TOOLS
from shared.runtime import Runtime
from shared.settings import Settings

log = logging.getLogger(__name__)

# Two reports for one run can race (parallel steps); the loser reloads and decides again.
CONFLICT_RETRIES = 8
# The model's circuit breaker: the same one the drafting tool goes through.
MODEL_VENDOR = "gemini"
# A task must be answered within the dispatch deadline: the model is asked again only when
# another full call still fits in this share of it.
DEADLINE_SHARE = 0.75
# After this step, the model may revise what is left of the plan.
ENRICH_STEP = TOOLS["enrich_company"].step_id


class RequestKeyReused(Exception):
    """A request_id already names a run with a different request."""


def start_task(run_id: str) -> Task:
    return Task(
        queue=ORCHESTRATOR_QUEUE,
        name=f"{run_id}-start",
        payload=OrchestratorTask(run_id=run_id, kind="start").model_dump(mode="json"),
    )


def submit(rt: Runtime, request: OnboardingRequest, *, source: str) -> tuple[RunState, bool]:
    """Create the run for `request` (once, however often it is submitted) and queue its start."""
    run = RunState(run_id=request.run_id(), request_key=request.idempotency_key(), request=request)
    created_event = Event(
        run_id=run.run_id,
        kind="run.created",
        actor=f"intake-{source}",
        detail={"company": request.company_name, "domain": request.domain},
    )
    stored, created = rt.store.create_run(
        run, events=[created_event], tasks=[start_task(run.run_id)]
    )
    if not created and stored.request != request:
        raise RequestKeyReused(
            f"request_id {request.request_id!r} already names run {stored.run_id} "
            "with a different request"
        )
    if not created and stored.status is RunStatus.PENDING:
        # The first submitter may have died between the commit and the enqueue.
        rt.queue.enqueue(start_task(stored.run_id))
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
    default plan runs unrevised. Returns what happened, for the log and the HTTP answer.
    """
    deliberate(rt, happening, model)
    require_approval = rt.settings.require_approval
    return _apply(
        rt,
        happening.run_id,
        lambda run, outcomes: core.decide(
            run, happening, outcomes, utcnow(), require_approval=require_approval
        ),
    )


def deliberate(rt: Runtime, happening: OrchestratorTask, model: LanguageModel | None) -> None:
    """Ask the model, once per run and decision, for what `happening` needs decided.

    The answer (or the fallback, and why) is recorded in the step ledger before anything acts
    on it; the ledger's record is created once, so a redelivered or conflicting task reads it
    instead of asking again, and `core.decide` takes it from there.
    """
    # Only a start and enrichment's report (or its watchdog) need the model: others cost
    # no extra read.
    if happening.kind != "start" and happening.step_id != ENRICH_STEP:
        return
    store = rt.store
    run = store.load(happening.run_id)
    if run is None or run.status.terminal:
        return
    if happening.kind == "start":
        if (
            run.status is RunStatus.PENDING
            and store.outcome(run.run_id, reasoning.PLAN_KEY) is None
        ):
            _checkpoint(rt, run.run_id, _plan(rt, run, model))
        return
    step = run.steps.get(happening.step_id or "")
    if step is None or step.tool != "enrich_company" or step.status is not StepStatus.DISPATCHED:
        return
    key = reasoning.adapt_key(step.step_id)
    done = store.outcome(run.run_id, step.step_id)
    if done is None or not done.ok or done.generation != step.generation:
        return
    if store.outcome(run.run_id, key) is None:
        _checkpoint(rt, run.run_id, _revision(rt, run, step.step_id, done.output, model))


def _plan(rt: Runtime, run: RunState, model: LanguageModel | None) -> Deliberation:
    """The model's plan, asked again once with the reasons when refused; else the default."""
    key, request = reasoning.PLAN_KEY, run.request
    if model is None:
        return Deliberation(key=key, source="default", reason="the agent's reasoning is off")
    calls: list[ModelCall] = []
    refused: list[str] = []
    started = time.monotonic()
    for attempt in (1, 2):
        if attempt == 2 and not _time_for_another(rt.settings, started):
            return Deliberation(
                key=key,
                source="default",
                reason="the model's plan was refused, and there is no time to ask again",
                calls=tuple(calls),
            )
        call, answer = _ask(
            rt,
            model,
            run.run_id,
            reasoning.PLAN_SYSTEM,
            reasoning.plan_prompt(request, refused),
            reasoning.plan_schema(request),
        )
        if call.failure:
            calls.append(call)
            return Deliberation(
                key=key,
                source="default",
                reason=f"the model is unavailable ({call.failure})",
                calls=tuple(calls),
            )
        plan, errors = (
            (None, list(call.errors)) if call.errors else reasoning.read_plan(answer, request)
        )
        calls.append(call.model_copy(update={"errors": tuple(errors)}))
        if plan is not None:
            return Deliberation(key=key, source="model", plan=plan, calls=tuple(calls))
        log.warning("the model's plan was refused (attempt %d): %s", attempt, "; ".join(errors))
        refused = errors
    return Deliberation(
        key=key,
        source="default",
        reason="the model's plan was refused twice",
        calls=tuple(calls),
    )


def _revision(
    rt: Runtime,
    run: RunState,
    step_id: str,
    enrichment: dict[str, Any],
    model: LanguageModel | None,
) -> Deliberation:
    """The model's revision of the steps not yet dispatched, for what enrichment found; and
    what the guard found in it, whether or not the model is asked."""
    key = reasoning.adapt_key(step_id)
    findings = tuple(reasoning.scan(reasoning.enrichment_texts(enrichment), run.request))
    if findings:
        log.warning(
            "enrichment looks like it tries to steer the agent: %s",
            ", ".join(f"{f['kind']} {f['text']!r}" for f in findings),
        )
    pending = [s for s in run.plan if run.steps[s.step_id].status is StepStatus.PENDING]
    if model is None or not pending:
        reason = "the agent's reasoning is off" if model is None else "no step is left to revise"
        return Deliberation(key=key, source="kept", reason=reason, findings=findings)
    call, answer = _ask(
        rt,
        model,
        run.run_id,
        reasoning.ADAPT_SYSTEM,
        reasoning.adapt_prompt(run.request, enrichment, pending),
        reasoning.adapt_schema(run.request, pending),
    )
    if call.failure:
        return Deliberation(
            key=key,
            source="kept",
            reason=f"the model is unavailable ({call.failure})",
            calls=(call,),
            findings=findings,
        )
    changes, errors = (
        (None, list(call.errors))
        if call.errors
        else reasoning.read_revision(answer, run.plan, [s.step_id for s in pending], run.request)
    )
    call = call.model_copy(update={"errors": tuple(errors)})
    if changes is None:
        log.warning("the model's revision was refused: %s", "; ".join(errors))
        return Deliberation(
            key=key,
            source="kept",
            reason="the model's revision was refused",
            calls=(call,),
            findings=findings,
        )
    return Deliberation(
        key=key,
        source="model" if changes else "kept",
        reason="" if changes else "the model proposed no change",
        changes=changes,
        calls=(call,),
        findings=findings,
    )


def _ask(
    rt: Runtime,
    model: LanguageModel,
    run_id: str,
    system: str,
    prompt: str,
    schema: dict[str, Any],
) -> tuple[ModelCall, Any]:
    """One question through the model's circuit breaker: the call and the raw answer.

    An answer that is not JSON comes back as refused (errors), to be asked again; no answer at
    all (circuit open, timeout, unavailable, refused credentials) as a failure, to fall back
    at once: planning never strands a run.
    """
    at = utcnow()
    breaker = CircuitBreaker(rt.store, MODEL_VENDOR, _breaker_policy(rt.settings))
    try:
        with breaker.guard():
            answer, usage = model.generate_json(
                system=system, prompt=prompt, schema=schema, run_id=run_id
            )
    except BadVendorReply as exc:
        return ModelCall(at=at, errors=(exc.message,)), None
    except ChimeraError as exc:
        log.warning("the model gave no answer: %s %s", exc.code, exc.message)
        return ModelCall(at=at, failure=f"{exc.code}: {exc.message}"), None
    except Exception as exc:  # a bug in an adapter: logged with its stack, and fall back
        log.exception("the model call failed unexpectedly")
        return ModelCall(at=at, failure=f"unexpected {type(exc).__name__}"), None
    return ModelCall(at=at, proposal=reasoning.trimmed(answer), usage=usage), answer


def _checkpoint(rt: Runtime, run_id: str, thought: Deliberation) -> None:
    """Record the decision once; when another delivery recorded first, theirs stands."""
    stored = rt.store.record_outcome(
        StepOutcome(
            run_id=run_id,
            step_id=thought.key,
            tool=thought.key.split("-", 1)[0],
            ok=True,
            output=thought.model_dump(mode="json"),
            summary=f"{thought.source}: {thought.reason}" if thought.reason else thought.source,
            usage=thought.usage(),
            attempts=len(thought.calls),
            started_at=thought.calls[0].at if thought.calls else utcnow(),
        )
    )
    log.info("%s checkpointed: %s", stored.step_id, stored.summary, extra={"run_id": run_id})


def _time_for_another(settings: Settings, started: float) -> bool:
    spent = time.monotonic() - started
    return spent + settings.reasoning_timeout < settings.dispatch_deadline * DEADLINE_SHARE


def _breaker_policy(settings: Settings) -> BreakerPolicy:
    return BreakerPolicy(
        failure_threshold=settings.breaker_failure_threshold,
        cooldown=settings.breaker_cooldown,
        probe_timeout=settings.dispatch_deadline * 2,
    )


class NotAllowed(Exception):
    """Only a parked run can be resumed, only a run that is not over can be cancelled, and
    only a run waiting for approval can be approved or rejected."""


def resume(rt: Runtime, run_id: str) -> str:
    """Go on from the failed steps of a parked run."""
    run = _existing(rt, run_id)
    if run.status is not RunStatus.PARKED:
        raise NotAllowed(f"run {run_id} is {run.status.value}, not parked")
    for step in run.steps.values():
        if step.status is StepStatus.FAILED:
            # Forget the failure so the step's next generation can record its own outcome.
            rt.store.discard_outcome(run_id, step.step_id)
    return _apply(rt, run_id, lambda run, outcomes: core.resume(run, outcomes, utcnow()))


def approve(rt: Runtime, run_id: str, actor: str) -> str:
    """A person approves the step the run waits for (the welcome email): it is dispatched."""
    _waiting(rt, run_id)
    return _apply(rt, run_id, lambda run, outcomes: core.approve(run, actor, outcomes, utcnow()))


def reject(rt: Runtime, run_id: str, actor: str, reason: str) -> str:
    """A person rejects the step the run waits for: the run is cancelled, the email unsent."""
    _waiting(rt, run_id)
    return _apply(rt, run_id, lambda run, _: core.reject(run, actor, reason, utcnow()))


def _waiting(rt: Runtime, run_id: str) -> RunState:
    run = _existing(rt, run_id)
    if run.status.terminal or run.approval is None or run.approval.status != "waiting":
        raise NotAllowed(f"run {run_id} is {run.status.value} and waits for no approval")
    return run


def cancel(rt: Runtime, run_id: str, reason: str = "") -> str:
    run = _existing(rt, run_id)
    if run.status.terminal:
        raise NotAllowed(f"run {run_id} is already {run.status.value}")
    return _apply(rt, run_id, lambda run, _: core.cancel(run, reason, utcnow()))


def _tasks_for(calls: list[ToolCall], dispatch_deadline: float) -> list[Task]:
    now = utcnow()
    return [core.dispatch_task(c) for c in calls] + [
        core.watchdog_task(c, now, dispatch_deadline) for c in calls
    ]


def _existing(rt: Runtime, run_id: str) -> RunState:
    run = rt.store.load(run_id)
    if run is None:
        raise LookupError(f"no run {run_id}")
    return run


Decide = Callable[[RunState, dict[str, StepOutcome]], core.Decision]


def _apply(rt: Runtime, run_id: str, decide: Decide) -> str:
    """Load, decide, commit with the emitted tasks; on a conflict, reload and decide again."""
    store = rt.store
    for attempt in range(CONFLICT_RETRIES):
        run = store.load(run_id)
        if run is None:
            log.warning("task for run %s, which does not exist: acknowledged", run_id)
            return "unknown_run"
        outcomes = store.outcomes(run_id)
        decision = decide(run, outcomes)
        if not decision.changed:
            for call in core.redispatch(run, outcomes):
                rt.queue.enqueue(core.dispatch_task(call))
            return "no_change"
        try:
            store.transition(
                decision.run,
                expected_version=run.version,
                events=decision.events,
                tasks=_tasks_for(decision.calls, rt.settings.dispatch_deadline),
            )
        except Conflict:
            time.sleep(random.uniform(0, 0.01 * 2**attempt))
            continue
        if decision.run.status is RunStatus.PARKED:
            # One line per parked run: the log-based metric behind the parked-runs alert.
            log.error(
                "run parked: %s", decision.run.reason, extra={"outcome": "parked", "run_id": run_id}
            )
        return decision.run.status.value
    raise Conflict(f"run {run_id} kept changing under us")

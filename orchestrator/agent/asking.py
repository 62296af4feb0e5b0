"""The agent's I/O edge: ask the model, once per run and decision, and checkpoint the answer.

The answer (or the fallback, and why) is stored in the step ledger before anything acts on
it, so a redelivered or conflicting task reads it instead of asking the model again. Asked
in-process, inside the orchestrator's own task: see
docs/decisions/0009r-the-orchestrator-asks-the-model-itself.md.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from orchestrator.agent import prompts, schemas, validation
from orchestrator.agent.checkpoint import PLAN_KEY, Deliberation, ModelCall, adapt_key, trimmed
from shared import guard
from shared.breaker import BreakerPolicy, breaker_for
from shared.errors import BadVendorReply, ChimeraError
from shared.llm import LanguageModel
from shared.model import OrchestratorTask, RunState, RunStatus, StepOutcome, StepStatus, utcnow
from shared.registry import TOOLS
from shared.runtime import Runtime
from shared.settings import Settings

log = logging.getLogger(__name__)

# The model's circuit breaker: the same one the drafting tool goes through.
MODEL_VENDOR = "gemini"
# A task must be answered within the dispatch deadline: the model is asked again only when
# another full call still fits in this share of it.
DEADLINE_SHARE = 0.75
# After this step, the model may revise what is left of the plan.
ENRICH_STEP = TOOLS["enrich_company"].step_id


def deliberate(
    rt: Runtime, run: RunState, happening: OrchestratorTask, model: LanguageModel | None
) -> list[StepOutcome]:
    """Ask the model, once per run and decision, for what `happening` needs decided: a plan
    for a start, a revision for enrichment's report (or its watchdog); nothing otherwise.

    `run` is the run as the task loaded it. A model's answer (or the fallback, and why) is
    recorded in the step ledger before anything acts on it; the ledger's record is created
    once, so a redelivered or conflicting task reads it instead of asking again, and
    `core.decide` takes it from there. A deliberation that asked no model (reasoning off, or
    nothing left to revise) is the same on every delivery: it is returned instead, for the
    decision's own write to record (one write fewer per decision).
    """
    if happening.kind != "start" and happening.step_id != ENRICH_STEP:
        return []
    if run.status.terminal:
        return []
    store = rt.store
    if happening.kind == "start":
        if run.status is RunStatus.PENDING and store.outcome(run.run_id, PLAN_KEY) is None:
            return _checkpoint(rt, run.run_id, _plan(rt, run, model))
        return []
    step = run.steps.get(happening.step_id or "")
    if step is None or step.tool != "enrich_company" or step.status is not StepStatus.DISPATCHED:
        return []
    key = adapt_key(step.step_id)
    done = store.outcome(run.run_id, step.step_id)
    if done is None or not done.ok or done.generation != step.generation:
        return []
    if store.outcome(run.run_id, key) is None:
        return _checkpoint(rt, run.run_id, _revision(rt, run, step.step_id, done.output, model))
    return []


def _plan(rt: Runtime, run: RunState, model: LanguageModel | None) -> Deliberation:
    """The model's plan, asked again once with the reasons when refused; else the default."""
    key, request = PLAN_KEY, run.request
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
            prompts.PLAN_SYSTEM,
            prompts.plan_prompt(request, refused),
            schemas.plan_schema(request),
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
            (None, list(call.errors)) if call.errors else validation.read_plan(answer, request)
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
    key = adapt_key(step_id)
    findings = tuple(guard.scan(guard.strings(enrichment), run.request))
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
        prompts.ADAPT_SYSTEM,
        prompts.adapt_prompt(run.request, enrichment, pending),
        schemas.adapt_schema(run.request, pending),
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
        else validation.read_revision(answer, run.plan, [s.step_id for s in pending], run.request)
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
    breaker = breaker_for(rt.store, MODEL_VENDOR, BreakerPolicy.from_settings(rt.settings))
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
    return ModelCall(at=at, proposal=trimmed(answer), usage=usage), answer


def _checkpoint(rt: Runtime, run_id: str, thought: Deliberation) -> list[StepOutcome]:
    """Record a model's decision now, once (when another delivery recorded first, theirs
    stands); one that asked no model comes back, to be recorded with the transition."""
    record = StepOutcome(
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
    if not thought.calls:
        return [record]
    stored = rt.store.record_outcome(record)
    log.info("%s checkpointed: %s", stored.step_id, stored.summary, extra={"run_id": run_id})
    return []


def _time_for_another(settings: Settings, started: float) -> bool:
    spent = time.monotonic() - started
    return spent + settings.reasoning_timeout < settings.dispatch_deadline * DEADLINE_SHARE

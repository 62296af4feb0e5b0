"""A tool function's verification tasks: a read-only look at what a succeeded step made.

The verification task rides on the step's own tool queue, so it uses the same deployed
function, the same client and credentials. It runs beside the run's next steps; its finding
goes into the step ledger (under verification_key) and back to the orchestrator.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping

import flask
from pydantic import ValidationError

from shared import telemetry
from shared.breaker import BreakerPolicy, breaker_for
from shared.errors import ChimeraError, PermanentError, RetryableError
from shared.identity import task_caller_denied
from shared.model import (
    Attempt,
    Event,
    OrchestratorTask,
    StepOutcome,
    StepStatus,
    Task,
    VerificationCall,
    VerificationResult,
    VerificationStatus,
    VerificationSubject,
    utcnow,
    verification_key,
)
from shared.queues import tool_queue
from shared.registry import TOOLS
from shared.runtime import Runtime, runtime
from shared.tasks_http import answer, attempt_of, retry_later
from shared.telemetry import dispatched

log = logging.getLogger(__name__)

# A verifier: the subject in, a finding out; raises Lagging for a lookup not caught up yet,
# RetryableError for a vendor's passing trouble, PermanentError for one we cannot ask.
Verifier = Callable[[VerificationSubject], VerificationResult]
Handler = Callable[[flask.Request], flask.Response]


class Lagging(RetryableError):
    """The vendor's lookup has not caught up with the step's effect yet (SendGrid's activity
    feed): asked again with the queue's backoff, within the verification window."""

    code = "verification_lagging"


def verified(reason: str = "") -> VerificationResult:
    return VerificationResult(status=VerificationStatus.VERIFIED, reason=reason)


def mismatch(reason: str) -> VerificationResult:
    return VerificationResult(status=VerificationStatus.MISMATCH, reason=reason)


def unverifiable(reason: str) -> VerificationResult:
    return VerificationResult(status=VerificationStatus.UNVERIFIABLE, reason=reason)


def report_task(call: VerificationCall) -> Task:
    """Tells the orchestrator the verification is in; named so it is sent once."""
    return dispatched(
        OrchestratorTask(
            run_id=call.run_id, kind="verified", step_id=call.step_id, generation=call.generation
        ).task(f"{call.run_id}-{call.step_id}-g{call.generation}-verified")
    )


def with_verifiers(function: str, tools: Handler, verifiers: Mapping[str, Verifier]) -> Handler:
    """`function`'s HTTP target: verification tasks to `verifiers` (by tool name), every
    other task to the tool endpoint `tools`."""
    actor = tool_queue(function)

    def handle(request: flask.Request) -> flask.Response:
        call = _verification_call(request.get_data())
        if call is None:
            return tools(request)
        rt = runtime()
        denied = task_caller_denied(request, rt.settings, actor)
        if denied is not None:
            return denied
        attempt = attempt_of(request, actor)
        with telemetry.task_delivery(
            f"verify {call.step_id}",
            request.headers,
            rt.store,
            attempt,
            run_id=call.run_id,
            step_id=call.step_id,
            attributes={"chimera.generation": call.generation},
        ):
            return _verify(rt, actor, call, attempt, verifiers)

    handle.__name__ = "run_tool"  # the Functions Framework registers targets by name
    return handle


def _verification_call(raw: bytes) -> VerificationCall | None:
    try:
        body = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(body, dict) or body.get("kind") != "verify":
        return None
    try:
        return VerificationCall.model_validate(body)
    except ValidationError:
        return None


def _verify(
    rt: Runtime,
    actor: str,
    call: VerificationCall,
    attempt: Attempt,
    verifiers: Mapping[str, Verifier],
) -> flask.Response:
    store = rt.store
    key = verification_key(call.step_id, call.generation)
    if store.outcome(call.run_id, key) is not None:  # found before; the report may be lost
        rt.queue.enqueue(report_task(call))
        return answer(200, {"status": "already_verified"})
    run = store.load(call.run_id)
    step = run.steps.get(call.step_id) if run else None
    outcome = store.outcome(call.run_id, call.step_id)
    plan_step = next((p for p in run.plan if p.step_id == call.step_id), None) if run else None
    if (
        run is None
        or run.status.terminal
        or step is None
        or plan_step is None
        or step.status is not StepStatus.SUCCEEDED
        or step.generation != call.generation
        or outcome is None
        or not outcome.ok
        or outcome.generation != call.generation
    ):
        # A cancelled run, or a generation already re-run: nothing to look at any more.
        return answer(200, {"status": "skipped", "reason": "not this step's current success"})
    verifier = verifiers.get(step.tool)
    if verifier is None:
        result = unverifiable(f"{actor} has no verifier for {step.tool}")
    else:
        subject = VerificationSubject(
            run_id=call.run_id,
            step_id=call.step_id,
            tool=step.tool,
            generation=call.generation,
            args=plan_step.args,
            output=outcome.output,
            request=run.request,
            finished_at=outcome.finished_at,
        )
        now = utcnow()
        waited = (now - outcome.finished_at).total_seconds()
        # The vendor's breaker guards the look too: a dead vendor is not asked again and
        # again by looks (CircuitOpen is retryable, so the look waits out the cool-down).
        vendor = TOOLS[step.tool].vendor
        breaker = breaker_for(store, vendor, BreakerPolicy.from_settings(rt.settings))
        try:
            with breaker.guard():
                result = verifier(subject)
        except RetryableError as exc:
            if waited < rt.settings.verify_window and not attempt.last:
                _retry_event(rt, actor, call, attempt, exc)
                return retry_later(exc)
            result = unverifiable(f"{_gave_up(exc, waited)}")
        except PermanentError as exc:
            result = unverifiable(f"the vendor cannot be asked: {exc.code}: {exc.message}")
    store.record_outcome(
        StepOutcome(
            run_id=call.run_id,
            step_id=key,
            tool=step.tool,
            ok=result.status is not VerificationStatus.MISMATCH,
            output=result.model_dump(mode="json"),
            summary=f"{result.status.value}: {result.reason}",
            attempts=attempt.number,
            generation=call.generation,
        )
    )
    rt.queue.enqueue(report_task(call))
    log.info("verification %s: %s", result.status.value, result.reason)
    return answer(200, {"status": result.status.value, "reason": result.reason})


def _gave_up(exc: ChimeraError, waited: float) -> str:
    if isinstance(exc, Lagging):
        return f"still not visible {waited:.0f} s after the step: {exc.message}"
    return f"the vendor could not be asked within {waited:.0f} s: {exc.code}: {exc.message}"


def _retry_event(
    rt: Runtime, actor: str, call: VerificationCall, attempt: Attempt, exc: ChimeraError
) -> None:
    rt.store.append_event(
        Event(
            run_id=call.run_id,
            kind="verification.retry",
            actor=actor,
            step_id=call.step_id,
            detail={"attempt": attempt.number, "generation": call.generation, **exc.as_dict()},
        )
    )

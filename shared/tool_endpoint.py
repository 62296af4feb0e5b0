"""The shared HTTP endpoint of a tool function: the task checked against the store, the ledger,
errors, retries and the report back."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping

import flask
from opentelemetry import trace
from pydantic import ValidationError

from shared import metrics, telemetry
from shared.breaker import BreakerPolicy, ConcurrencyLimit, breaker_for
from shared.errors import ChimeraError, InvalidInput, PermanentError, RetryableError, StoreBusy
from shared.identity import task_caller_denied
from shared.model import (
    Attempt,
    Event,
    OrchestratorTask,
    RunState,
    StepError,
    StepOutcome,
    StepResult,
    StepStatus,
    Task,
    ToolCall,
    ToolTask,
    utcnow,
)
from shared.queues import tool_queue
from shared.registry import TOOLS
from shared.retry_outlook import RetryOutlook
from shared.runtime import Runtime, runtime
from shared.task_queue import schedule_of
from shared.tasks_http import answer, attempt_of, refuse, retry_later
from shared.telemetry import dispatched
from shared.validation_errors import one_line

log = logging.getLogger(__name__)

ToolFunction = Callable[[ToolCall, Attempt], StepResult]


def report_task(outcome: StepOutcome) -> Task:
    """The task that tells the orchestrator a step finished; named so it is sent once."""
    return dispatched(
        OrchestratorTask(run_id=outcome.run_id, kind="step_finished", step_id=outcome.step_id).task(
            f"{outcome.run_id}-{outcome.step_id}-g{outcome.generation}-done"
        )
    )


def tool_endpoint(
    function: str, tools: Mapping[str, ToolFunction]
) -> Callable[[flask.Request], flask.Response]:
    """The HTTP target of `function`'s queue, running the tools it serves.

    A task names a step (ToolTask); what the step works on comes from the store: the run's
    request, its plan step's args, the ledger outcomes of the steps it reads. A task that
    disagrees with the store is refused and recorded, and reaches no vendor.
    """
    actor = tool_queue(function)
    telemetry.serve_as(actor)

    def handle(request: flask.Request) -> flask.Response:
        rt = runtime()
        denied = task_caller_denied(request, rt.settings, actor)
        if denied is not None:
            return denied
        attempt = attempt_of(request, actor)
        raw = request.get_data()
        try:
            task = ToolTask.model_validate_json(raw)
        except ValidationError as exc:
            return refuse(rt.store, attempt, actor, one_line(exc), raw)
        if task.tool not in tools:
            return refuse(rt.store, attempt, actor, f"{actor} does not run {task.tool!r}", raw)
        with telemetry.task_delivery(
            f"tool {task.tool}",
            request.headers,
            rt.store,
            attempt,
            run_id=task.run_id,
            step_id=task.step_id,
            tool=task.tool,
            attributes={"chimera.generation": task.generation},
        ):
            try:
                return _take(rt, actor, task, attempt, tools[task.tool], raw)
            except StoreBusy as exc:  # the queue sends it again; its ledger makes that safe
                log.warning("%s: %s; the queue will deliver it again", actor, exc.message)
                return retry_later(exc)

    handle.__name__ = "run_tool"  # the Functions Framework registers targets by name
    return handle


def _take(
    rt: Runtime, actor: str, task: ToolTask, attempt: Attempt, fn: ToolFunction, raw: bytes
) -> flask.Response:
    """Check the task against the store (the run and its ledger, loaded once), then run it."""
    store = rt.store
    run = store.load(task.run_id)
    if run is None:
        return refuse(store, attempt, actor, f"run {task.run_id} does not exist", raw)
    disagreement = _disagreement(run, task)
    if disagreement:
        store.append_event(
            Event(
                run_id=task.run_id,
                kind="task.refused",
                actor=actor,
                step_id=task.step_id if task.step_id in run.steps else None,
                detail={"reason": disagreement, "tool": task.tool},
            )
        )
        return refuse(store, attempt, actor, disagreement, raw)
    skip = _why_skip(run, task)
    if skip:
        log.warning("skipping task: %s", skip)
        store.append_event(
            Event(
                run_id=task.run_id,
                kind="step.skipped",
                actor=actor,
                step_id=task.step_id,
                detail={"reason": skip},
            )
        )
        return answer(200, {"status": "skipped", "reason": skip})

    outcomes = store.outcomes(task.run_id)
    done = outcomes.get(task.step_id)
    if done is not None:
        # Finished before (the report may have been lost): tell the orchestrator again.
        rt.queue.enqueue(report_task(done))
        return answer(200, {"status": "already_done", "ok": done.ok})
    return _run(rt, actor, call_from_store(run, task, outcomes), attempt, fn)


def call_from_store(run: RunState, task: ToolTask, outcomes: Mapping[str, StepOutcome]) -> ToolCall:
    """What the core works on, from the store alone: the run's request, the plan step's args,
    and the succeeded outputs of the steps the tool reads (TOOLS[tool].reads), by step id."""
    plan_step = next(s for s in run.plan if s.step_id == task.step_id)
    inputs = {
        read: outcomes[read].output
        for read in TOOLS[task.tool].reads
        if read in run.steps and read in outcomes and outcomes[read].ok
    }
    return ToolCall(
        run_id=run.run_id,
        step_id=task.step_id,
        tool=task.tool,
        generation=task.generation,
        args=plan_step.args,
        inputs=inputs,
        request=run.request,
        dispatched_at=run.steps[task.step_id].started_at,
    )


def _run(
    rt: Runtime, actor: str, call: ToolCall, attempt: Attempt, fn: ToolFunction
) -> flask.Response:
    store = rt.store
    vendor = TOOLS[call.tool].vendor
    breaker = breaker_for(store, vendor, BreakerPolicy.from_settings(rt.settings))
    started, clock = utcnow(), time.perf_counter()
    try:
        _check_args(call)
        with _limit(vendor, rt.settings.vendor_concurrency).slot(vendor), breaker.guard():
            result = fn(call, attempt)
        error: ChimeraError | None = None
    except RetryableError as exc:
        error = exc
        telemetry.failed(trace.get_current_span(), exc)
        if not attempt.last:
            _measure(call, vendor, "retry", clock, exc)
            log.warning(
                "attempt %d failed, will retry: %s %s", attempt.number, exc.code, exc.message
            )
            store.append_event(
                Event(
                    run_id=call.run_id,
                    kind="step.retry",
                    actor=actor,
                    step_id=call.step_id,
                    detail={
                        **exc.as_dict(),
                        **RetryOutlook.after_failure(
                            schedule_of(rt.queue, actor),
                            attempt.number,
                            utcnow(),
                            getattr(exc, "retry_after", None),
                        ).detail(),
                        "started_at": started.isoformat(),
                    },
                )
            )
            return retry_later(exc)
        log.error("attempt %d was the last, giving up: %s", attempt.number, exc.code)
    except PermanentError as exc:
        error = exc
        telemetry.failed(trace.get_current_span(), exc)
        log.error("failed for good: %s %s", exc.code, exc.message)
    _measure(call, vendor, "ok" if error is None else "failed", clock, error)

    latency_ms = round((time.perf_counter() - clock) * 1000)
    if error is None:
        outcome = StepOutcome(
            run_id=call.run_id,
            step_id=call.step_id,
            tool=call.tool,
            ok=True,
            output=result.output,
            summary=result.summary,
            usage=result.usage,
            attempts=attempt.number,
            latency_ms=latency_ms,
            started_at=started,
            finished_at=utcnow(),
            generation=call.generation,
        )
    else:
        message = error.message
        if error.retryable:
            message = f"gave up after {attempt.number} attempts: {message}"
        outcome = StepOutcome(
            run_id=call.run_id,
            step_id=call.step_id,
            tool=call.tool,
            ok=False,
            error=StepError(code=error.code, message=message, retryable=error.retryable),
            attempts=attempt.number,
            latency_ms=latency_ms,
            started_at=started,
            finished_at=utcnow(),
            generation=call.generation,
        )
    # The report goes with the record: one write locally, and never one without the other.
    stored = store.record_outcome(outcome, then=lambda recorded: [report_task(recorded)])
    log.info(
        "step %s in %d ms",
        "done" if stored.ok else "failed",
        latency_ms,
        extra={
            "latency_ms": latency_ms,
            "attempt": attempt.number,
            "outcome": "ok" if stored.ok else stored.error and stored.error.code,
        },
    )
    return answer(200, {"status": "done", "ok": stored.ok})


def _measure(
    call: ToolCall, vendor: str, outcome: str, clock: float, error: ChimeraError | None
) -> None:
    """One attempt's outcome, on its span and in the tool metrics."""
    trace.get_current_span().set_attribute("chimera.outcome", outcome)
    code = error.code if error is not None else None
    metrics.tool_attempt(call.tool, vendor, outcome, time.perf_counter() - clock, code)


_limits: dict[str, ConcurrencyLimit] = {}
_limits_lock = threading.Lock()


def _limit(vendor: str, size: int) -> ConcurrencyLimit:
    """One limit per vendor per instance (per process): what bounds threads in a brownout."""
    with _limits_lock:
        if vendor not in _limits or _limits[vendor].limit != size:
            _limits[vendor] = ConcurrencyLimit(size)
        return _limits[vendor]


def _check_args(call: ToolCall) -> None:
    """The plan step's args, as stored, fit the tool's schema (plans are checked when adopted;
    a store holding something else is a bug to see on the run, not a vendor call)."""
    try:
        TOOLS[call.tool].args.model_validate(call.args)
    except ValidationError as exc:
        raise InvalidInput(f"{call.tool} args: {one_line(exc)}") from None


def _disagreement(run: RunState, task: ToolTask) -> str:
    """Why the task is not one the orchestrator sent for the run as stored, or "" if it is."""
    plan_step = next((s for s in run.plan if s.step_id == task.step_id), None)
    step = run.steps.get(task.step_id)
    if plan_step is None or step is None:
        return f"step {task.step_id} is not in the run's plan"
    if plan_step.tool != task.tool:
        return f"step {task.step_id} runs {plan_step.tool}, not {task.tool}"
    if task.generation < step.generation:
        return f"stale task of generation {task.generation}; step is at {step.generation}"
    if task.generation > step.generation:
        return f"task of generation {task.generation}; step is only at {step.generation}"
    if step.status in (StepStatus.PENDING, StepStatus.SKIPPED) and not run.status.terminal:
        return f"step {task.step_id} is {step.status.value}: it was never dispatched"
    return ""


def _why_skip(run: RunState, task: ToolTask) -> str:
    """Why a task the orchestrator did send has nothing left to do (redelivered after its step
    was taken in, or its run ended), or "" when it is to run."""
    if run.status.terminal:
        return f"run is {run.status.value}"
    step = run.steps[task.step_id]
    if step.status is not StepStatus.DISPATCHED:
        return f"step {task.step_id} is {step.status.value}, not dispatched"
    return ""

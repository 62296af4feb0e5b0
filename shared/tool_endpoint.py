"""The shared HTTP endpoint of a tool function: ledger, errors, retries and the report back."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping

import flask
from pydantic import ValidationError

from shared.breaker import BreakerPolicy, ConcurrencyLimit, breaker_for
from shared.errors import ChimeraError, PermanentError, RetryableError
from shared.identity import task_caller_denied
from shared.logs import log_context
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
    utcnow,
)
from shared.queues import ORCHESTRATOR_QUEUE, tool_queue
from shared.registry import TOOLS
from shared.runtime import Runtime, runtime
from shared.tasks_http import answer, attempt_of, refuse, retry_later
from shared.validation_errors import one_line

log = logging.getLogger(__name__)

ToolFunction = Callable[[ToolCall, Attempt], StepResult]


def report_task(outcome: StepOutcome) -> Task:
    """The task that tells the orchestrator a step finished; named so it is sent once."""
    return Task(
        queue=ORCHESTRATOR_QUEUE,
        name=f"{outcome.run_id}-{outcome.step_id}-g{outcome.generation}-done",
        payload=OrchestratorTask(
            run_id=outcome.run_id, kind="step_finished", step_id=outcome.step_id
        ).model_dump(mode="json"),
    )


def tool_endpoint(
    function: str, tools: Mapping[str, ToolFunction]
) -> Callable[[flask.Request], flask.Response]:
    """The HTTP target of `function`'s queue, running the tools it serves."""
    actor = tool_queue(function)

    def handle(request: flask.Request) -> flask.Response:
        rt = runtime()
        denied = task_caller_denied(request, rt.settings, actor)
        if denied is not None:
            return denied
        attempt = attempt_of(request, actor)
        raw = request.get_data()
        try:
            call = ToolCall.model_validate_json(raw)
        except ValidationError as exc:
            return refuse(rt.store, attempt, actor, one_line(exc), raw)
        if call.tool not in tools:
            return refuse(rt.store, attempt, actor, f"{actor} does not run {call.tool!r}", raw)
        try:
            TOOLS[call.tool].args.model_validate(call.args)
        except ValidationError as exc:
            return refuse(rt.store, attempt, actor, f"{call.tool} args: {one_line(exc)}", raw)
        with log_context(run_id=call.run_id, step_id=call.step_id, tool=call.tool):
            return _run(rt, actor, call, attempt, tools[call.tool])

    handle.__name__ = "run_tool"  # the Functions Framework registers targets by name
    return handle


def _run(
    rt: Runtime, actor: str, call: ToolCall, attempt: Attempt, fn: ToolFunction
) -> flask.Response:
    store = rt.store
    run = store.load(call.run_id)
    skip = _why_skip(run, call)
    if skip:
        log.warning("skipping task: %s", skip)
        if run is not None:
            store.append_event(
                Event(
                    run_id=call.run_id,
                    kind="step.skipped",
                    actor=actor,
                    step_id=call.step_id,
                    detail={"reason": skip},
                )
            )
        return answer(200, {"status": "skipped", "reason": skip})

    done = store.outcome(call.run_id, call.step_id)
    if done is not None:
        # Finished before (the report may have been lost): tell the orchestrator again.
        rt.queue.enqueue(report_task(done))
        return answer(200, {"status": "already_done", "ok": done.ok})

    vendor = TOOLS[call.tool].vendor
    breaker = breaker_for(store, vendor, BreakerPolicy.from_settings(rt.settings))
    started, clock = utcnow(), time.perf_counter()
    try:
        with _limit(vendor, rt.settings.vendor_concurrency).slot(vendor), breaker.guard():
            result = fn(call, attempt)
        error: ChimeraError | None = None
    except RetryableError as exc:
        error = exc
        if not attempt.last:
            log.warning(
                "attempt %d failed, will retry: %s %s", attempt.number, exc.code, exc.message
            )
            store.append_event(
                Event(
                    run_id=call.run_id,
                    kind="step.retry",
                    actor=actor,
                    step_id=call.step_id,
                    detail={"attempt": attempt.number, **exc.as_dict()},
                )
            )
            return retry_later(exc)
        log.error("attempt %d was the last, giving up: %s", attempt.number, exc.code)
    except PermanentError as exc:
        error = exc
        log.error("failed for good: %s %s", exc.code, exc.message)

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
    stored = store.record_outcome(outcome)
    rt.queue.enqueue(report_task(stored))
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


_limits: dict[str, ConcurrencyLimit] = {}
_limits_lock = threading.Lock()


def _limit(vendor: str, size: int) -> ConcurrencyLimit:
    """One limit per vendor per instance (per process): what bounds threads in a brownout."""
    with _limits_lock:
        if vendor not in _limits or _limits[vendor].limit != size:
            _limits[vendor] = ConcurrencyLimit(size)
        return _limits[vendor]


def _why_skip(run: RunState | None, call: ToolCall) -> str:
    if run is None:
        return f"run {call.run_id} does not exist"
    if run.status.terminal:
        return f"run is {run.status.value}"
    step = run.steps.get(call.step_id)
    if step is None:
        return f"step {call.step_id} is not in the run's plan"
    if step.status is not StepStatus.DISPATCHED:
        return f"step {call.step_id} is {step.status.value}, not dispatched"
    if step.generation != call.generation:
        return f"stale task of generation {call.generation}; step is at {step.generation}"
    return ""

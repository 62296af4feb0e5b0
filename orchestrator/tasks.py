"""The queue tasks the orchestrator emits: named by run, step and generation, so a redelivery
or a repaired dispatch dedupes on the queue instead of running twice. Each carries the
context of its dispatch (shared/telemetry.py), so its delivery joins the run's trace."""

from __future__ import annotations

from datetime import datetime, timedelta

from shared.model import OrchestratorTask, Task, ToolTask, VerificationCall
from shared.queues import ORCHESTRATOR_QUEUE, QUEUES
from shared.registry import TOOLS
from shared.telemetry import dispatched


def start_task(run_id: str, attempt: str = "") -> Task:
    """The task that starts a run; `attempt` names a restart (a resumed run that never
    started), since a queue may refuse a task name it has seen for a while."""
    return dispatched(
        OrchestratorTask(run_id=run_id, kind="start").task(
            f"{run_id}-start{'-' + attempt if attempt else ''}"
        )
    )


def start_watchdog_task(start: Task, now: datetime, dispatch_deadline: float) -> Task:
    """Wakes the orchestrator when the start task's queue would have given up on it for sure."""
    window = QUEUES[ORCHESTRATOR_QUEUE].retry_window(dispatch_deadline)
    return dispatched(
        OrchestratorTask(run_id=start.payload["run_id"], kind="watchdog").task(
            f"{start.name}-watchdog", now + timedelta(seconds=window + 60)
        )
    )


def watchdog_task(call: ToolTask, now: datetime, dispatch_deadline: float) -> Task:
    """Wakes the orchestrator when the step's queue would have given up on it for sure."""
    window = QUEUES[TOOLS[call.tool].queue].retry_window(dispatch_deadline)
    return dispatched(
        OrchestratorTask(
            run_id=call.run_id, kind="watchdog", step_id=call.step_id, generation=call.generation
        ).task(
            f"{call.run_id}-{call.step_id}-g{call.generation}-watchdog",
            now + timedelta(seconds=window + 60),
        )
    )


def dispatch_task(call: ToolTask) -> Task:
    """A step as a task on its tool's queue, named by run, step and generation; its payload
    names the step and nothing more (the tool reads the rest from the store)."""
    return dispatched(
        Task(
            queue=TOOLS[call.tool].queue,
            name=f"{call.run_id}-{call.step_id}-g{call.generation}",
            payload=call.model_dump(mode="json"),
        )
    )


def verification_task(call: VerificationCall, tool: str) -> Task:
    """A step's verification on its tool's queue (the same client, read-only), named by run,
    step and generation; its payload names the step, the verifier reads the rest."""
    return dispatched(
        Task(
            queue=TOOLS[tool].queue,
            name=f"{call.run_id}-{call.step_id}-g{call.generation}-verify",
            payload=call.model_dump(mode="json"),
        )
    )


def verification_watchdog_task(
    call: VerificationCall, tool: str, now: datetime, dispatch_deadline: float
) -> Task:
    """Wakes the orchestrator when the verification's queue would have given up on it."""
    window = QUEUES[TOOLS[tool].queue].retry_window(dispatch_deadline)
    return dispatched(
        OrchestratorTask(
            run_id=call.run_id,
            kind="verify_watchdog",
            step_id=call.step_id,
            generation=call.generation,
        ).task(
            f"{call.run_id}-{call.step_id}-g{call.generation}-verify-watchdog",
            now + timedelta(seconds=window + 60),
        )
    )

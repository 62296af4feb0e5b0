"""The queue tasks the orchestrator emits: named by run, step and generation, so a redelivery
or a repaired dispatch dedupes on the queue instead of running twice. Each carries the
context of its dispatch (shared/telemetry.py), so its delivery joins the run's trace."""

from __future__ import annotations

from datetime import datetime, timedelta

from shared.model import (
    OrchestratorTask,
    RunState,
    RunStatus,
    StepStatus,
    Task,
    ToolTask,
    VerificationCall,
)
from shared.queues import ORCHESTRATOR_QUEUE, QUEUES
from shared.registry import TOOLS
from shared.task_queue import TaskRef
from shared.telemetry import dispatched


def start_task(run_id: str, attempt: str = "") -> Task:
    """The task that starts a run; `attempt` names a restart (a resumed run that never
    started), since a queue may refuse a task name it has seen for a while."""
    return dispatched(
        OrchestratorTask(run_id=run_id, kind="start").task(_start_task_name(run_id, attempt))
    )


def start_watchdog_task(start: Task, now: datetime, dispatch_deadline: float) -> Task:
    """Wakes the orchestrator when the start task's queue would have given up on it for sure."""
    window = QUEUES[ORCHESTRATOR_QUEUE].retry_window(dispatch_deadline)
    return dispatched(
        OrchestratorTask(run_id=start.payload["run_id"], kind="watchdog").task(
            _watchdog_name(start.name), now + timedelta(seconds=window + 60)
        )
    )


def moot_watchdogs(before: RunState, after: RunState) -> list[TaskRef]:
    """The watchdogs a decision from `before` to `after` makes moot, to cancel with it: each
    step's that it ends (or dispatches again, under a new generation), and the start's once
    the run has started. One left in place (a restarted start's) finds nothing to do."""
    moot = [
        TaskRef(
            ORCHESTRATOR_QUEUE, _watchdog_name(_step_task_name(before.run_id, sid, s.generation))
        )
        for sid, s in before.steps.items()
        if s.status is StepStatus.DISPATCHED
        and (
            after.steps[sid].status is not StepStatus.DISPATCHED
            or after.steps[sid].generation != s.generation
        )
    ]
    if before.status is RunStatus.PENDING and after.status is not RunStatus.PENDING:
        moot.append(TaskRef(ORCHESTRATOR_QUEUE, _watchdog_name(_start_task_name(before.run_id))))
    return moot


def _start_task_name(run_id: str, attempt: str = "") -> str:
    return f"{run_id}-start{'-' + attempt if attempt else ''}"


def _step_task_name(run_id: str, step_id: str, generation: int) -> str:
    return f"{run_id}-{step_id}-g{generation}"


def _watchdog_name(task_name: str) -> str:
    return f"{task_name}-watchdog"


def watchdog_task(call: ToolTask, now: datetime, dispatch_deadline: float) -> Task:
    """Wakes the orchestrator when the step's queue would have given up on it for sure."""
    window = QUEUES[TOOLS[call.tool].queue].retry_window(dispatch_deadline)
    return dispatched(
        OrchestratorTask(
            run_id=call.run_id, kind="watchdog", step_id=call.step_id, generation=call.generation
        ).task(
            _watchdog_name(_step_task_name(call.run_id, call.step_id, call.generation)),
            now + timedelta(seconds=window + 60),
        )
    )


def dispatch_task(call: ToolTask) -> Task:
    """A step as a task on its tool's queue, named by run, step and generation; its payload
    names the step and nothing more (the tool reads the rest from the store)."""
    return dispatched(
        Task(
            queue=TOOLS[call.tool].queue,
            name=_step_task_name(call.run_id, call.step_id, call.generation),
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

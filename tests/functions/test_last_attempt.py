"""A tool's last attempt: Cloud Tasks' retry count tells it that no delivery will follow, so it
records the failure and reports it instead of asking for a retry that will never come."""

from __future__ import annotations

import pytest

from shared.errors import VendorUnavailable
from shared.model import (
    OrchestratorTask,
    PlanStep,
    RunStatus,
    StepStatus,
    StepSummary,
    ToolTask,
)
from shared.queues import ORCHESTRATOR_QUEUE, QUEUES
from tests.conftest import make_run
from tests.fakes import FakeChat
from tests.functions.conftest import tool_client

LAST_RETRY = QUEUES["tool-slack"].max_attempts - 1  # Cloud Tasks counts retries from 0


class DownChat(FakeChat):
    """Slack answering 503 to every post."""

    def __init__(self) -> None:
        super().__init__()
        self.tries = 0

    def post_message(self, **message):  # type: ignore[no-untyped-def, override]
        self.tries += 1
        raise VendorUnavailable("Slack answered 503")


@pytest.fixture
def down() -> DownChat:
    return DownChat()


@pytest.fixture
def slack(fakes, down):
    return tool_client("slack", SlackChat=down)


@pytest.fixture
def call(fakes) -> ToolTask:
    store, _ = fakes
    run = make_run(
        status=RunStatus.RUNNING,
        plan=(PlanStep(step_id="slack", tool="post_slack_notice"),),
        steps={
            "slack": StepSummary(
                step_id="slack", tool="post_slack_notice", status=StepStatus.DISPATCHED
            )
        },
    )
    store.create_run(run)
    return ToolTask(run_id=run.run_id, step_id="slack", tool="post_slack_notice", generation=1)


def _deliver(slack, call: ToolTask, retry_count: int):  # type: ignore[no-untyped-def]
    return slack.post(
        "/",
        data=call.model_dump_json(),
        headers={
            "Content-Type": "application/json",
            "X-CloudTasks-QueueName": "tool-slack",
            "X-CloudTasks-TaskName": f"{call.run_id}-slack-g1",
            "X-CloudTasks-TaskRetryCount": str(retry_count),
        },
    )


@pytest.mark.parametrize("retry_count", [0, LAST_RETRY - 1])
def test_retryable_failure_asks_for_a_retry_when_attempts_remain(
    fakes, slack, down, call, retry_count
):
    store, queue = fakes
    response = _deliver(slack, call, retry_count)
    assert down.tries == 1
    assert response.status_code == 503
    assert response.get_json()["error"]["code"] == "unavailable"
    assert store.outcome(call.run_id, "slack") is None
    assert queue.tasks == {}, "nothing is reported while the queue will try again"


def test_retryable_failure_is_recorded_and_reported_when_it_is_the_last_attempt(
    fakes, slack, down, call
):
    store, queue = fakes
    response = _deliver(slack, call, LAST_RETRY)
    assert down.tries == 1
    assert response.status_code == 200
    assert response.get_json() == {"status": "done", "ok": False}
    outcome = store.outcome(call.run_id, "slack")
    assert outcome is not None and not outcome.ok
    assert outcome.attempts == QUEUES["tool-slack"].max_attempts
    assert outcome.error.code == "unavailable" and outcome.error.retryable
    assert outcome.error.message.startswith(f"gave up after {outcome.attempts} attempts")
    (report,) = queue.on(ORCHESTRATOR_QUEUE)
    assert report.name == f"{call.run_id}-slack-g1-done"
    assert report.payload == OrchestratorTask(
        run_id=call.run_id, kind="step_finished", step_id="slack"
    ).model_dump(mode="json")

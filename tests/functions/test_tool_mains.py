"""Each tool's deployed target through the Functions Framework, on in-memory fakes."""

from __future__ import annotations

import pytest

from orchestrator import core
from shared.errors import VendorTimeout
from shared.model import OrchestratorTask, RunStatus, StepOutcome, StepStatus, utcnow
from shared.queues import QUEUES
from shared.retry_outlook import RetryOutlook
from tests.conftest import make_run
from tests.fakes import FakeChat, FakeDirectory, FakeJira, FakeLanguageModel, FakeMail
from tests.functions.conftest import Recorded, tool_client
from tools.clearbit.core import Provider

DRAFT = {
    "subject": "Welcome aboard",
    "text": "Hello Ada, welcome aboard!",
    "html": "<p>Hello Ada, welcome aboard!</p>",
}


def _dispatched(store, step_id: str, **args: object):
    """A stored run whose `step_id` is dispatched (its plan step's args updated by `args`),
    the draft in its ledger for the email step, and the task the orchestrator sent."""
    run = core.decide(make_run(), OrchestratorTask(run_id="x", kind="start"), {}, utcnow()).run
    step = run.steps[step_id].model_copy(update={"status": StepStatus.DISPATCHED})
    plan = tuple(
        s.model_copy(update={"args": {**s.args, **args}}) if s.step_id == step_id else s
        for s in run.plan
    )
    run = run.evolve(steps={**run.steps, step_id: step}, plan=plan)
    run, _ = store.create_run(run)
    if step_id == "email":
        store.record_outcome(
            StepOutcome(
                run_id=run.run_id,
                step_id="draft",
                tool="draft_welcome_email",
                ok=True,
                output=DRAFT,
            )
        )
    task = next(t for t in core.redispatch(run, {}) if t.step_id == step_id)
    return run, task.model_dump(mode="json")


QUEUED = {
    "X-CloudTasks-QueueName": "q",
    "X-CloudTasks-TaskName": "t-1",
    "X-CloudTasks-TaskRetryCount": "0",
}

ENRICHED = {"acme.example": {"name": "A"}}
# (function, step, the factory its main.py hands per_runtime, the fake that stands in for it)
CASES = [
    ("clearbit", "enrich", "enrichment_providers", lambda: FakeDirectory(ENRICHED)),
    ("jira", "jira", "JiraClient", FakeJira),
    ("sendgrid", "draft", "language_model", FakeLanguageModel),
    ("sendgrid", "email", "SendGridMailer", FakeMail),
    ("slack", "slack", "SlackChat", FakeChat),
]


def _injected(factory: str, vendor: object) -> object:
    """What `factory` would have built, on `vendor`: the providers factory builds a list."""
    return [Provider("clearbit", vendor)] if factory == "enrichment_providers" else vendor


@pytest.mark.parametrize(("function", "step_id", "factory", "make"), CASES)
def test_tool_records_its_outcome_and_reports_once(fakes, function, step_id, factory, make):
    store, queue = fakes
    vendor = Recorded(make())
    client = tool_client(function, **{factory: _injected(factory, vendor)})
    run, call = _dispatched(store, step_id)
    response = client.post("/", json=call, headers=QUEUED)
    assert response.status_code == 200 and response.get_json() == {"status": "done", "ok": True}
    assert vendor.used, "the injected fake did the work"
    outcome = store.outcome(run.run_id, step_id)
    assert outcome.ok and outcome.attempts == 1
    assert [t.name for t in queue.on("orchestrator")] == [f"{run.run_id}-{step_id}-g1-done"]
    # Delivered again (at least once): the stored outcome is reported, the vendor untouched.
    used = list(vendor.used)
    again = client.post("/", json=call, headers=QUEUED)
    assert again.get_json()["status"] == "already_done"
    assert vendor.used == used
    assert store.outcome(run.run_id, step_id) == outcome
    assert len(queue.on("orchestrator")) == 1


def test_duplicate_delivery_calls_the_vendor_once(fakes):
    chat = FakeChat()
    client = tool_client("slack", SlackChat=chat)
    _, call = _dispatched(fakes[0], "slack")
    for _ in range(3):
        assert client.post("/", json=call, headers=QUEUED).status_code == 200
    assert len(chat.messages) == 1


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"not json", "Invalid JSON"),
        (b'{"run_id": "r"}', "Field required"),
    ],
)
def test_malformed_task_is_refused_without_touching_any_run(fakes, body, reason):
    store, queue = fakes
    jira = Recorded(FakeJira())
    client = tool_client("jira", JiraClient=jira)
    run, _ = _dispatched(store, "jira")
    direct = client.post("/", data=body, content_type="application/json")
    assert direct.status_code == 400 and reason in direct.get_json()["error"]["message"]
    queued = client.post("/", data=body, content_type="application/json", headers=QUEUED)
    assert queued.status_code == 200 and queued.get_json()["status"] == "rejected"
    assert store.load(run.run_id) == run and queue.on("orchestrator") == []
    assert len(store.rejections()) == 2
    assert jira.used == []


def test_tool_refuses_a_call_for_another_function(fakes):
    chat = Recorded(FakeChat())
    client = tool_client("slack", SlackChat=chat)
    _, call = _dispatched(fakes[0], "jira")
    response = client.post("/", json=call)
    assert response.status_code == 400
    assert "does not run" in response.get_json()["error"]["message"]
    assert chat.used == []


def test_stored_args_that_do_not_fit_fail_the_step_without_the_vendor(fakes):
    store, queue = fakes
    jira = Recorded(FakeJira())
    client = tool_client("jira", JiraClient=jira)
    run, task = _dispatched(store, "jira", key="lower-case")
    response = client.post("/", json=task, headers=QUEUED)
    assert response.get_json() == {"status": "done", "ok": False}
    # The task was the orchestrator's; the stored plan is wrong: a failure the run shows.
    outcome = store.outcome(run.run_id, "jira")
    assert outcome.error.code == "invalid_input"
    assert "create_jira_project args" in outcome.error.message and "key" in outcome.error.message
    assert jira.used == [] and store.rejections() == []
    assert [t.name for t in queue.on("orchestrator")] == [f"{run.run_id}-jira-g1-done"]


def test_retryable_failure_asks_the_queue_to_retry(fakes):
    store, queue = fakes
    jira = FakeJira()
    jira.fail_next = VendorTimeout("read timed out")
    client = tool_client("jira", JiraClient=jira)
    run, call = _dispatched(store, "jira")
    response = client.post("/", json=call, headers=QUEUED)
    assert response.status_code == 503
    assert store.outcome(run.run_id, "jira") is None and queue.on("orchestrator") == []
    assert [e.kind for e in store.events(run.run_id)] == ["step.retry"]
    # The event says when the queue tries again, out of how many, and when it would give up.
    outlook = RetryOutlook.from_detail(store.events(run.run_id)[0].detail)
    jira_queue = QUEUES["tool-jira"]
    assert outlook is not None and (outlook.attempt, outlook.max_attempts) == (
        1,
        jira_queue.max_attempts,
    )
    assert outlook.next_attempt_at < outlook.gives_up_at
    # The next delivery finds the project its predecessor made, and does not make another.
    retry = client.post("/", json=call, headers={**QUEUED, "X-CloudTasks-TaskRetryCount": "1"})
    assert retry.status_code == 200 and jira.creates == 1
    assert store.outcome(run.run_id, "jira").attempts == 2


def test_task_of_a_cancelled_run_does_nothing(fakes):
    store, _ = fakes
    chat = FakeChat()
    client = tool_client("slack", SlackChat=chat)
    run, call = _dispatched(store, "slack")
    store.transition(core.cancel(run, "client withdrew", utcnow()).run, expected_version=1)
    response = client.post("/", json=call, headers=QUEUED)
    assert response.get_json()["status"] == "skipped" and chat.messages == []
    assert store.load(run.run_id).status is RunStatus.CANCELLED
    assert [e.kind for e in store.events(run.run_id)] == ["step.skipped"]


def test_task_for_a_missing_run_is_refused_and_recorded(fakes):
    store, queue = fakes
    chat = Recorded(FakeChat())
    client = tool_client("slack", SlackChat=chat)
    _, call = _dispatched(store, "slack")
    call["run_id"] = "run-gone"
    response = client.post("/", json=call, headers=QUEUED)
    assert response.status_code == 200 and response.get_json()["status"] == "rejected"
    # Acknowledged and kept as a rejection: Slack never asked, nothing recorded for the run.
    (rejection,) = store.rejections()
    assert "run-gone does not exist" in rejection.reason
    assert chat.used == []
    assert store.outcome("run-gone", "slack") is None and store.events("run-gone") == []
    assert queue.on("orchestrator") == []


def test_rate_limited_vendor_asks_the_queue_to_wait_as_long_as_it_said(fakes):
    from shared.errors import RateLimited

    class SlowDown(FakeChat):
        def post_message(self, **message):  # type: ignore[no-untyped-def, override]
            raise RateLimited("ratelimited", retry_after=7)

    client = tool_client("slack", SlackChat=SlowDown())
    _, call = _dispatched(fakes[0], "slack")
    response = client.post("/", json=call, headers=QUEUED)
    assert response.status_code == 429 and response.headers["Retry-After"] == "7"

"""A tool task names a step; everything else comes from the store. A task that disagrees with
the store, or carries anything but the reference, is refused, recorded, and reaches no vendor."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from orchestrator import core
from shared.model import (
    OrchestratorTask,
    RunState,
    StepOutcome,
    StepStatus,
    ToolTask,
    utcnow,
)
from shared.registry import TOOLS
from shared.runtime import Runtime, install
from shared.settings import Settings
from shared.tool_endpoint import call_from_store
from tests.conftest import make_run
from tests.fakes import (
    FakeChat,
    FakeDirectory,
    FakeJira,
    FakeLanguageModel,
    FakeMail,
    FakeStateStore,
    FakeTaskQueue,
)
from tests.functions.conftest import Recorded, client_of, tool_client
from tools.clearbit.core import Provider

QUEUED = {
    "X-CloudTasks-QueueName": "tool-sendgrid",
    "X-CloudTasks-TaskName": "t-1",
    "X-CloudTasks-TaskRetryCount": "0",
}
DRAFT = {
    "subject": "Welcome aboard, Acme Corp!",
    "text": "Hello Ada, welcome aboard! Your project starts next week.",
    "html": "<p>Hello Ada, welcome aboard! Your project starts next week.</p>",
    "source": "model",
}


def _ok(run: RunState, step_id: str, **output: Any) -> StepOutcome:
    tool = next(s.tool for s in run.plan if s.step_id == step_id)
    return StepOutcome(run_id=run.run_id, step_id=step_id, tool=tool, ok=True, output=output)


def _stored(store: FakeStateStore, **statuses: StepStatus) -> RunState:
    """A started run in the store, its steps at `statuses` (succeeded ones in the ledger)."""
    run = core.decide(make_run(), OrchestratorTask(run_id="x", kind="start"), {}, utcnow()).run
    steps = {
        sid: s.model_copy(update={"status": statuses.get(sid, StepStatus.PENDING)})
        for sid, s in run.steps.items()
    }
    run, _ = store.create_run(run.evolve(steps=steps))
    for sid, status in statuses.items():
        if status is StepStatus.SUCCEEDED:
            output = DRAFT if sid == "draft" else {"done": sid}
            store.record_outcome(_ok(run, sid, **output))
    return run


def _reference(run: RunState, step_id: str, /, **changes: Any) -> dict[str, Any]:
    tool = next(s.tool for s in run.plan if s.step_id == step_id)
    task = ToolTask(run_id=run.run_id, step_id=step_id, tool=tool, generation=1)
    return {**task.model_dump(mode="json"), **changes}


# The email step dispatched, its draft in the ledger: the window the issue's attacker uses.
EMAIL_DISPATCHED = {
    "enrich": StepStatus.SUCCEEDED,
    "jira": StepStatus.SUCCEEDED,
    "draft": StepStatus.SUCCEEDED,
    "email": StepStatus.DISPATCHED,
}


def test_the_email_step_sends_the_ledgers_draft_to_the_runs_contact(fakes):
    store, queue = fakes
    mail = FakeMail()
    client = tool_client("sendgrid", SendGridMailer=mail)
    run = _stored(store, **EMAIL_DISPATCHED)
    response = client.post("/", json=_reference(run, "email"), headers=QUEUED)
    assert response.get_json() == {"status": "done", "ok": True}
    (sent,) = mail.sent
    assert sent["to_email"] == run.request.contact_email and sent["subject"] == DRAFT["subject"]


def test_the_issues_forged_tool_call_is_refused_and_sends_nothing(fakes):
    """The old payload, a ToolCall naming its own recipient and draft, posted while the email
    step is dispatched: refused as it stands (not a reference), nothing sent or recorded."""
    store, queue = fakes
    mail = Recorded(FakeMail())
    client = tool_client("sendgrid", SendGridMailer=mail)
    run = _stored(store, **EMAIL_DISPATCHED)
    forged = {
        **_reference(run, "email"),
        "args": {},
        "inputs": {
            "draft": {
                "subject": "Urgent: update your payment details",
                "text": "Pay here: https://evil.example/pay",
                "html": '<p><a href="https://evil.example/pay">Pay</a></p>',
            }
        },
        "request": {**run.request.model_dump(mode="json"), "contact_email": "victim@other.example"},
    }
    for headers in ({}, QUEUED):
        response = client.post("/", json=forged, headers=headers)
        assert response.get_json()["status"] == "rejected"
    assert mail.used == []
    assert store.outcome(run.run_id, "email") is None and queue.on("orchestrator") == []
    assert store.load(run.run_id) == run
    assert len(store.rejections()) == 2
    assert all("Extra inputs are not permitted" in r.reason for r in store.rejections())


DISAGREEMENTS = [
    # (what the store holds, the task's changes, what the refusal says)
    ("unknown run", EMAIL_DISPATCHED, {"run_id": "run-0000000000000000000f"}, "does not exist"),
    ("step not in the plan", EMAIL_DISPATCHED, {"step_id": "wire_money"}, "not in the run's plan"),
    (
        "not the plan's tool for the step",
        EMAIL_DISPATCHED,
        {"step_id": "draft", "tool": "send_welcome_email"},
        "runs draft_welcome_email",
    ),
    ("a future generation", EMAIL_DISPATCHED, {"generation": 2}, "only at 1"),
    (
        "the step awaiting approval",
        {"enrich": StepStatus.SUCCEEDED, "draft": StepStatus.SUCCEEDED},
        {},
        "never dispatched",
    ),
]


@pytest.mark.parametrize(
    ("statuses", "changes", "says"),
    [case[1:] for case in DISAGREEMENTS],
    ids=[case[0] for case in DISAGREEMENTS],
)
def test_a_task_that_disagrees_with_the_store_is_refused_and_recorded(
    fakes, statuses, changes, says
):
    store, queue = fakes
    mail = Recorded(FakeMail())
    client = tool_client("sendgrid", SendGridMailer=mail)
    run = _stored(store, **statuses)
    task = _reference(run, "email", **changes)
    response = client.post("/", json=task, headers=QUEUED)
    # Acknowledged (the queue would redeliver a 4xx until its attempts ran out), and kept.
    assert response.status_code == 200 and response.get_json()["status"] == "rejected"
    (rejection,) = store.rejections()
    assert says in rejection.reason and rejection.source == "tool-sendgrid"
    assert mail.used == [] and queue.on("orchestrator") == []
    assert store.outcome(run.run_id, "email") is None
    assert store.load(run.run_id) == run
    refused = [e for e in store.events(run.run_id) if e.kind == "task.refused"]
    if task["run_id"] == run.run_id:
        (event,) = refused
        assert says in event.detail["reason"] and event.actor == "tool-sendgrid"
    else:
        assert refused == []


def test_a_stale_generation_is_refused_after_a_resume(fakes):
    store, queue = fakes
    mail = Recorded(FakeMail())
    client = tool_client("sendgrid", SendGridMailer=mail)
    run = _stored(store, **EMAIL_DISPATCHED)
    email = run.steps["email"].model_copy(update={"generation": 3})
    store.transition(run.evolve(steps={**run.steps, "email": email}), expected_version=1)
    response = client.post("/", json=_reference(run, "email", generation=2), headers=QUEUED)
    assert response.get_json()["status"] == "rejected"
    assert "stale task of generation 2; step is at 3" in store.rejections()[0].reason
    assert mail.used == [] and store.outcome(run.run_id, "email") is None


def test_the_send_step_reads_only_the_steps_it_reads(fakes):
    """Inputs come from the ledger, for the steps the tool reads: another step's record there
    (jira's, enrichment's) is not handed to the core."""
    store, _ = fakes
    run = _stored(store, **EMAIL_DISPATCHED)
    call = call_from_store(
        run, ToolTask.model_validate(_reference(run, "email")), store.outcomes(run.run_id)
    )
    assert set(call.inputs) == set(TOOLS["send_welcome_email"].reads) == {"draft"}
    assert call.inputs["draft"] == DRAFT and call.request == run.request
    assert call.args == next(s.args for s in run.plan if s.step_id == "email")


# -- Fuzzing: random JSON, hostile strings, the right shape with wrong values -----------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)
HOSTILE = st.sampled_from(
    [
        "",
        "\x00",
        "../../etc/passwd",
        "run-' OR 1=1 --",
        "<script>alert(1)</script>",
        "\u202eesrever",
        "x" * 5000,
        "💥" * 50,
        "victim@other.example",
        "https://evil.example/pay",
        "send_welcome_email",
        "email",
    ]
) | st.text(max_size=60)
FIELDS = ("run_id", "step_id", "tool", "generation")


def _mostly(own: list[Any], other: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """The run's own values four times in five, else a near miss or something hostile."""
    return st.integers(0, 4).flatmap(lambda n: st.sampled_from(own) if n else other)


@st.composite
def right_shape_wrong_values(draw: st.DrawFn, run: RunState) -> dict[str, Any]:
    """A task for `run` whose every field is most often the run's own, else a near miss or
    hostile; now and then a field missing, or the old payload's fields riding along."""
    task: dict[str, Any] = {
        "run_id": draw(
            _mostly([run.run_id], st.sampled_from([run.run_id + "x", "run-gone"]) | HOSTILE)
        ),
        "step_id": draw(
            _mostly([*run.steps], st.sampled_from(["Email", "email ", "plan"]) | HOSTILE)
        ),
        "tool": draw(_mostly([*TOOLS], st.just("send_email") | HOSTILE)),
        "generation": draw(
            _mostly([1, 2], st.sampled_from([0, -1, 10**12, "1", 1.5, True, None]) | st.integers())
        ),
    }
    if draw(st.integers(0, 9)) == 0:
        del task[draw(st.sampled_from(FIELDS))]
    if draw(st.integers(0, 4)) == 0:
        extra = draw(
            st.dictionaries(
                st.sampled_from(["args", "inputs", "request", "output", "ok", "__proto__"]),
                JSON,
                min_size=1,
                max_size=2,
            )
        )
        task.update(extra)
    return task


def _bodies(run: RunState) -> st.SearchStrategy[bytes]:
    shaped = right_shape_wrong_values(run).map(lambda v: json.dumps(v).encode())
    return st.one_of(
        st.binary(max_size=200), JSON.map(lambda v: json.dumps(v).encode()), shaped, shaped, shaped
    )


# No task for this run has anything to run: enrichment and the draft succeeded (their own
# references are redeliveries), Jira, the email and Slack were never dispatched.
FUZZED = {"enrich": StepStatus.SUCCEEDED, "draft": StepStatus.SUCCEEDED}
FUNCTIONS = ("clearbit", "jira", "sendgrid", "slack")


@hypothesis_settings(max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_no_tool_task_body_is_a_500_a_vendor_call_or_an_outcome(data):
    queue = FakeTaskQueue()
    store = FakeStateStore(queue)
    run = _stored(store, **FUZZED)
    directory = Recorded(FakeDirectory({}))
    vendors = {
        "SendGridMailer": Recorded(FakeMail()),
        "language_model": Recorded(FakeLanguageModel()),
        "SlackChat": Recorded(FakeChat()),
        "JiraClient": Recorded(FakeJira()),
        "enrichment_providers": [Provider("clearbit", directory)],
    }
    install(Runtime(Settings(agent_reasoning=False), store, queue, overrides=vendors))
    body = data.draw(_bodies(run))
    try:  # most often the function that serves the body's tool, as a queue would deliver it
        own = [TOOLS[json.loads(body)["tool"]].function]
    except (ValueError, KeyError, TypeError):
        own = [*FUNCTIONS]
    function = data.draw(_mostly(own, st.sampled_from(FUNCTIONS)))
    client = _clients()[function]
    headers = data.draw(
        st.sampled_from([{}, {**QUEUED, "X-CloudTasks-QueueName": f"tool-{function}"}])
    )
    response = client.post("/", data=body, content_type="application/json", headers=headers)

    assert response.status_code in (200, 400), response.get_data()
    status = response.get_json()["status"]
    # What refused it, for --hypothesis-show-statistics: the fuzz should reach every check.
    event(
        status + ": " + " ".join(store.rejections()[0].reason.split()[:3])
        if store.rejections()
        else status
    )
    if status == "skipped":  # a finished step's own reference: a redelivery
        assert [e.kind for e in store.events(run.run_id)] == ["step.skipped"]
        assert store.rejections() == []
    else:
        assert status == "rejected"
        assert len(store.rejections()) == 1, "every refusal is recorded"
    assert all(v.used == [] for v in (*vendors.values(), directory) if isinstance(v, Recorded))
    assert store.outcomes(run.run_id).keys() == set(FUZZED)
    assert queue.on("orchestrator") == []
    assert store.load(run.run_id) == run


_APPS: dict[str, Any] = {}


def _clients() -> dict[str, Any]:
    """One test client per function for the whole fuzz (each example installs its runtime)."""
    if not _APPS:
        for function in FUNCTIONS:
            _APPS[function] = client_of(f"tools/{function}/main.py", "run_tool", signed=True)
    return _APPS

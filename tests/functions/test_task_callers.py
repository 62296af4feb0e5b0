"""Only the queue calls the orchestrator's and the tools' task targets: a forged, unsigned,
tampered or replayed task is refused before it touches any state or any vendor."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from orchestrator import service
from shared.model import RunState, StepStatus
from shared.runtime import Runtime, install
from shared.settings import Settings
from shared.task_signing import SIGNATURE_HEADER, TASK_NAME_HEADER, TaskSigner, signer_for
from tests.conftest import make_request
from tests.fakes import FakeChat, FakeMail, FakeStateStore, FakeTaskQueue
from tests.functions.conftest import Recorded, client_of
from tests.functions.test_tool_mains import _dispatched

JSON = "application/json"
WINDOW = 300


def _install(settings: Settings, **overrides: object) -> tuple[Recorded, FakeTaskQueue]:
    queue = FakeTaskQueue()
    store = Recorded(FakeStateStore(queue))
    install(Runtime(settings, store, queue, overrides))  # type: ignore[arg-type]
    return store, queue


@pytest.fixture
def local(tmp_path) -> Settings:
    return Settings(home=tmp_path / "home", agent_reasoning=False)


def _signer(settings: Settings) -> TaskSigner:
    return signer_for(settings.home, settings.task_signature_window)


def _forged_email(store: Recorded) -> tuple[bytes, str]:
    """A dispatched email step, and the attacker's version of its task: another recipient."""
    run, call = _dispatched(store.fake, "email")
    # The task carries references only: the forger adds the request and the draft it wants.
    call["request"] = {**run.request.model_dump(), "contact_email": "victim@elsewhere.example"}
    call["inputs"] = {"draft": {"html": '<a href="https://phish.example">sign in</a>'}}
    return json.dumps(call).encode(), f"{run.run_id}-email-g1"


def _attacks(settings: Settings, body: bytes, name: str) -> dict[str, tuple[int, dict[str, str]]]:
    """Each attack on a task target: its headers, and the status it must get."""
    real = _signer(settings)
    stranger = TaskSigner(b"an attacker's own key, 32 bytes!")
    now = int(time.time())
    return {
        "unsigned": (401, {}),
        "forged": (403, {SIGNATURE_HEADER: stranger.signature(body, name)}),
        "tampered body": (403, {SIGNATURE_HEADER: real.signature(body + b" ", name)}),
        "tampered name": (403, {SIGNATURE_HEADER: real.signature(body, name + "-x")}),
        "replayed": (403, {SIGNATURE_HEADER: real.signature(body, name, at=now - WINDOW - 5)}),
        "dated ahead": (403, {SIGNATURE_HEADER: real.signature(body, name, at=now + WINDOW + 5)}),
    }


@pytest.mark.parametrize(
    "attack", ["unsigned", "forged", "tampered body", "tampered name", "replayed", "dated ahead"]
)
def test_forged_email_task_is_refused_and_sends_nothing(local, attack):
    mail = Recorded(FakeMail())
    store, queue = _install(local, SendGridMailer=mail)
    body, name = _forged_email(store)
    store.used.clear()
    before = dict(queue.tasks)
    client = client_of("tools/sendgrid/main.py", "run_tool")
    status, headers = _attacks(local, body, name)[attack]

    response = client.post(
        "/", data=body, content_type=JSON, headers={TASK_NAME_HEADER: name, **headers}
    )

    assert response.status_code == status
    assert response.get_json()["error"]["code"] in ("unauthenticated", "permission_denied")
    # Refused first: no state read or written (not even a rejection), no vendor asked.
    assert store.used == [] and queue.tasks == before and mail.used == []


def test_the_dispatchers_own_signature_lets_the_same_task_through(local):
    mail = FakeMail()
    store, queue = _install(local, SendGridMailer=mail)
    run, call = _dispatched(store.fake, "email")
    body, name = json.dumps(call).encode(), f"{run.run_id}-email-g1"
    client = client_of("tools/sendgrid/main.py", "run_tool")
    headers = {TASK_NAME_HEADER: name, **_signer(local).headers(body, name)}
    response = client.post("/", data=body, content_type=JSON, headers=headers)
    assert response.status_code == 200 and response.get_json()["ok"] is True
    assert len(mail.sent) == 1


@pytest.mark.parametrize(
    ("source", "target"),
    [("orchestrator/main.py", "handle_task")]
    + [(f"tools/{f}/main.py", "run_tool") for f in ("clearbit", "jira", "sendgrid", "slack")],
)
@pytest.mark.parametrize(
    "attack", ["unsigned", "forged", "tampered body", "tampered name", "replayed"]
)
def test_every_task_target_refuses_a_task_the_queue_did_not_sign(local, source, target, attack):
    store, queue = _install(local)
    body = json.dumps({"run_id": "run-1", "kind": "start"}).encode()
    status, headers = _attacks(local, body, "run-1-start")[attack]
    response = client_of(source, target).post(
        "/", data=body, content_type=JSON, headers={TASK_NAME_HEADER: "run-1-start", **headers}
    )
    assert response.status_code == status
    assert store.used == [] and queue.tasks == {}


@pytest.mark.parametrize(
    ("content_type", "status"),
    [(None, 415), ("text/plain", 415), ("application/x-www-form-urlencoded", 415), (JSON, 413)],
)
def test_task_targets_refuse_other_types_and_big_bodies_before_reading_them(
    local, content_type, status
):
    chat = Recorded(FakeChat())
    store, queue = _install(local, SlackChat=chat)
    body = json.dumps({"run_id": "r", "pad": "x" * local.max_body_bytes}).encode()
    headers = {TASK_NAME_HEADER: "t", **_signer(local).headers(body, "t")}  # even signed
    for client in (
        client_of("tools/slack/main.py", "run_tool"),
        client_of("orchestrator/main.py", "handle_task"),
    ):
        kwargs: dict[str, Any] = {"content_type": content_type} if content_type else {}
        response = client.post("/", data=body, headers=headers, **kwargs)
        assert response.status_code == status
    assert store.used == [] and queue.tasks == {} and chat.used == []


def test_a_chunked_body_over_the_cap_is_refused_once_the_cap_is_read(local):
    store, queue = _install(local)
    body = b'{"run_id": "' + b"x" * (local.max_body_bytes + 10) + b'"}'
    response = client_of("orchestrator/main.py", "handle_task").post(
        "/",
        input_stream=__import__("io").BytesIO(body),
        content_type=JSON,
        headers={TASK_NAME_HEADER: "t", **_signer(local).headers(body, "t")},
        environ_overrides={"wsgi.input_terminated": True},  # no Content-Length: chunked
    )
    assert response.status_code == 413
    assert store.used == [] and queue.tasks == {}


GCP = {
    "backend": "gcp",
    "functions_url": "https://us-central1-acme-prod.cloudfunctions.net",
    "tasks_service_account": "chimera-tasks@acme-prod.iam.gserviceaccount.com",
    "agent_reasoning": False,
}


def test_on_gcp_a_task_without_a_token_is_refused_even_with_require_identity_off(tmp_path):
    store, queue = _install(Settings(home=tmp_path, require_identity=False, **GCP))  # type: ignore[arg-type]
    body = {"run_id": "run-1", "kind": "start"}
    tasks = client_of("orchestrator/main.py", "handle_task")
    assert tasks.post("/", json=body).status_code == 401
    # A local signature means nothing there: the tasks come from Cloud Tasks, with a token.
    signed = _signer(Settings(home=tmp_path)).headers(json.dumps(body).encode(), "t")
    assert tasks.post("/", json=body, headers=signed).status_code == 401
    assert store.used == [] and queue.tasks == {}


def test_on_the_cloud_tasks_emulator_iam_alone_lets_tasks_in(tmp_path):
    # The emulator mints no ID tokens; nothing but a test points the tasks at one.
    settings = Settings(home=tmp_path, tasks_emulator_host="127.0.0.1:8123", **GCP)  # type: ignore[arg-type]
    store, _ = _install(settings)
    tasks = client_of("orchestrator/main.py", "handle_task")
    assert tasks.post("/", json={"run_id": "run-1", "kind": "start"}).status_code == 200
    # Read only: a task without a traceparent also reads the run's stored trace to continue it.
    assert set(store.used) == {"load"}


# --- Fuzzing: hostile headers and bodies -------------------------------------------------------

headers_made_up = st.dictionaries(
    st.sampled_from(
        [SIGNATURE_HEADER, TASK_NAME_HEADER, "X-CloudTasks-QueueName", "Authorization"]
    ),
    st.text(alphabet=st.characters(codec="latin-1", blacklist_characters="\r\n"), max_size=200),
)


@hypothesis_settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(headers=headers_made_up)
def test_no_made_up_signature_header_gets_in_or_crashes_the_target(local, headers):
    store, queue = _install(local)
    response = client_of("orchestrator/main.py", "handle_task").post(
        "/", json={"run_id": "run-1", "kind": "start"}, headers=headers
    )
    assert response.status_code in (401, 403)
    assert store.used == [] and queue.tasks == {}


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=20,
)
hostile_text = st.sampled_from(
    ["", " ", "../../etc/passwd", "run-\u0000", "'; DROP TABLE runs; --", "\u202e", "x" * 5000]
) | st.text(max_size=60)


def _tasks_for(run_id: str) -> st.SearchStrategy[dict[str, Any]]:
    """Orchestrator tasks near the real ones: the run's own id or another, every kind and more,
    the plan's steps or others, any generation, and fields no task has."""
    return st.fixed_dictionaries(
        {
            "run_id": st.just(run_id) | hostile_text,
            "kind": st.sampled_from(["start", "step_finished", "watchdog"]) | hostile_text,
        },
        optional={
            "step_id": st.none()
            | st.sampled_from(["enrich", "jira", "draft", "email", "slack"])
            | hostile_text,
            "generation": st.none() | st.integers(min_value=-(2**63), max_value=2**63),
            "surprise": json_values,
        },
    )


def _consistent(store: FakeStateStore, queue: FakeTaskQueue, run_ids: set[str]) -> None:
    """No run made up or half changed: the same runs, each valid, each dispatched step with
    its task queued, and every queued task for a run that exists."""
    assert set(store.runs) == run_ids
    for run in store.runs.values():
        RunState.model_validate(run.model_dump(mode="json"))
        if run.plan:
            assert set(run.steps) == {s.step_id for s in run.plan}
        for step_id, step in run.steps.items():
            if step.status is StepStatus.DISPATCHED:
                assert f"{run.run_id}-{step_id}-g{step.generation}" in queue.tasks
    for task in queue.tasks.values():
        assert task.payload.get("run_id") in run_ids


@hypothesis_settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_signed_hostile_bodies_never_crash_the_orchestrator_nor_leave_a_partial_run(local, data):
    queue = FakeTaskQueue()
    store = FakeStateStore(queue)
    rt = Runtime(local, store, queue)
    install(rt)
    run, _ = service.submit(rt, make_request(), source="http")
    payload = data.draw(
        _tasks_for(run.run_id).map(json.dumps)
        | json_values.map(json.dumps)
        | st.binary(max_size=300).map(lambda b: b.decode("latin-1")),
        label="body",
    )
    body = payload.encode("utf-8", "surrogatepass")
    name = data.draw(st.sampled_from(["", f"{run.run_id}-start", "t-1"]), label="task name")
    queued = data.draw(st.booleans(), label="from the queue")
    headers = {TASK_NAME_HEADER: name, **_signer(local).headers(body, name)}
    if queued:
        headers["X-CloudTasks-QueueName"] = "orchestrator"
    tasks = client_of("orchestrator/main.py", "handle_task")

    response = tasks.post("/", data=body, content_type=JSON, headers=headers)

    assert response.status_code < 500 or response.status_code == 503, response.get_data()
    answer = response.get_json()
    assert isinstance(answer, dict)
    if response.status_code >= 400:
        assert answer["error"]["message"]  # a clear error, never a bare status
    _consistent(store, queue, {run.run_id})

"""The orchestrator's three targets through the Functions Framework."""

from __future__ import annotations

import base64
import json
from datetime import timedelta

import pytest

from shared.model import OrchestratorTask, RunStatus, utcnow
from tests.functions.conftest import client_of, signed_in

REQUEST = {
    "company_name": "Acme Corp",
    "domain": "acme.example",
    "contact_name": "Ada",
    "contact_email": "ada@acme.example",
    "goal": "Roll out analytics",
    "slack_channel": "#client-onboarding",
}


@pytest.fixture
def intake(fakes):
    return signed_in(client_of("orchestrator/main.py", "intake_http"))


@pytest.fixture
def tasks():
    return client_of("orchestrator/main.py", "handle_task", signed=True)


@pytest.fixture
def pubsub():
    return client_of("orchestrator/main.py", "intake_pubsub")


def test_intake_creates_a_run_and_queues_its_start(fakes, intake):
    store, queue = fakes
    response = intake.post("/runs", json=REQUEST)
    assert response.status_code == 202
    run_id = response.get_json()["run_id"]
    assert store.load(run_id).status is RunStatus.PENDING
    names = {t.name: t for t in queue.on("orchestrator")}
    assert set(names) == {f"{run_id}-start", f"{run_id}-start-watchdog"}
    # The watchdog wakes only once the start task's queue would have given up on it.
    assert names[f"{run_id}-start-watchdog"].schedule_time > utcnow() + timedelta(minutes=1)


def test_same_request_twice_is_one_run(fakes, intake):
    store, _ = fakes
    first = intake.post("/runs", json=REQUEST).get_json()
    second = intake.post("/runs", json=REQUEST)
    assert second.status_code == 200
    assert second.get_json() == {**first, "created": False}
    assert len(store.runs) == 1


def test_reused_request_id_with_other_content_is_a_conflict(fakes, intake):
    intake.post("/runs", json={**REQUEST, "request_id": "r-1"})
    response = intake.post("/runs", json={**REQUEST, "request_id": "r-1", "domain": "b.example"})
    assert response.status_code == 409
    assert response.get_json()["error"]["code"] == "request_id_reused"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({**REQUEST, "contact_email": "not-an-email"}, "contact_email"),
        ({**REQUEST, "domain": "no spaces.com"}, "domain"),
        ({k: v for k, v in REQUEST.items() if k != "company_name"}, "company_name"),
        ({**REQUEST, "slack_channel": "#Bad Channel!"}, "slack_channel"),
        ({**REQUEST, "surprise": 1}, "surprise"),
    ],
)
def test_malformed_intake_gets_400_with_field_errors_and_creates_nothing(
    fakes, intake, body, field
):
    store, queue = fakes
    response = intake.post("/runs", json=body)
    assert response.status_code == 400
    assert field in response.get_json()["error"]["fields"]
    assert store.runs == {} and queue.tasks == {}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("company_name", "Acme\u0000Corp"),
        ("company_name", "Acme\u0007"),
        ("contact_name", "Ada\u009bLovelace"),
        ("company_name", "Acme\nCorp"),
        ("goal", "Roll out\u001b[31m analytics"),
        ("company_name", "Acme \u202eproC"),
        ("goal", "x" * 2001),
        ("request_id", "r\u0000"),
    ],
)
def test_control_characters_and_overlong_fields_are_refused_at_the_intake(
    fakes, intake, field, value
):
    store, queue = fakes
    response = intake.post("/runs", json={**REQUEST, field: value})
    assert response.status_code == 400
    fields = response.get_json()["error"]["fields"]
    assert list(fields) == [field] and fields[field]
    assert store.runs == {} and queue.tasks == {}


def test_control_characters_in_a_pubsub_message_are_recorded_as_its_rejection(fakes, pubsub):
    store, queue = fakes
    body = json.dumps({**REQUEST, "company_name": "Acme\u0000"}).encode()
    assert _push(pubsub, body).status_code == 200
    assert store.runs == {} and queue.tasks == {}
    assert "company_name" in store.rejections()[0].reason


def test_unicode_names_and_an_internationalised_domain_start_a_run(fakes, intake):
    store, _ = fakes
    body = {
        **REQUEST,
        "company_name": "Zürich 東京 🚀",
        "domain": "münchen.de",
        "contact_email": "anna@münchen.de",
    }
    response = intake.post("/runs", json=body)
    assert response.status_code == 202
    run = store.load(response.get_json()["run_id"])
    assert run.request.company_name == "Zürich 東京 🚀"
    assert run.request.domain == "xn--mnchen-3ya.de"


def test_intake_refuses_a_body_that_is_not_a_json_object(fakes, intake):
    response = intake.post("/runs", data="[1, 2]", content_type="application/json")
    assert response.status_code == 400
    assert fakes[0].runs == {}


def test_run_can_be_read_back_and_missing_runs_are_404(fakes, intake):
    run_id = intake.post("/runs", json=REQUEST).get_json()["run_id"]
    shown = intake.get(f"/runs/{run_id}")
    assert shown.status_code == 200
    assert shown.get_json()["run_id"] == run_id and shown.get_json()["status"] == "pending"
    assert intake.get("/runs/run-nope").status_code == 404
    assert [r["run_id"] for r in intake.get("/runs").get_json()["runs"]] == [run_id]


def _push(client, data: bytes, message_id: str = "m-1"):
    envelope = {
        "message": {"data": base64.b64encode(data).decode(), "messageId": message_id},
        "subscription": "projects/p/subscriptions/s",
    }
    return client.post(
        "/",
        json=envelope,
        headers={
            "ce-id": message_id,
            "ce-source": "//pubsub.googleapis.com/projects/p/topics/t",
            "ce-type": "google.cloud.pubsub.topic.v1.messagePublished",
            "ce-specversion": "1.0",
        },
    )


def test_pubsub_message_starts_a_run_once_when_redelivered(fakes, pubsub):
    store, _ = fakes
    assert _push(pubsub, json.dumps(REQUEST).encode()).status_code == 200
    assert _push(pubsub, json.dumps(REQUEST).encode()).status_code == 200
    assert len(store.runs) == 1


@pytest.mark.parametrize("data", [b"{not json", b'{"company_name": "x"}', b"\xff\xfe"])
def test_unparseable_pubsub_message_is_acknowledged_and_recorded(fakes, pubsub, data):
    store, _ = fakes
    assert _push(pubsub, data).status_code == 200
    assert store.runs == {}
    assert store.rejections()[0].source == "pubsub"


def test_start_task_plans_and_dispatches_enrichment(fakes, intake, tasks):
    store, queue = fakes
    run_id = intake.post("/runs", json=REQUEST).get_json()["run_id"]
    start = OrchestratorTask(run_id=run_id, kind="start").model_dump()
    assert tasks.post("/", json=start).status_code == 200
    assert store.load(run_id).status is RunStatus.RUNNING
    assert [t.name for t in queue.on("tool-clearbit")] == [f"{run_id}-enrich-g1"]
    # Redelivered: no second decision, no second dispatch.
    assert tasks.post("/", json=start).get_json()["status"] == "no_change"
    assert len(queue.on("tool-clearbit")) == 1


def test_corrupt_task_from_the_queue_is_acknowledged_and_recorded(fakes, tasks):
    store, _ = fakes
    response = tasks.post(
        "/",
        data=b'{"run_id": 5}',
        content_type="application/json",
        headers={"X-CloudTasks-TaskName": "t-1", "X-CloudTasks-QueueName": "orchestrator"},
    )
    assert response.status_code == 200
    assert response.get_json()["status"] == "rejected"
    assert store.rejections()[0].source == "orchestrator"


def test_corrupt_task_from_a_direct_caller_is_a_400(fakes, tasks):
    store, queue = fakes
    response = tasks.post("/", data=b"garbage", content_type="application/json")
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "invalid_task"
    # Refused, and kept as a rejection as a queued one is: nothing else happens.
    (rejection,) = store.rejections()
    assert rejection.source == "orchestrator" and rejection.excerpt == "garbage"
    assert store.runs == {} and queue.tasks == {}


def test_task_for_a_missing_run_is_acknowledged(fakes, tasks):
    store, queue = fakes
    response = tasks.post("/", json={"run_id": "run-gone", "kind": "start"})
    assert response.status_code == 200 and response.get_json()["status"] == "unknown_run"
    # Acknowledged so the queue stops, and dropped: no run made up, nothing queued.
    assert store.runs == {} and queue.tasks == {} and store.events("run-gone") == []

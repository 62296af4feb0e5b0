"""A whole onboarding on Google Cloud's emulators: a request published on Pub/Sub, state in
Firestore, every step a Cloud Tasks task to a function served by the Functions Framework, and
the vendors in the sandbox."""

from __future__ import annotations

from collections.abc import Iterator

import functions_framework
import pytest

from chimera.stack import function_sources
from sandbox.records import RecordStore
from sandbox.server import SandboxServer
from shared.firestore_state import FirestoreStateStore
from shared.model import RunStatus, StepStatus
from shared.runtime import Runtime, build_runtime, install
from shared.settings import Settings
from tests.conftest import make_request
from tests.emulators import FunctionsServer, wait_for

pytestmark = [pytest.mark.emulator, pytest.mark.slow]

RUN_TIMEOUT_S = 60


@pytest.fixture
def functions() -> Iterator[FunctionsServer]:
    apps = {
        name: functions_framework.create_app(source.target, str(source.source))
        for name, source in function_sources().items()
    }
    server = FunctionsServer(apps).start()
    yield server
    server.stop()


@pytest.fixture
def sandbox(tmp_path) -> Iterator[SandboxServer]:
    server = SandboxServer(tmp_path / "sandbox", faults="", port=0).start()
    yield server
    server.stop()


@pytest.fixture
def cloud(
    tmp_path, firestore_project, pubsub_project, tasks_project, functions, sandbox
) -> Iterator[Runtime]:
    settings = Settings(
        backend="gcp",
        home=tmp_path,
        state_url=f"firestore://{firestore_project}",
        gcp_project=tasks_project.project,
        gcp_location=tasks_project.location,
        functions_url=functions.url,
        tasks_emulator_host=tasks_project.host,
        sandbox_url=sandbox.url,
    )
    rt = build_runtime(settings)
    install(rt)
    yield rt
    install(None)


def _push_intake_to(functions: FunctionsServer, project: str) -> str:
    """The intake topic, pushed to the orchestrator-pubsub function as Eventarc would."""
    from google.cloud import pubsub_v1

    publisher, subscriber = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
    topic = publisher.topic_path(project, "chimera-intake")
    publisher.create_topic(name=topic)
    subscriber.create_subscription(
        request={
            "name": subscriber.subscription_path(project, "chimera-intake-push"),
            "topic": topic,
            "push_config": {"push_endpoint": f"{functions.url}/orchestrator-pubsub"},
        }
    )
    return topic


def test_onboarding_completes_when_requested_over_pubsub(cloud, functions, sandbox, pubsub_project):
    from google.cloud import pubsub_v1

    request = make_request(request_id="gcp-emulators-e2e")
    run_id = request.run_id()
    topic = _push_intake_to(functions, pubsub_project)
    pubsub_v1.PublisherClient().publish(topic, request.model_dump_json().encode()).result(10)

    store = cloud.store
    assert isinstance(store, FirestoreStateStore)
    wait_for(
        lambda: (run := store.load(run_id)) is not None and run.status.terminal,
        RUN_TIMEOUT_S,
        f"run {run_id} to finish",
    )

    run = store.load(run_id)
    assert run.status is RunStatus.SUCCEEDED, run.reason
    assert [s.status for s in run.steps.values()] == [StepStatus.SUCCEEDED] * 5
    steps = store.client.collection(f"runs/{run_id}/steps").get()
    # Beside the steps' outcomes, the model's checkpointed plan and revision, and what the
    # look at each side effect found.
    assert sorted(doc.id for doc in steps) == [
        "adapt-enrich",
        "draft",
        "email",
        "enrich",
        "jira",
        "plan",
        "slack",
        "verify-email-g1",
        "verify-jira-g1",
        "verify-slack-g1",
    ]
    assert {s.verification.status.value for s in run.steps.values() if s.verification} == {
        "verified"
    }
    assert all(doc.get("ok") for doc in steps)
    kinds = [e.kind for e in store.events(run_id)]
    assert kinds[:4] == ["run.created", "plan.proposed", "plan.accepted", "run.planned"]
    assert kinds[-1] == "run.succeeded"
    assert kinds.count("step.succeeded") == 5
    assert store.rejections() == []

    calls = [c for c in RecordStore(sandbox.home).list(run_id=run_id) if c["status"] < 300]
    actions = [c["action"] for c in calls]
    assert actions.count("project.create") == 1
    assert actions.count("mail.send") == 1
    assert actions.count("chat.postMessage") == 1
    # Every hop went through the emulators to the functions over HTTP.
    paths = {d.path for d in functions.recorder.deliveries}
    assert {f"/functions/{name}" for name in function_sources()} - paths == {
        "/functions/orchestrator-intake"
    }

"""What the Firestore adapter adds to the StateStore contract: a layout people can read in the
console, named databases, shared circuit breakers (the contract suite runs the rest)."""

from __future__ import annotations

from datetime import datetime

import pytest

from shared.cloud_tasks_queue import CloudTasksQueue
from shared.firestore_state import FirestoreStateStore
from shared.model import (
    BreakerState,
    Event,
    PlanStep,
    RunStatus,
    StepOutcome,
    StepSummary,
)
from shared.runtime import build_runtime
from shared.settings import Settings
from shared.state_urls import firestore_location
from tests.conftest import make_run
from tests.emulators import firestore_client
from tests.fakes import FakeTaskQueue


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("firestore://acme-prod", ("acme-prod", "(default)")),
        ("firestore://acme-prod/", ("acme-prod", "(default)")),
        ("firestore://acme-prod/chimera", ("acme-prod", "chimera")),
    ],
)
def test_url_names_the_project_and_database(url, expected):
    assert firestore_location(url) == expected


@pytest.mark.parametrize("url", ["firestore://", "firestore://p/d/x", "sqlite:///x.db"])
def test_url_is_refused_when_it_is_not_project_and_database(url):
    with pytest.raises(ValueError):
        firestore_location(url)


@pytest.mark.emulator
def test_runtime_is_firestore_and_cloud_tasks_when_the_state_url_is_firestore(firestore_project):
    settings = Settings(
        backend="gcp",
        state_url=f"firestore://{firestore_project}",
        gcp_project=firestore_project,
        functions_url="http://127.0.0.1:1/functions",
        tasks_emulator_host="127.0.0.1:1",  # never called here
    )
    rt = build_runtime(settings)
    assert isinstance(rt.store, FirestoreStateStore)
    assert isinstance(rt.queue, CloudTasksQueue) and rt.store.queue is rt.queue
    assert rt.store.client.project == firestore_project
    assert rt.store.load("run-missing") is None


@pytest.fixture
def store(firestore_project) -> FirestoreStateStore:
    return FirestoreStateStore(firestore_client(firestore_project), FakeTaskQueue())


@pytest.mark.emulator
def test_run_document_reads_plainly_when_opened_in_the_console(store):
    plan = (PlanStep(step_id="jira", tool="create_jira_project"),)
    run = make_run(plan=plan, steps={"jira": StepSummary(step_id="jira", tool=plan[0].tool)})
    run, _ = store.create_run(run, events=[Event(run_id=run.run_id, kind="run.created", actor="t")])
    store.record_outcome(StepOutcome(run_id=run.run_id, step_id="jira", tool="t", ok=True))
    doc = store.client.collection("runs").document(run.run_id).get().to_dict()
    assert doc["status"] == "pending" and doc["version"] == 1
    assert doc["request"]["company_name"] == "Acme Corp"
    assert doc["request_key"] == run.request_key
    assert doc["plan"][0]["step_id"] == "jira" and doc["steps"]["jira"]["status"] == "pending"
    assert isinstance(doc["created_at"], datetime) and isinstance(doc["updated_at"], datetime)
    step = store.client.document(f"runs/{run.run_id}/steps/jira").get().to_dict()
    assert step["ok"] is True and isinstance(step["finished_at"], datetime)
    (event,) = store.client.collection(f"runs/{run.run_id}/events").get()
    assert event.get("kind") == "run.created" and isinstance(event.get("at"), datetime)


@pytest.mark.emulator
def test_steps_keep_the_plan_order_when_loaded(store):
    ids = ["zeta", "alpha", "mid"]
    plan = tuple(PlanStep(step_id=s, tool="t") for s in ids)
    run, _ = store.create_run(
        make_run(plan=plan, steps={s: StepSummary(step_id=s, tool="t") for s in ids})
    )
    store.transition(run.evolve(status=RunStatus.RUNNING), expected_version=1)
    assert list(store.load(run.run_id).steps) == ids


@pytest.mark.emulator
def test_breaker_changes_once_per_version_when_instances_race(store):
    assert store.breaker("slack") == BreakerState(name="slack")
    opened = BreakerState(name="slack", state="open", failures=5)
    assert store.save_breaker(opened, expected_version=0) is True
    assert store.save_breaker(opened, expected_version=0) is False
    stored = store.breaker("slack")
    assert stored.state == "open" and stored.version == 1
    closed = stored.model_copy(update={"state": "closed", "failures": 0})
    assert store.save_breaker(closed, expected_version=1) is True
    assert store.save_breaker(closed, expected_version=1) is False
    assert store.breaker("slack").version == 2

"""The trace context through the deployed targets: the intake stores it with the run, each task
carries its dispatch's, and a delivery is that dispatch's child (or, for a task queued without
one, continues the run's stored trace)."""

from __future__ import annotations

import pytest
from opentelemetry.trace import SpanKind

from shared.model import RunStatus
from tests.functions.conftest import client_of, signed_in
from tests.telemetry_recorder import recorded

REQUEST = {
    "company_name": "Acme Corp",
    "domain": "acme.example",
    "contact_email": "ada@acme.example",
}


@pytest.fixture
def recording():
    with recorded() as recording:
        yield recording


def _hex(span_id: int) -> str:
    return f"{span_id:016x}"


def _start(fakes, recording):
    store, queue = fakes
    intake = signed_in(client_of("orchestrator/main.py", "intake_http"))
    run_id = intake.post("/runs", json=REQUEST).get_json()["run_id"]
    run = store.load(run_id)
    (start,) = [t for t in queue.on("orchestrator") if t.name == f"{run_id}-start"]
    return run, start


def test_the_intake_stores_the_root_span_with_the_run_before_its_first_task(fakes, recording):
    run, start = _start(fakes, recording)
    (root,) = [s for s in recording.spans() if s.name == "intake http"]
    assert root.parent is None and root.kind is SpanKind.SERVER
    assert run.trace_id == f"{root.context.trace_id:032x}"
    assert run.traceparent.split("-")[2] == _hex(root.context.span_id)
    # The start task carries its dispatch's context: a PRODUCER span under the root.
    (dispatch,) = [s for s in recording.spans() if s.attributes.get("chimera.task") == start.name]
    assert dispatch.kind is SpanKind.PRODUCER and dispatch.parent.span_id == root.context.span_id
    assert start.headers["traceparent"].startswith(
        f"00-{run.trace_id}-{_hex(dispatch.context.span_id)}-"
    )


def test_a_second_submission_keeps_the_runs_trace(fakes, recording):
    run, _ = _start(fakes, recording)
    intake = signed_in(client_of("orchestrator/main.py", "intake_http"))
    assert intake.post("/runs", json=REQUEST).status_code == 200
    store, _ = fakes
    assert store.load(run.run_id).traceparent == run.traceparent
    again = [s for s in recording.spans() if s.name == "intake http"][-1]
    assert f"{again.context.trace_id:032x}" == run.trace_id
    assert again.attributes["chimera.created"] is False


def test_a_delivery_is_the_child_of_the_dispatch_that_queued_its_task(fakes, recording):
    run, start = _start(fakes, recording)
    tasks = client_of("orchestrator/main.py", "handle_task", signed=True)
    headers = {**start.headers, "X-CloudTasks-TaskName": start.name}
    assert tasks.post("/", json=start.payload, headers=headers).status_code == 200
    (delivery,) = [s for s in recording.spans() if s.name == "orchestrator start"]
    assert delivery.kind is SpanKind.SERVER
    assert f"{delivery.context.trace_id:032x}" == run.trace_id
    assert _hex(delivery.parent.span_id) == start.headers["traceparent"].split("-")[2]
    assert delivery.attributes["chimera.run_id"] == run.run_id
    assert delivery.attributes["chimera.decision"] == RunStatus.RUNNING.value
    # What it dispatched (the first steps) is in the same trace, under it.
    store, queue = fakes
    steps = [t for t in queue.tasks.values() if t.queue != "orchestrator"]
    assert steps and all(t.headers["traceparent"].split("-")[1] == run.trace_id for t in steps)


def test_a_redelivery_is_a_new_span_in_the_same_trace(fakes, recording):
    run, start = _start(fakes, recording)
    tasks = client_of("orchestrator/main.py", "handle_task", signed=True)
    for retry in ("0", "1"):
        headers = {**start.headers, "X-CloudTasks-TaskRetryCount": retry}
        assert tasks.post("/", json=start.payload, headers=headers).status_code == 200
    first, second = [s for s in recording.spans() if s.name == "orchestrator start"]
    assert first.context.span_id != second.context.span_id
    assert first.context.trace_id == second.context.trace_id
    assert (first.attributes["chimera.attempt"], second.attributes["chimera.attempt"]) == (1, 2)


@pytest.mark.parametrize("traceparent", [None, "", "garbage", "00-0000-0000-00"])
def test_a_task_without_a_traceparent_continues_the_runs_stored_trace(
    fakes, recording, traceparent
):
    run, start = _start(fakes, recording)
    tasks = client_of("orchestrator/main.py", "handle_task", signed=True)
    headers = {} if traceparent is None else {"traceparent": traceparent}
    assert tasks.post("/", json=start.payload, headers=headers).status_code == 200
    (delivery,) = [s for s in recording.spans() if s.name == "orchestrator start"]
    assert f"{delivery.context.trace_id:032x}" == run.trace_id
    assert _hex(delivery.parent.span_id) == run.traceparent.split("-")[2]

"""The Cloud Tasks adapter: the requests it makes (on a fake client) and one real delivery
through the Cloud Tasks emulator to a function served by the Functions Framework."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta

import functions_framework
import pytest
from google.api_core import exceptions

from chimera.stack import function_sources
from shared.cloud_tasks_queue import (
    MAX_TASK_ID,
    CloudTasksQueue,
    QueueTimeout,
    QueueUnavailable,
    task_id,
)
from shared.errors import RetryableError
from shared.model import OrchestratorTask, RunStatus, Task
from shared.queues import ORCHESTRATOR_QUEUE
from shared.runtime import Runtime, install
from shared.settings import Settings
from shared.task_queue import TaskRef, cancel_all
from tests.conftest import make_run
from tests.emulators import FunctionsServer, tasks_client, wait_for
from tests.fakes import FakeStateStore, FakeTaskQueue

FUNCTIONS_URL = "https://us-central1-acme-prod.cloudfunctions.net"
ACCOUNT = "chimera-tasks@acme-prod.iam.gserviceaccount.com"


class FakeCloudTasks:
    """Records CreateTask requests; a name taken before is AlreadyExists, as in Cloud Tasks."""

    def __init__(self, error: Exception | None = None) -> None:
        self.requests: list = []
        self.deleted: list[str] = []
        self.error = error

    def create_task(self, *, request):  # type: ignore[no-untyped-def]
        if self.error:
            raise self.error
        if any(r.task.name == request.task.name for r in self.requests):
            raise exceptions.AlreadyExists(f"task {request.task.name} exists")
        self.requests.append(request)
        return request.task

    def delete_task(self, *, name):  # type: ignore[no-untyped-def]
        if not any(r.task.name == name for r in self.requests):
            raise exceptions.NotFound(f"task {name} not found")
        self.requests = [r for r in self.requests if r.task.name != name]
        self.deleted.append(name)


def _queue(client: FakeCloudTasks, account: str = ACCOUNT) -> CloudTasksQueue:
    return CloudTasksQueue(client, "acme-prod", "us-central1", FUNCTIONS_URL + "/", account, 30.0)


def _task(**changes) -> Task:
    fields = {
        "queue": "tool-slack",
        "name": "run-0123456789abcdef0123-slack-g1",
        "payload": {"run_id": "run-0123456789abcdef0123", "step_id": "slack"},
    }
    return Task(**{**fields, **changes})


def test_enqueue_creates_an_authenticated_http_task_on_the_named_queue():
    client = FakeCloudTasks()
    due = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert _queue(client).enqueue(_task(schedule_time=due)) is True
    (request,) = client.requests
    parent = "projects/acme-prod/locations/us-central1/queues/tool-slack"
    assert request.parent == parent
    task = request.task
    assert task.name == f"{parent}/tasks/{task_id('run-0123456789abcdef0123-slack-g1')}"
    http = task.http_request
    assert http.url == f"{FUNCTIONS_URL}/tool-slack"
    assert http.http_method.name == "POST"
    assert dict(http.headers) == {"Content-Type": "application/json"}
    assert json.loads(http.body) == _task().payload
    assert http.oidc_token.service_account_email == ACCOUNT
    assert http.oidc_token.audience == f"{FUNCTIONS_URL}/tool-slack"
    assert task.dispatch_deadline == timedelta(seconds=30)
    assert task.schedule_time == due


def test_task_has_no_token_and_no_schedule_when_neither_is_set():
    client = FakeCloudTasks()
    _queue(client, account="").enqueue(_task(queue=ORCHESTRATOR_QUEUE))
    task = client.requests[0].task
    assert task.http_request.url == f"{FUNCTIONS_URL}/orchestrator"
    assert "oidc_token" not in task.http_request
    assert "schedule_time" not in task


def test_enqueue_returns_false_when_the_name_was_taken():
    client = FakeCloudTasks()
    queue = _queue(client)
    assert queue.enqueue(_task()) is True
    assert queue.enqueue(_task(payload={"other": 1})) is False
    assert len(client.requests) == 1


def test_cancel_deletes_the_task_by_its_full_name_and_a_gone_one_is_no_error():
    client = FakeCloudTasks()
    queue = _queue(client)
    task = _task(queue="orchestrator", name="run-0123456789abcdef0123-slack-g1-watchdog")
    queue.enqueue(task)
    assert queue.cancel(TaskRef(task.queue, task.name)) is True
    assert client.deleted == [
        "projects/acme-prod/locations/us-central1/queues/orchestrator/tasks/" + task_id(task.name)
    ]
    assert queue.cancel(TaskRef(task.queue, task.name)) is False  # ran, or deleted already


def test_task_ids_spread_and_stay_valid_when_names_share_a_prefix():
    short = [task_id(f"run-abc-{step}-g1") for step in ("jira", "slack")]
    assert short[0][:12] != short[1][:12]
    assert all(re.fullmatch(r"[0-9a-f]{12}-run-abc-[a-z]+-g1", i) for i in short)
    long_names = ["r" * 499 + "a", "r" * 499 + "b"]
    long_ids = [task_id(n) for n in long_names]
    assert all(len(i) == MAX_TASK_ID for i in long_ids)
    assert long_ids[0] != long_ids[1]
    assert task_id(long_names[0]) == long_ids[0]  # deterministic


@pytest.mark.parametrize(
    ("error", "raised"),
    [
        (exceptions.ServiceUnavailable("down"), QueueUnavailable),
        (exceptions.DeadlineExceeded("slow"), QueueTimeout),
    ],
)
def test_enqueue_raises_retryable_when_cloud_tasks_is_unavailable(error, raised):
    with pytest.raises(raised) as caught:
        _queue(FakeCloudTasks(error)).enqueue(_task())
    assert isinstance(caught.value, RetryableError)


def test_enqueue_lets_other_api_errors_through_when_they_are_not_transient():
    with pytest.raises(exceptions.PermissionDenied):
        _queue(FakeCloudTasks(exceptions.PermissionDenied("no"))).enqueue(_task())


def test_enqueue_refuses_a_queue_that_does_not_exist():
    with pytest.raises(ValueError, match="unknown queue"):
        _queue(FakeCloudTasks()).enqueue(_task(queue="tool-fax"))


def test_from_settings_needs_a_project_and_the_functions_url():
    with pytest.raises(ValueError, match="CHIMERA_GCP_PROJECT"):
        CloudTasksQueue.from_settings(Settings(backend="gcp", functions_url=FUNCTIONS_URL))
    queue = CloudTasksQueue.from_settings(
        Settings(
            backend="gcp",
            gcp_project="acme-prod",
            functions_url=FUNCTIONS_URL,
            tasks_emulator_host="127.0.0.1:1",  # builds a channel; connects on first call
            tasks_service_account=ACCOUNT,
            dispatch_deadline=20,
        )
    )
    assert (queue.project, queue.location, queue.service_account) == (
        "acme-prod",
        "us-central1",
        ACCOUNT,
    )
    assert queue.dispatch_deadline == timedelta(seconds=20)


@pytest.mark.emulator
def test_task_is_delivered_to_its_function_when_enqueued_on_the_emulator(tasks_project):
    """Emulator -> Functions Framework: the orchestrator's target takes the run's start in."""
    source = function_sources()[ORCHESTRATOR_QUEUE]
    app = functions_framework.create_app(source.target, str(source.source))
    server = FunctionsServer({ORCHESTRATOR_QUEUE: app}).start()
    try:
        store = FakeStateStore(FakeTaskQueue())
        # Behind the emulator, which mints no ID tokens: only there do tasks get in without one.
        settings = Settings(
            backend="gcp", functions_url=server.url, tasks_emulator_host=tasks_project.host
        )
        install(Runtime(settings, store, store.queue))
        run, _ = store.create_run(make_run())
        queue = CloudTasksQueue(
            tasks_client(tasks_project.host),
            tasks_project.project,
            tasks_project.location,
            server.url,
            ACCOUNT,  # the emulator accepts the OIDC token's settings and sends no token
            settings.dispatch_deadline,
        )
        start = Task(
            queue=ORCHESTRATOR_QUEUE,
            name=f"{run.run_id}-start",
            payload=OrchestratorTask(run_id=run.run_id, kind="start").model_dump(mode="json"),
        )
        assert queue.enqueue(start) is True
        wait_for(lambda: store.load(run.run_id).status is not RunStatus.PENDING, 15, "delivery")
    finally:
        server.stop()
    assert store.load(run.run_id).status is RunStatus.RUNNING
    assert store.queue.on("tool-clearbit"), "the started run dispatched its first step"
    delivery = server.recorder.deliveries[0]
    assert delivery.path == "/functions/orchestrator"
    assert delivery.headers["Content-Type"] == "application/json"
    assert delivery.headers["X-Cloudtasks-Taskname"] == task_id(start.name)
    assert delivery.headers["X-Cloudtasks-Taskretrycount"] == "0"
    assert json.loads(delivery.body) == start.payload


def test_a_cancel_that_fails_is_logged_and_never_fails_the_decision(caplog):
    # The Cloud Tasks emulator has no DeleteTask, and Cloud Tasks may fail one: the
    # watchdog left in place runs later and finds nothing to do.
    client = FakeCloudTasks()
    client.delete_task = lambda **_: (_ for _ in ()).throw(  # type: ignore[method-assign]
        exceptions.MethodNotImplemented("Method not implemented!")
    )
    cancel_all(_queue(client), [TaskRef("orchestrator", "run-1-enrich-g1-watchdog")])
    assert "could not cancel task run-1-enrich-g1-watchdog" in caplog.text


def test_the_create_task_request_carries_the_tasks_trace_context():
    client = FakeCloudTasks()
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    headers = {"traceparent": traceparent, "tracestate": "vendor=opaque"}
    assert _queue(client).enqueue(_task(headers=headers)) is True
    (request,) = client.requests
    # Cloud Tasks forwards a task's own headers; it propagates no context by itself.
    assert dict(request.task.http_request.headers) == {
        **headers,
        "Content-Type": "application/json",
    }


def test_a_task_cannot_change_the_content_type_through_its_headers():
    client = FakeCloudTasks()
    _queue(client).enqueue(_task(headers={"Content-Type": "text/plain"}))
    (request,) = client.requests
    assert request.task.http_request.headers["Content-Type"] == "application/json"


class FakeQueueStats:
    """GetQueue (v2beta3) with read_mask stats: each queue's count and oldest arrival."""

    def __init__(self, found: dict) -> None:
        self.found = found
        self.requests: list = []

    def get_queue(self, *, request, retry, timeout):  # type: ignore[no-untyped-def]
        from google.cloud import tasks_v2beta3

        assert retry is None and 0 < timeout <= 10  # a collection never waits long
        self.requests.append(request)
        name = request.name.rsplit("/", 1)[1]
        count, oldest = self.found.get(name, (0, None))
        stats = tasks_v2beta3.QueueStats(tasks_count=count)
        if oldest is not None:
            stats.oldest_estimated_arrival_time = oldest
        return tasks_v2beta3.Queue(name=request.name, stats=stats)


def test_stats_read_each_queues_depth_and_oldest_task_through_get_queue():
    oldest = datetime.now(UTC) - timedelta(minutes=5)
    stats_client = FakeQueueStats({"tool-jira": (7, oldest)})
    queue = CloudTasksQueue(
        FakeCloudTasks(),
        "acme-prod",
        "us-central1",
        FUNCTIONS_URL,
        ACCOUNT,
        30.0,
        stats_client=lambda: stats_client,
    )
    found = {s.queue: s for s in queue.stats()}
    assert set(found) == set(queue.queues)
    assert found["tool-jira"].depth == 7 and 299 < found["tool-jira"].oldest_age_s < 400
    assert found["orchestrator"].depth == 0 and found["orchestrator"].oldest_age_s is None
    paths = {tuple(r.read_mask.paths) for r in stats_client.requests}
    assert paths == {("stats",)}
    assert stats_client.requests[0].name.startswith("projects/acme-prod/locations/us-central1/")

"""TaskQueue on Cloud Tasks: each task an authenticated HTTP POST to its queue's function."""

from __future__ import annotations

import functools
import hashlib
import json
import threading
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from google.api_core import exceptions
from google.cloud import tasks_v2

from shared.errors import RetryableError
from shared.model import Task
from shared.queues import QUEUES, QueueConfig
from shared.settings import Settings
from shared.task_queue import QueueStats, TaskRef

MAX_TASK_ID = 500
STATS_TIMEOUT_S = 5.0


class QueueUnavailable(RetryableError):
    code = "queue_unavailable"


class QueueTimeout(RetryableError):
    code = "queue_timeout"


def task_id(name: str) -> str:
    """The Cloud Tasks id of a deterministically named task.

    Names like run-<id>-<step> share long prefixes, which Cloud Tasks serves from one key
    range; a hash of the whole name in front spreads them, and keeps two names apart even when
    the id is cut to Cloud Tasks' 500 characters.
    """
    prefix = hashlib.sha256(name.encode()).hexdigest()[:12]
    return f"{prefix}-{name}"[:MAX_TASK_ID]


class CloudTasksQueue:
    """Creates each Task on the Cloud Tasks queue of the same name.

    The queue's retry config (terraform/queues.tf, mirroring shared/queues.py) does the
    retrying; a task name already taken, even by a finished task, is a no-op.
    """

    def __init__(
        self,
        client: Any,
        project: str,
        location: str,
        functions_url: str,
        service_account: str,
        dispatch_deadline: float,
        queues: Mapping[str, QueueConfig] = QUEUES,
        *,
        stats_client: Callable[[], Any] | None = None,
    ) -> None:
        """`stats_client` builds the v2beta3 client that reads the queues' stats (v2 has no
        stats), on first use: the metrics ask, a task never does."""
        self.client = client
        self.project = project
        self.location = location
        self.functions_url = functions_url.rstrip("/")
        self.service_account = service_account
        self.dispatch_deadline = timedelta(seconds=dispatch_deadline)
        self.queues = dict(queues)
        self._stats_factory = stats_client or _default_stats_client
        self._stats_client: Any = None
        self._stats_lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> CloudTasksQueue:
        """The queue of `settings`: the emulator at tasks_emulator_host, else Cloud Tasks with
        the default credentials."""
        if not settings.gcp_project or not settings.functions_url:
            raise ValueError(
                "Cloud Tasks needs CHIMERA_GCP_PROJECT and CHIMERA_FUNCTIONS_URL "
                "(the base URL that a queue's function name is appended to)"
            )
        if settings.tasks_emulator_host:
            import grpc
            from google.cloud.tasks_v2.services.cloud_tasks.transports import (
                CloudTasksGrpcTransport,
            )

            channel = grpc.insecure_channel(settings.tasks_emulator_host)
            client = tasks_v2.CloudTasksClient(transport=CloudTasksGrpcTransport(channel=channel))
            stats_client: Callable[[], Any] | None = functools.partial(
                _emulator_stats_client, channel
            )
        else:
            client = tasks_v2.CloudTasksClient()
            stats_client = None
        return cls(
            client,
            settings.gcp_project,
            settings.gcp_location,
            settings.functions_url,
            settings.tasks_service_account,
            settings.dispatch_deadline,
            stats_client=stats_client,
        )

    def path_of(self, queue: str) -> str:
        return f"projects/{self.project}/locations/{self.location}/queues/{queue}"

    def stats(self) -> list[QueueStats]:
        """Each queue's depth and its oldest task's age, from GetQueue's `stats` (v2beta3):
        one call per queue, so asked at the metrics' pace, never per task."""
        from google.cloud import tasks_v2beta3
        from google.protobuf.field_mask_pb2 import FieldMask

        with self._stats_lock:
            if self._stats_client is None:
                self._stats_client = self._stats_factory()
            client = self._stats_client
        now = datetime.now(UTC)
        found = []
        for name in self.queues:
            queue = client.get_queue(
                request=tasks_v2beta3.GetQueueRequest(
                    name=self.path_of(name), read_mask=FieldMask(paths=["stats"])
                ),
                # A collection must not wait on a sick API: this point is missed instead.
                retry=None,
                timeout=STATS_TIMEOUT_S,
            )
            oldest = queue.stats.oldest_estimated_arrival_time if queue.stats else None
            age = (now - oldest).total_seconds() if oldest and oldest.timestamp() > 0 else None
            depth = int(queue.stats.tasks_count) if queue.stats else 0
            found.append(QueueStats(name, depth, max(0.0, age) if age is not None else None))
        return found

    def url_of(self, queue: str) -> str:
        return f"{self.functions_url}/{self.queues[queue].target}"

    def request_of(self, task: Task) -> tasks_v2.CreateTaskRequest:
        """The CreateTask request for `task`: what Cloud Tasks will POST, where and when."""
        if task.queue not in self.queues:
            raise ValueError(f"unknown queue {task.queue!r}")
        parent = self.path_of(task.queue)
        url = self.url_of(task.queue)
        http = tasks_v2.HttpRequest(
            http_method=tasks_v2.HttpMethod.POST,
            url=url,
            # The task's trace context rides as its own headers: Cloud Tasks forwards them,
            # and propagates no context of its own.
            headers={**task.headers, "Content-Type": "application/json"},
            body=json.dumps(task.payload).encode(),
        )
        if self.service_account:
            # The target's IAM (and shared/identity.py) accepts this account's ID token only.
            http.oidc_token = tasks_v2.OidcToken(
                service_account_email=self.service_account, audience=url
            )
        created = tasks_v2.Task(
            name=f"{parent}/tasks/{task_id(task.name)}",
            http_request=http,
            dispatch_deadline=self.dispatch_deadline,
        )
        if task.schedule_time is not None:
            created.schedule_time = task.schedule_time
        return tasks_v2.CreateTaskRequest(parent=parent, task=created)

    def enqueue(self, task: Task) -> bool:
        request = self.request_of(task)
        try:
            self.client.create_task(request=request)
        except exceptions.AlreadyExists:
            return False
        except exceptions.ServiceUnavailable as exc:
            raise QueueUnavailable(f"Cloud Tasks unavailable: {exc.message}") from exc
        except exceptions.DeadlineExceeded as exc:
            raise QueueTimeout(f"Cloud Tasks did not answer in time: {exc.message}") from exc
        return True

    def cancel(self, task: TaskRef) -> bool:
        try:
            self.client.delete_task(name=f"{self.path_of(task.queue)}/tasks/{task_id(task.name)}")
        except exceptions.NotFound:  # ran already, or was never queued
            return False
        return True


def _default_stats_client() -> Any:
    from google.cloud import tasks_v2beta3

    return tasks_v2beta3.CloudTasksClient()


def _emulator_stats_client(channel: Any) -> Any:
    from google.cloud import tasks_v2beta3
    from google.cloud.tasks_v2beta3.services.cloud_tasks.transports import (
        CloudTasksGrpcTransport,
    )

    return tasks_v2beta3.CloudTasksClient(transport=CloudTasksGrpcTransport(channel=channel))

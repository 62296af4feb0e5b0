"""TaskQueue on Cloud Tasks: each task an authenticated HTTP POST to its queue's function."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from google.api_core import exceptions
from google.cloud import tasks_v2

from shared.errors import RetryableError
from shared.model import Task
from shared.queues import QUEUES, QueueConfig
from shared.settings import Settings

MAX_TASK_ID = 500


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
    ) -> None:
        self.client = client
        self.project = project
        self.location = location
        self.functions_url = functions_url.rstrip("/")
        self.service_account = service_account
        self.dispatch_deadline = timedelta(seconds=dispatch_deadline)
        self.queues = dict(queues)

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
        else:
            client = tasks_v2.CloudTasksClient()
        return cls(
            client,
            settings.gcp_project,
            settings.gcp_location,
            settings.functions_url,
            settings.tasks_service_account,
            settings.dispatch_deadline,
        )

    def url_of(self, queue: str) -> str:
        return f"{self.functions_url}/{self.queues[queue].target}"

    def request_of(self, task: Task) -> tasks_v2.CreateTaskRequest:
        """The CreateTask request for `task`: what Cloud Tasks will POST, where and when."""
        if task.queue not in self.queues:
            raise ValueError(f"unknown queue {task.queue!r}")
        parent = f"projects/{self.project}/locations/{self.location}/queues/{task.queue}"
        url = self.url_of(task.queue)
        http = tasks_v2.HttpRequest(
            http_method=tasks_v2.HttpMethod.POST,
            url=url,
            headers={"Content-Type": "application/json"},
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

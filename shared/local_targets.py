"""Where the local dispatcher delivers a task: a WSGI app in process, or a URL over HTTP."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class Delivery:
    """One attempt at a task, as Cloud Tasks would send it: its body and X-CloudTasks-* headers."""

    queue: str
    task_name: str
    body: bytes
    headers: dict[str, str]
    deadline: float


@dataclass(frozen=True)
class DeliveryResult:
    # None when no answer came back (connection error, deadline passed).
    status: int | None
    headers: Mapping[str, str] = field(default_factory=dict)
    error: str = ""


class Target(Protocol):
    def __call__(self, delivery: Delivery) -> DeliveryResult: ...


class WsgiTarget:
    """Deliver in process through a WSGI app (the Functions Framework's Flask app)."""

    def __init__(self, app: Any, path: str = "/") -> None:
        self.app = app
        self.path = path

    def __call__(self, delivery: Delivery) -> DeliveryResult:
        from werkzeug.test import Client

        response = Client(self.app).post(
            self.path,
            data=delivery.body,
            headers={**delivery.headers, "Content-Type": "application/json"},
        )
        return DeliveryResult(response.status_code, dict(response.headers))


class HttpTarget:
    """Deliver over HTTP, as Cloud Tasks does, with the dispatch deadline as the timeout."""

    def __init__(self, url: str) -> None:
        import requests

        self.url = url
        self.session = requests.Session()

    def __call__(self, delivery: Delivery) -> DeliveryResult:
        import requests

        try:
            response = self.session.post(
                self.url,
                data=delivery.body,
                headers={**delivery.headers, "Content-Type": "application/json"},
                timeout=delivery.deadline,
            )
        except requests.RequestException as exc:
            return DeliveryResult(None, error=type(exc).__name__)
        return DeliveryResult(response.status_code, dict(response.headers))

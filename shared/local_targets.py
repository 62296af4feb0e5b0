"""Where the local dispatcher delivers a task: a WSGI app in process, or a URL over HTTP."""

from __future__ import annotations

import io
import sys
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
    """Deliver in process through a WSGI app (the Functions Framework's Flask app).

    The request is the one an HTTP server would hand the app: a POST with the task's body and
    headers. It is built here rather than through werkzeug's test client, whose request
    builder cost more than the delivery itself on every hop.
    """

    def __init__(self, app: Any, path: str = "/") -> None:
        self.app = app
        self.path = path

    def __call__(self, delivery: Delivery) -> DeliveryResult:
        environ = {
            "REQUEST_METHOD": "POST",
            "SCRIPT_NAME": "",
            "PATH_INFO": self.path,
            "QUERY_STRING": "",
            "SERVER_NAME": "localhost",
            "SERVER_PORT": "80",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "REMOTE_ADDR": "127.0.0.1",
            "HTTP_HOST": "localhost",
            "CONTENT_TYPE": "application/json",
            "CONTENT_LENGTH": str(len(delivery.body)),
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "http",
            "wsgi.input": io.BytesIO(delivery.body),
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": True,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
        }
        for name, value in delivery.headers.items():
            key = name.upper().replace("-", "_")
            if key not in ("CONTENT_TYPE", "CONTENT_LENGTH"):
                environ[f"HTTP_{key}"] = value
        answered: list[Any] = []

        def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None):
            answered[:] = [int(status.split(" ", 1)[0]), dict(headers)]
            return lambda _data: None

        body = self.app(environ, start_response)
        try:
            for _chunk in body:  # the answer's body is not read: drain it, as a server would
                pass
        finally:
            close = getattr(body, "close", None)
            if close is not None:
                close()
        return DeliveryResult(answered[0], answered[1])


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

"""The embedded stack: the functions, the local queue's dispatcher and the vendor sandbox."""

from __future__ import annotations

import importlib
import json
import logging
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from queue import SimpleQueue
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode

import functions_framework
from werkzeug.middleware.dispatcher import DispatcherMiddleware
from werkzeug.serving import BaseWSGIServer
from werkzeug.wrappers import Request, Response

import orchestrator
import tools
from chimera.console import FORM_PREFIXES, create_app
from sandbox.server import SandboxServer
from shared.keys import SESSION_COOKIE, SESSION_MAX_AGE_S, Keys, local_credential
from shared.local_dispatcher import Housekeeping, LocalDispatcher
from shared.local_queue import LocalTaskQueue
from shared.local_targets import HttpTarget, Target, WsgiTarget
from shared.queues import ORCHESTRATOR_QUEUE, tool_queue
from shared.registry import FUNCTIONS
from shared.request_guard import CLOUD_EVENT_TYPES, FORM_TYPES, LocalServerGuard, bound_hosts
from shared.runtime import Runtime, build_runtime, install
from shared.settings import Settings
from shared.task_signing import TaskSigner, signer_for

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FunctionSource:
    name: str  # the deployed function's name, and the path it is served under locally
    source: Path
    target: str


def function_sources() -> dict[str, FunctionSource]:
    orchestrator_main = Path(orchestrator.__file__).parent / "main.py"
    sources = [
        FunctionSource(ORCHESTRATOR_QUEUE, orchestrator_main, "handle_task"),
        FunctionSource("orchestrator-intake", orchestrator_main, "intake_http"),
        FunctionSource("orchestrator-pubsub", orchestrator_main, "intake_pubsub"),
    ]
    for function in FUNCTIONS:
        main = Path(tools.__file__).parent / function / "main.py"
        sources.append(FunctionSource(tool_queue(function), main, "run_tool"))
    return {s.name: s for s in sources}


class ConsoleSignIn:
    """Signs a browser in to the dev server as Jupyter does: a GET with `?token=KEY` sets an
    HttpOnly, SameSite=Strict session cookie standing for the key and redirects to the same
    URL without the token, so that it leaves the address bar and the history's next entry.

    The intake checks the cookie on each request (shared/callers.py): the key must still be
    active, and a POST must come from this server's own origin.
    """

    def __init__(self, app: Any, keys: Callable[[], Keys]) -> None:
        self.app = app
        self.keys = keys

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        request = Request(environ)
        if request.method in ("GET", "HEAD") and "token" in request.args:
            return self._sign_in(request)(environ, start_response)
        return self.app(environ, start_response)

    def _sign_in(self, request: Request) -> Response:
        keys, token = self.keys(), request.args["token"]
        if keys.caller(token) is None:
            error = {"code": "unauthenticated", "message": "the key is unknown or revoked"}
            return Response(
                json.dumps({"error": error}),
                status=401,
                mimetype="application/json",
                headers={"WWW-Authenticate": "Bearer"},
            )
        query = urlencode(
            [(k, v) for k, v in parse_qsl(request.query_string.decode()) if k != "token"]
        )
        # One leading slash: "//host" would send the browser to another site.
        location = "/" + quote(request.script_root + request.path).lstrip("/")
        if query:
            location += f"?{query}"
        response = Response(status=303, headers={"Location": location})
        response.set_cookie(
            SESSION_COOKIE,
            keys.session_for(token),
            max_age=SESSION_MAX_AGE_S,
            path="/",
            httponly=True,
            samesite="Strict",
        )
        response.headers["Cache-Control"] = "no-store"
        response.headers["Referrer-Policy"] = "no-referrer"
        return response


class IntakeOrConsole:
    """`/runs...` to the intake (its API), every other path to the console's pages."""

    def __init__(self, intake: Any, console: Any) -> None:
        self.intake = intake
        self.console = console

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        path = str(environ.get("PATH_INFO", ""))
        app = self.intake if path == "/runs" or path.startswith("/runs/") else self.console
        return app(environ, start_response)


class PooledWSGIServer(BaseWSGIServer):
    """werkzeug's server, its requests served by at most `threads` threads.

    werkzeug's threaded server starts a thread per connection, so its threads grow with its
    clients (534 with 500 clients posting at once); here each accepted connection waits in a
    queue for one of a fixed number of daemon threads, started as they are needed. werkzeug
    closes every connection after its response, so a thread is held for one request (a live
    console page's stream holds one for its length, at most five minutes). Daemon threads,
    so a request still running never keeps the process from exiting.
    """

    multithread = True

    def __init__(self, host: str, port: int, app: Any, *, threads: int) -> None:
        if threads < 1:
            raise ValueError("a pooled server needs at least one thread")
        super().__init__(host, port, app)
        self.max_threads = threads
        self._accepted: SimpleQueue[tuple[socket.socket, Any] | None] = SimpleQueue()
        self._workers: list[threading.Thread] = []
        self._idle = 0
        self._lock = threading.Lock()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._lock:
            if self._idle:
                self._idle -= 1  # that one takes it
            elif len(self._workers) < self.max_threads:
                worker = threading.Thread(
                    target=self._work, name=f"http-{len(self._workers)}", daemon=True
                )
                self._workers.append(worker)
                worker.start()
            self._accepted.put((request, client_address))

    def _work(self) -> None:
        while True:
            accepted = self._accepted.get()
            if accepted is None:
                return
            request, client_address = accepted
            try:
                self.finish_request(request, client_address)
            except Exception:
                self.handle_error(request, client_address)
            finally:
                self.shutdown_request(request)
            with self._lock:
                self._idle += 1

    def server_close(self) -> None:
        super().server_close()
        with self._lock:
            workers, self._idle = len(self._workers), 0
        for _ in range(workers):
            self._accepted.put(None)


def serve_local(
    app: Any,
    port: int,
    limit: int,
    types_by_prefix: dict[str, frozenset[str]] | None = None,
    *,
    threads: int,
) -> BaseWSGIServer:
    """`app` served on 127.0.0.1:`port` by at most `threads` request threads, behind the
    local guard: only requests for this server (DNS rebinding), only JSON bodies (cross-site
    forms) but the console's own form posts, capped at `limit` bytes."""
    server: BaseWSGIServer | None = None
    types = {prefix: FORM_TYPES for prefix in FORM_PREFIXES} | (types_by_prefix or {})
    wsgi = LocalServerGuard(
        app,
        hosts=lambda: bound_hosts(server.server_port if server else port),
        limit=limit,
        types_by_prefix=types,
    )
    server = PooledWSGIServer("127.0.0.1", port, wsgi, threads=threads)
    threading.Thread(target=server.serve_forever, name="http", daemon=True).start()
    return server


def with_bearer(app: Any, token: str) -> Any:
    """`app` called with `Authorization: Bearer token` unless the request carries its own."""

    def call(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        environ.setdefault("HTTP_AUTHORIZATION", f"Bearer {token}")
        return app(environ, start_response)

    return call


class LocalStack:
    """Everything Chimera needs on one machine, behind the same interfaces as in the cloud.

    `serve_port` also serves it over HTTP on 127.0.0.1: the intake at /runs and each function
    at /functions/<name>; with `over_http` the dispatcher delivers through that server, as
    Cloud Tasks would, instead of calling the functions' apps in process. Either way each
    task is signed: the functions take no task from anyone else. The intake takes the keys of
    `chimera keys` and the CLI's own local credential (`credential`), made on first use under
    CHIMERA_HOME.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        faults: str = "",
        sandbox_port: int = 0,
        serve_port: int | None = None,
        over_http: bool = False,
        sandbox_url: str = "",
    ) -> None:
        self.base_settings = settings
        self.faults = faults
        self.sandbox_port = sandbox_port
        self.serve_port = serve_port
        self.over_http = over_http and serve_port is not None
        # An external sandbox (its own process), or one embedded in this stack.
        self.sandbox_url = sandbox_url
        self.sandbox: SandboxServer | None = None
        self.dispatcher: LocalDispatcher | None = None
        self.signer: TaskSigner | None = None
        self.runtime: Runtime | None = None
        self.apps: dict[str, Any] = {}
        self._server: BaseWSGIServer | None = None
        self.credential = ""

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the stack is not served over HTTP")
        return f"http://127.0.0.1:{self._server.server_port}"

    def start(self) -> LocalStack:
        settings = self.base_settings
        if not self.sandbox_url:
            self.sandbox = SandboxServer(
                settings.home, faults=self.faults, port=self.sandbox_port
            ).start()
        sandbox_url = self.sandbox.url if self.sandbox else self.sandbox_url
        settings = settings.replace(sandbox_url=sandbox_url)
        self.runtime = build_runtime(settings)
        # The model's SDK now, not on the first draft: its first import takes seconds, which
        # the first runs would wait through (a deployed function still imports it lazily).
        importlib.import_module("shared.gemini")
        self.credential = local_credential(settings.home)
        install(self.runtime)
        self.apps = {
            name: functions_framework.create_app(s.target, str(s.source))
            for name, s in function_sources().items()
        }
        if self.serve_port is not None:
            self._serve(self.serve_port)
        queue = self.runtime.queue
        if not isinstance(queue, LocalTaskQueue):
            raise RuntimeError("the local stack runs on the local queue (CHIMERA_BACKEND=local)")
        self.signer = signer_for(settings.home, settings.task_signature_window)
        housekeeping = Housekeeping(queue, self.runtime.store, retention=settings.retention)
        self.dispatcher = LocalDispatcher(
            queue,
            self._targets(),
            signer=self.signer,
            dispatch_deadline=settings.dispatch_deadline,
            housekeeping=housekeeping,
        ).start()
        log.info("local stack up: state %s, sandbox %s", settings.state_location, sandbox_url)
        return self

    def _targets(self) -> dict[str, Target]:
        names = [ORCHESTRATOR_QUEUE, *(tool_queue(f) for f in FUNCTIONS)]
        if self.over_http:
            return {n: HttpTarget(f"{self.url}/functions/{n}/") for n in names}
        return {n: WsgiTarget(self.apps[n]) for n in names}

    def _serve(self, port: int) -> None:
        assert self.runtime is not None
        mounts = {f"/functions/{name}": app for name, app in self.apps.items()}
        console = create_app(self.runtime)
        routes = DispatcherMiddleware(
            IntakeOrConsole(self.apps["orchestrator-intake"], console), mounts
        )
        threads = self.base_settings.http_threads
        if self.over_http and isinstance(self.runtime.queue, LocalTaskQueue):
            # Deliveries come through this server too: room for all of them besides the clients.
            threads += sum(q.max_concurrent_dispatches for q in self.runtime.queue.queues.values())
        self._server = serve_local(
            ConsoleSignIn(routes, self.keys),
            port,
            self.base_settings.max_body_bytes,
            {"/functions/orchestrator-pubsub": CLOUD_EVENT_TYPES},
            threads=threads,
        )

    def keys(self) -> Keys:
        if self.runtime is None:
            raise RuntimeError("the stack is not started")
        return Keys(self.runtime.store, self.runtime.settings.home)

    @property
    def auth_headers(self) -> dict[str, str]:
        """What the CLI sends to the intake: its own local credential as a bearer key."""
        return {"Authorization": f"Bearer {self.credential}"}

    @property
    def console_url(self) -> str:
        """The dev server's console, with the token that signs the local user in."""
        return f"{self.url}/?token={self.credential}"

    def intake(self) -> Any:
        """The intake's app as the CLI calls it in process, with its own local credential
        (same authentication and validation as over HTTP; a request's own Authorization wins)."""
        return with_bearer(self.apps["orchestrator-intake"], self.credential)

    def stop(self) -> None:
        if self.dispatcher:
            self.dispatcher.stop()
        if self._server:
            self._server.shutdown()
        if self.sandbox:
            self.sandbox.stop()
        install(None)

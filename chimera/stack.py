"""The embedded stack: the functions, the local queue's dispatcher and the vendor sandbox."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import functions_framework
from werkzeug.middleware.dispatcher import DispatcherMiddleware
from werkzeug.serving import BaseWSGIServer, make_server

import orchestrator
import tools
from sandbox.server import SandboxServer
from shared.local_dispatcher import Housekeeping, LocalDispatcher
from shared.local_queue import LocalTaskQueue
from shared.local_targets import HttpTarget, Target, WsgiTarget
from shared.queues import ORCHESTRATOR_QUEUE, tool_queue
from shared.registry import FUNCTIONS
from shared.runtime import Runtime, build_runtime, install
from shared.settings import Settings

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


class LocalStack:
    """Everything Chimera needs on one machine, behind the same interfaces as in the cloud.

    `serve_port` also serves it over HTTP on 127.0.0.1: the intake at /runs and each function
    at /functions/<name>; with `over_http` the dispatcher delivers through that server, as
    Cloud Tasks would, instead of calling the functions' apps in process.
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
        self.runtime: Runtime | None = None
        self.apps: dict[str, Any] = {}
        self._server: BaseWSGIServer | None = None

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
        housekeeping = Housekeeping(queue, self.runtime.store, retention=settings.retention)
        self.dispatcher = LocalDispatcher(
            queue,
            self._targets(),
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
        mounts = {f"/functions/{name}": app for name, app in self.apps.items()}
        wsgi = DispatcherMiddleware(self.apps["orchestrator-intake"], mounts)
        self._server = make_server("127.0.0.1", port, wsgi, threaded=True)
        threading.Thread(target=self._server.serve_forever, name="http", daemon=True).start()

    def intake(self) -> Any:
        """The intake's app, for submitting in process (same validation as over HTTP)."""
        return self.apps["orchestrator-intake"]

    def stop(self) -> None:
        if self.dispatcher:
            self.dispatcher.stop()
        if self._server:
            self._server.shutdown()
        if self.sandbox:
            self.sandbox.stop()
        install(None)

"""One local HTTP server speaking every vendor's API under /<vendor>, with faults and a call log."""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from werkzeug.exceptions import MethodNotAllowed, NotFound
from werkzeug.routing import Map, RequestRedirect, Rule
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

from sandbox.calls import Call, Reply, Route, garbage_reply, json_reply
from sandbox.faults import MODEL_KINDS, Fault, FaultPlan
from sandbox.records import RecordStore, sandbox_database
from sandbox.vendors.clearbit import ClearbitApi
from sandbox.vendors.gemini import GeminiApi
from sandbox.vendors.jira import JiraApi
from sandbox.vendors.sendgrid import SendGridApi
from sandbox.vendors.slack import SlackApi
from sandbox.vendors.website import WebsiteApi
from shared.run_header import RUN_ID_HEADER

logger = logging.getLogger(__name__)

STOP_POLL_S = 0.05
# The gauge's path: no vendor is named `_sandbox`, and it is answered before any routing.
IN_FLIGHT_PATH = "/_sandbox/in_flight"


class VendorApi(Protocol):
    """What the server needs from each vendor module."""

    name: str
    # Body fields that carry credentials (query credentials are always dropped).
    secret_keys: tuple[str, ...]

    def routes(self) -> list[Route]: ...

    def authenticate(self, call: Call) -> Reply | None:
        """None when the caller presented credentials, else the vendor's refusal."""
        ...

    def run_id(self, call: Call) -> str | None:
        """The run named in the body the way Chimera's tools send it, if any."""
        ...

    def error_reply(self, status: int) -> Reply: ...

    def rate_limited_reply(self) -> Reply: ...

    def not_found_reply(self, path: str) -> Reply:
        """What the vendor answers for a path it does not serve (`path` under its prefix)."""
        ...


class InFlightGauge:
    """Requests being served per vendor, now and at most since the last reset (benchmarks
    read how many calls an engine kept in flight at each vendor)."""

    def __init__(self, vendors: Iterable[str]) -> None:
        self._now = dict.fromkeys(vendors, 0)
        self._peak = dict(self._now)
        self._lock = threading.Lock()

    def enter(self, vendor: str) -> None:
        with self._lock:
            self._now[vendor] += 1
            self._peak[vendor] = max(self._peak[vendor], self._now[vendor])

    def leave(self, vendor: str) -> None:
        with self._lock:
            self._now[vendor] -= 1

    def reset_peaks(self) -> None:
        """Peaks from now on: each starts at what is in flight now."""
        with self._lock:
            self._peak = dict(self._now)

    def snapshot(self) -> dict[str, dict[str, int]]:
        with self._lock:
            return {v: {"now": n, "peak": self._peak[v]} for v, n in self._now.items()}


class SandboxApp:
    """The WSGI app: route, draw a fault, answer like the vendor, record the call."""

    def __init__(self, home: Path, plan: FaultPlan, *, stopping: threading.Event) -> None:
        db = sandbox_database(home)
        self.records = RecordStore(home, db=db)
        # The brownout window counts from t0: given, or this start.
        self.plan = plan if plan.t0 is not None else dataclasses.replace(plan, t0=time.time())
        self._stopping = stopping
        apis: list[VendorApi] = [
            ClearbitApi(),
            JiraApi(db),
            SendGridApi(db),
            SlackApi(db),
            GeminiApi(),
            WebsiteApi(),
        ]
        self._apis = {api.name: api for api in apis}
        self._routes: dict[str, tuple[VendorApi, Route]] = {}
        rules = []
        for api in apis:
            for index, route in enumerate(api.routes()):
                endpoint = f"{api.name}:{index}"
                self._routes[endpoint] = (api, route)
                rules.append(
                    Rule(f"/{api.name}{route.rule}", endpoint=endpoint, methods=route.methods)
                )
        # Only the vendors' real paths, exactly: no slash added, dropped or merged, so a
        # client's mistake (a doubled prefix, a stray slash) gets the 404 the vendor would give.
        self._map = Map(rules, strict_slashes=True, merge_slashes=False, redirect_defaults=False)
        self._calls = dict.fromkeys(self._apis, 0)
        self._calls_lock = threading.Lock()
        self.in_flight = InFlightGauge(self._apis)

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        request = Request(environ)
        if request.path == IN_FLIGHT_PATH:
            response = self._in_flight(request)
        else:
            response = self.dispatch(request)
        return response(environ, start_response)

    def _in_flight(self, request: Request) -> Response:
        # GET reads the gauge; POST resets its peaks (between a benchmark's sides) and reads it.
        if request.method == "POST":
            self.in_flight.reset_peaks()
        elif request.method not in ("GET", "HEAD"):
            return json_reply(405, {"error": {"code": 405, "message": "GET or POST"}}).to_response()
        return json_reply(200, self.in_flight.snapshot()).to_response()

    def dispatch(self, request: Request) -> Response:
        try:
            endpoint, args = self._map.bind_to_environ(request.environ).match()
        except RequestRedirect:
            # werkzeug would redirect /x to the rule /x/; the vendors answer 404 there.
            return self._unmatched(request, 404)
        except (NotFound, MethodNotAllowed) as exc:
            return self._unmatched(request, exc.code or 404)
        api, route = self._routes[endpoint]
        self.in_flight.enter(api.name)
        try:
            return self._serve(api, route, request, args)
        finally:
            self.in_flight.leave(api.name)

    def _serve(
        self, api: VendorApi, route: Route, request: Request, args: Mapping[str, Any]
    ) -> Response:
        call = Call.from_request(request, vendor=api.name, args=dict(args))
        fault = self._next_fault(api.name)
        if fault.latency_s:
            self._stopping.wait(fault.latency_s)

        if fault.kind == "error":
            reply = api.error_reply(fault.status or 503)
        elif fault.kind == "rate_limit":
            reply = api.rate_limited_reply()
        else:
            # timeout and garbage faults still do the work: the side effect happens. A drop
            # answers as the work would, but the vendor keeps none of it.
            if fault.kind == "drop":
                call = dataclasses.replace(call, drop=True)
            reply = api.authenticate(call) or self._handle(api, route, call)
            if fault.kind == "garbage":
                reply = garbage_reply()
            elif fault.kind in MODEL_KINDS and isinstance(api, GeminiApi) and reply.status == 200:
                reply = api.misbehaving_reply(call, fault.kind)

        self.records.record(
            vendor=api.name,
            action=route.action,
            run_id=api.run_id(call) or call.header(RUN_ID_HEADER) or None,
            status=reply.status,
            request=call.recorded_request(api.secret_keys),
            fault=fault.kind,
            method=call.method,
            path=call.path,
            dropped=reply.dropped,
        )
        if fault.kind == "timeout":
            # Hold the answer past the client's read timeout; stop() releases it.
            self._stopping.wait(self.plan.hang_s)
        return reply.to_response()

    def _next_fault(self, vendor: str) -> Fault:
        with self._calls_lock:
            n = self._calls[vendor]
            self._calls[vendor] = n + 1
        return self.plan.fault_for(vendor, n, now=time.time())

    def _handle(self, api: VendorApi, route: Route, call: Call) -> Reply:
        try:
            return route.handle(call)
        except Exception:
            # A sandbox bug, not a vendor behaviour: answer like the vendor's 500, keep the stack.
            logger.exception("sandbox %s %s failed", api.name, route.action)
            return api.error_reply(500)

    def _unmatched(self, request: Request, status: int) -> Response:
        # Recorded too: the log then shows any endpoint an SDK needs that the sandbox lacks,
        # and any wrong path a client sends.
        vendor = (request.path + "/").split("/", 2)[1]  # the path always starts with /
        api = self._apis.get(vendor)
        vendor = vendor if api is not None else "unknown"
        run_id = (request.headers.get(RUN_ID_HEADER) or "").strip() or None
        self.records.record(
            vendor=vendor,
            action="unmatched",
            run_id=run_id,
            status=status,
            request={},
            method=request.method,
            path=request.path,
        )
        logger.warning("sandbox has no %s %s", request.method, request.path)
        if api is not None and status == 404:
            return api.not_found_reply(request.path.removeprefix(f"/{vendor}")).to_response()
        message = f"The sandbox does not implement {request.method} {request.path}."
        return json_reply(status, {"error": {"code": status, "message": message}}).to_response()


class SandboxServer:
    """The sandbox on a local port, served from a daemon thread.

    Example:
        server = SandboxServer(tmp_path, faults="slack.rate_limit=0.2,seed=7").start()
        settings = Settings(sandbox_url=server.url)
        ...
        server.stop()
    """

    def __init__(
        self, home: Path | str, faults: str = "", host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.home = Path(home)
        self.plan = FaultPlan.parse(faults)
        self._host = host
        self._port = port
        self._stopping = threading.Event()
        self.app = SandboxApp(self.home, self.plan, stopping=self._stopping)
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def records(self) -> RecordStore:
        return self.app.records

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the sandbox is not started")
        return f"http://{self._host}:{self._server.port}"

    def start(self) -> SandboxServer:
        self._bind()
        assert self._server is not None
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            # stop() waits up to one poll interval for the loop to notice.
            kwargs={"poll_interval": STOP_POLL_S},
            name="sandbox-server",
            daemon=True,
        )
        self._thread.start()
        logger.info("vendor sandbox serving at %s (home %s)", self.url, self.home)
        return self

    def serve_forever(self) -> None:
        """Serve in this thread until interrupted (the `python -m sandbox` entry)."""
        self._bind()
        assert self._server is not None
        logger.info("vendor sandbox serving at %s (home %s)", self.url, self.home)
        try:
            self._server.serve_forever()
        finally:
            self._stopping.set()

    def stop(self) -> None:
        self._stopping.set()  # releases requests held by latency or timeout faults
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None

    def __enter__(self) -> SandboxServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _bind(self) -> None:
        if self._server is not None:
            raise RuntimeError("the sandbox is already serving")
        self._stopping.clear()
        self._server = make_server(
            self._host, self._port, self.app, threaded=True, request_handler=_RequestLogger
        )


class _RequestLogger(WSGIRequestHandler):
    """Request lines go to our logger at DEBUG, without query strings (they may hold keys)."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        path = urlsplit(getattr(self, "path", "") or "").path
        logger.debug("%s %s -> %s", getattr(self, "command", "-"), path, code)

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("sandbox http: " + format, *args)

    def log_error(self, format: str, *args: Any) -> None:
        logger.debug("sandbox http error: " + format, *args)

"""Google Cloud emulators for tests: each started on first use, once per session, on loopback.

Firestore and Pub/Sub come with the Google Cloud CLI (platform/ under its SDK root) and run on
Java; Cloud Tasks is `gcloud-tasks-emulator` from PyPI, installed with --no-deps. A test that
needs a missing emulator is skipped with what to install, unless CHIMERA_REQUIRE_EMULATORS=1
(Cloud Build sets it): there a missing emulator fails the test, so a build never deploys past
tests it did not run. Each test gets a fresh project id, so tests never see each other's
documents, topics or queues.
"""

from __future__ import annotations

import atexit
import functools
import importlib.util
import io
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import pytest

from tests.fakes import FakeTaskQueue

LOCATION = "us-central1"
STARTUP_TIMEOUT_S = 30.0
# Contract-suite adapters (the `sut` parameter) that run on an emulator.
EMULATED_ADAPTERS = {"firestore"}
# Read once, when pytest loads this plugin: every test then runs with the CHIMERA_ variables
# cleared (tests/conftest.py).
REQUIRE_VARIABLE = "CHIMERA_REQUIRE_EMULATORS"
REQUIRED = os.environ.get(REQUIRE_VARIABLE, "").strip().lower() in {"1", "true", "yes"}


@dataclass
class Emulator:
    name: str
    host: str  # 127.0.0.1:port
    process: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def missing(reason: str) -> NoReturn:
    """An emulator is not installed: skip the test here, fail it where emulators are required."""
    if REQUIRED:
        pytest.fail(f"{reason} ({REQUIRE_VARIABLE}=1: a missing emulator fails)", pytrace=False)
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def fresh_project() -> str:
    return f"chimera-test-{uuid.uuid4().hex[:10]}"


@functools.cache
def _sdk_root() -> Path | None:
    gcloud = shutil.which("gcloud")
    if gcloud is None:
        return None
    try:
        out = subprocess.run(
            [gcloud, "info", "--format=value(installation.sdk_root)"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return Path(out) if out else None


def _java() -> str:
    java = shutil.which("java")
    if java is None:
        missing("java is not installed: the Firestore and Pub/Sub emulators need a JRE 11+")
    return java


def _platform(folder: str, package: str) -> Path:
    root = _sdk_root()
    if root is None:
        missing(f"gcloud (the Google Cloud CLI) is not installed, so neither is its {folder}")
    path = root / "platform" / folder
    if not path.is_dir():
        missing(
            f"{path} is missing: install the emulator with `gcloud components install {folder}` "
            f"or `apt-get install {package}`"
        )
    return path


def _firestore_command(port: int) -> list[str]:
    jar = _platform("cloud-firestore-emulator", "google-cloud-cli-firestore-emulator")
    jar = jar / "cloud-firestore-emulator.jar"
    if not jar.is_file():
        missing(f"{jar} is missing: reinstall google-cloud-cli-firestore-emulator")
    # What the SDK's cloud_firestore_emulator script runs, minus the shell in between, so that
    # stopping the process stops java.
    return [
        _java(),
        "-Duser.language=en",
        "-cp",
        str(jar),
        "com.google.cloud.datastore.emulator.firestore.CloudFirestore",
        "--host=127.0.0.1",
        f"--port={port}",
    ]


def _pubsub_command(port: int) -> list[str]:
    lib = _platform("pubsub-emulator", "google-cloud-cli-pubsub-emulator") / "lib"
    jars = sorted(lib.glob("cloud-pubsub-emulator-*.jar"))
    if not jars:
        missing(f"no cloud-pubsub-emulator jar in {lib}")
    return [_java(), "-jar", str(jars[-1]), "--host=127.0.0.1", f"--port={port}"]


def _tasks_command(port: int) -> list[str]:
    if importlib.util.find_spec("gcloud_tasks_emulator") is None:
        missing(
            "the Cloud Tasks emulator is not installed: "
            ".venv/bin/pip install --no-deps 'gcloud-tasks-emulator>=0.6,<0.7'"
        )
    launcher = Path(__file__).with_name("cloud_tasks_emulator.py")
    return [sys.executable, str(launcher), str(port)]


def _answers_http(host: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://{host}/", timeout=1) as response:
            return response.status == 200
    except (OSError, urllib.error.URLError):
        return False


def _accepts_tcp(host: str) -> bool:
    address, _, port = host.rpartition(":")
    try:
        with socket.create_connection((address, int(port)), timeout=1):
            return True
    except OSError:
        return False


@dataclass(frozen=True)
class EmulatorKind:
    command: Callable[[int], list[str]]
    ready: Callable[[str], bool]


KINDS = {
    "firestore": EmulatorKind(_firestore_command, _answers_http),
    "pubsub": EmulatorKind(_pubsub_command, _answers_http),
    "tasks": EmulatorKind(_tasks_command, _accepts_tcp),
}

_lock = threading.Lock()
_running: dict[str, Emulator] = {}
_failed: dict[str, str] = {}


def emulator(name: str) -> Emulator:
    """The session's emulator `name`, started now if it is not running yet (or `missing`)."""
    with _lock:
        if name in _running:
            return _running[name]
        if name in _failed:
            pytest.fail(_failed[name], pytrace=False)
        kind = KINDS[name]
        port = free_port()
        command = kind.command(port)  # skips (or fails) when the emulator is not installed
        log = Path(tempfile.mkdtemp(prefix=f"chimera-{name}-emulator-")) / "emulator.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        started = Emulator(name, f"127.0.0.1:{port}", process, log)
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not kind.ready(started.host):
            if process.poll() is not None or time.monotonic() > deadline:
                started.stop()
                _failed[name] = (
                    f"the {name} emulator did not start within {STARTUP_TIMEOUT_S:.0f}s "
                    f"({' '.join(command)}); its log:\n{started.log_tail()}"
                )
                pytest.fail(_failed[name], pytrace=False)
            time.sleep(0.1)
        _running[name] = started
        return started


def stop_all() -> None:
    with _lock:
        for started in _running.values():
            started.stop()
        _running.clear()


atexit.register(stop_all)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    stop_all()


# The fixtures that start an emulator: a test using one is an emulator test, marked or not.
EMULATOR_FIXTURES = {
    f"{name}_{suffix}"
    for name in ("firestore", "pubsub", "tasks")
    for suffix in ("emulator", "project")
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that needs an emulator, so `pytest -m emulator` (Cloud Build) runs all."""
    for item in items:
        callspec = getattr(item, "callspec", None)
        emulated = callspec is not None and callspec.params.get("sut") in EMULATED_ADAPTERS
        if emulated or EMULATOR_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.emulator)


# --- Firestore ---------------------------------------------------------------------------


def reset_firestore(host: str, project: str, database: str = "(default)") -> None:
    """Delete every document of the project's database (an emulator-only endpoint)."""
    url = f"http://{host}/emulator/v1/projects/{project}/databases/{database}/documents"
    with urllib.request.urlopen(urllib.request.Request(url, method="DELETE"), timeout=10):
        pass


@contextmanager
def environment(**values: str) -> Iterator[None]:
    """The process's environment with `values` set inside the block, as it was after."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def firestore_client(project: str):  # type: ignore[no-untyped-def]
    """A Firestore client on the emulator; it reads FIRESTORE_EMULATOR_HOST only when built."""
    from google.cloud import firestore

    with environment(FIRESTORE_EMULATOR_HOST=emulator("firestore").host):
        return firestore.Client(project=project)


@dataclass
class EmulatedStore:
    """The contract suite's StoreUnderTest, on the Firestore emulator."""

    store: object
    queued: Callable[[str], bool]


def firestore_store_under_test(tmp_path: Path) -> EmulatedStore:
    """The contract suite's Firestore adapter: a fresh project, a fake queue for its tasks."""
    from shared.firestore_state import FirestoreStateStore

    queue = FakeTaskQueue()
    store = FirestoreStateStore(firestore_client(fresh_project()), queue)
    return EmulatedStore(store, lambda name: name in queue.tasks)


@pytest.fixture(scope="session")
def firestore_emulator() -> Emulator:
    return emulator("firestore")


@pytest.fixture
def firestore_project(firestore_emulator: Emulator, monkeypatch) -> Iterator[str]:
    """A fresh project on the Firestore emulator, with FIRESTORE_EMULATOR_HOST set."""
    project = fresh_project()
    monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", firestore_emulator.host)
    yield project
    reset_firestore(firestore_emulator.host, project)


# --- Pub/Sub -----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def pubsub_emulator() -> Emulator:
    return emulator("pubsub")


@pytest.fixture
def pubsub_project(pubsub_emulator: Emulator, monkeypatch) -> str:
    """A fresh project on the Pub/Sub emulator, with PUBSUB_EMULATOR_HOST set."""
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", pubsub_emulator.host)
    return fresh_project()


# --- Cloud Tasks -------------------------------------------------------------------------


def tasks_client(host: str):  # type: ignore[no-untyped-def]
    import grpc
    from google.cloud import tasks_v2
    from google.cloud.tasks_v2.services.cloud_tasks.transports import CloudTasksGrpcTransport

    return tasks_v2.CloudTasksClient(
        transport=CloudTasksGrpcTransport(channel=grpc.insecure_channel(host))
    )


@dataclass
class TasksProject:
    host: str
    project: str
    location: str
    queues: list[str]


@pytest.fixture(scope="session")
def tasks_emulator() -> Emulator:
    return emulator("tasks")


@pytest.fixture
def tasks_project(tasks_emulator: Emulator) -> Iterator[TasksProject]:
    """A fresh project on the Cloud Tasks emulator with every queue of shared/queues.py."""
    from shared.queues import QUEUES

    client = tasks_client(tasks_emulator.host)
    project = fresh_project()
    parent = f"projects/{project}/locations/{LOCATION}"
    names = [f"{parent}/queues/{queue}" for queue in QUEUES]
    for name in names:
        client.create_queue(parent=parent, queue={"name": name})
    yield TasksProject(tasks_emulator.host, project, LOCATION, names)
    for name in names:  # each queue has a dispatching thread in the emulator until deleted
        client.delete_queue(name=name)


# --- Functions on loopback, for the emulators to call ------------------------------------


@dataclass
class Delivery:
    path: str
    headers: dict[str, str]
    body: bytes


class RecordingMiddleware:
    """Notes each request (path, headers, body) before passing it on to `app`."""

    def __init__(self, app: Callable) -> None:
        self.app = app
        self.deliveries: list[Delivery] = []

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        environ["wsgi.input"] = io.BytesIO(body)
        headers = {
            key.removeprefix("HTTP_").replace("_", "-").title(): value
            for key, value in environ.items()
            if key.startswith("HTTP_") or key == "CONTENT_TYPE"
        }
        self.deliveries.append(Delivery(environ.get("PATH_INFO", ""), headers, body))
        return self.app(environ, start_response)


class FunctionsServer:
    """Functions Framework apps served at /functions/<name> on 127.0.0.1, as chimera/stack.py
    serves them; `url` is what settings.functions_url should be."""

    def __init__(self, apps: dict[str, Callable]) -> None:
        from werkzeug.middleware.dispatcher import DispatcherMiddleware
        from werkzeug.serving import make_server

        mounts = {f"/functions/{name}": _at_root(app) for name, app in apps.items()}
        self.recorder = RecordingMiddleware(DispatcherMiddleware(_not_found, mounts))
        self._server = make_server("127.0.0.1", 0, self.recorder, threaded=True)
        self.url = f"http://127.0.0.1:{self._server.server_port}/functions"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> FunctionsServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _at_root(app: Callable) -> Callable:
    """/functions/<name> is the function's "/", as its URL is on Cloud Functions; Flask would
    answer the empty path with a 308, which the Cloud Tasks emulator takes for a success."""

    def serve(environ: dict, start_response: Callable) -> object:
        environ["PATH_INFO"] = environ.get("PATH_INFO") or "/"
        return app(environ, start_response)

    return serve


def _not_found(environ: dict, start_response: Callable) -> list[bytes]:
    start_response("404 Not Found", [("Content-Type", "text/plain")])
    return [b"no function here\n"]


def wait_for(predicate: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}", pytrace=False)
        time.sleep(0.1)

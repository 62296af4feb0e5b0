"""The dev server's request threads are bounded by CHIMERA_HTTP_THREADS, not by its clients."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import requests
from hypothesis import given, settings
from hypothesis import strategies as st

from chimera.stack import LocalStack, PooledWSGIServer
from shared.settings import Settings


class HeldApp:
    """Answers each request once released, counting how many it holds at once."""

    def __init__(self) -> None:
        self.inside = 0
        self.peak = 0
        self.release = threading.Event()
        self._lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        with self._lock:
            self.inside += 1
            self.peak = max(self.peak, self.inside)
        self.release.wait(30)
        with self._lock:
            self.inside -= 1
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [environ["PATH_INFO"].encode()]


def until(condition: Callable[[], bool], timeout: float = 20) -> None:
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "the condition never held"
        time.sleep(0.01)


def request_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("http-")]


@settings(max_examples=8)
@given(threads=st.integers(1, 6), clients=st.integers(1, 40))
def test_requests_use_at_most_the_configured_threads_and_all_are_answered_when_clients_crowd_in(
    threads: int, clients: int
):
    app = HeldApp()
    server = PooledWSGIServer("127.0.0.1", 0, app, threads=threads)
    serving = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    serving.start()
    url = f"http://127.0.0.1:{server.server_port}"
    before = len(request_threads())
    try:
        with ThreadPoolExecutor(clients) as pool:
            answers = [pool.submit(requests.get, f"{url}/{i}", timeout=60) for i in range(clients)]
            # Every thread the server may use is busy; the other clients wait their turn.
            until(lambda: app.inside == min(threads, clients))
            assert len(request_threads()) - before <= threads
            app.release.set()
            bodies = [a.result().text for a in answers]
    finally:
        server.shutdown()
        serving.join(timeout=10)
    assert sorted(bodies) == sorted(f"/{i}" for i in range(clients))
    assert app.peak == min(threads, clients)


def test_the_dev_server_serves_with_the_configured_request_threads(tmp_path: Path):
    settings = Settings(home=tmp_path / "home", http_threads=3)
    stack = LocalStack(settings, serve_port=0).start()
    try:
        assert isinstance(stack._server, PooledWSGIServer)
        assert stack._server.max_threads == 3
        answer = requests.get(f"{stack.url}/runs", headers=stack.auth_headers, timeout=10)
        assert answer.status_code == 200
    finally:
        stack.stop()


def test_deliveries_over_http_get_threads_of_their_own_beside_the_clients(tmp_path: Path):
    settings = Settings(home=tmp_path / "home", http_threads=3)
    stack = LocalStack(settings, serve_port=0, over_http=True).start()
    try:
        assert stack.runtime is not None
        deliveries = sum(
            q.max_concurrent_dispatches
            for q in stack.runtime.queue.queues.values()  # type: ignore[attr-defined]
        )
        assert isinstance(stack._server, PooledWSGIServer)
        assert stack._server.max_threads == 3 + deliveries
    finally:
        stack.stop()

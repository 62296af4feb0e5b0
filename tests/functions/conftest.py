"""Functions served by the Functions Framework's test client, on in-memory fakes."""

from __future__ import annotations

import ast
import io
from dataclasses import replace
from pathlib import Path
from typing import Any

import functions_framework
import pytest

from shared.keys import local_credential
from shared.runtime import Runtime, install, runtime
from shared.settings import Settings
from shared.task_signing import signer_for
from tests.fakes import FakeStateStore, FakeTaskQueue

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def fakes(tmp_path):
    queue = FakeTaskQueue()
    store = FakeStateStore(queue)
    # No model here: planning takes the default plan (tests/unit/test_reasoning.py asks one).
    install(Runtime(Settings(agent_reasoning=False, home=tmp_path / "home"), store, queue))
    return store, queue


def signed_in(client: Any) -> Any:
    """`client` sending the CLI's own local credential, as `chimera onboard` does."""
    token = local_credential(runtime().settings.home)
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    return client


def client_of(source: str, target: str, *, signed: bool = False):
    """`source`'s `target` through the Functions Framework's test client; `signed`, each
    request is signed as the local dispatcher signs its deliveries (a queue's target)."""
    app = functions_framework.create_app(target, str(ROOT / source))
    if signed:
        app.wsgi_app = SignedByTheQueue(app.wsgi_app)  # type: ignore[method-assign]
    return app.test_client()


class SignedByTheQueue:
    """WSGI middleware that signs each request with the installed runtime's task-signing key,
    as the local dispatcher would: what was sent is what the target verifies."""

    def __init__(self, app: Any) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        settings = runtime().settings
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        environ["wsgi.input"] = io.BytesIO(body)
        name = environ.get("HTTP_X_CLOUDTASKS_TASKNAME", "")
        signer = signer_for(settings.home, settings.task_signature_window)
        environ["HTTP_X_CHIMERA_SIGNATURE"] = signer.signature(body, name)
        return self.app(environ, start_response)


def tool_client(function: str, **dependencies: object):
    """`function`'s deployed target, handed `dependencies` instead of what it would build.

    Each is named by the factory its main.py gives `per_runtime` (`SlackChat`, `JiraClient`,
    `SendGridMailer`, `language_model`, `enrichment_providers`) and injected through the
    installed runtime's overrides, on the store and queue of the `fakes` fixture.
    """
    source = f"tools/{function}/main.py"
    unknown = set(dependencies) - per_runtime_factories(ROOT / source)
    assert not unknown, f"{source} builds nothing named {sorted(unknown)} with per_runtime"
    install(replace(runtime(), overrides=dependencies))
    return client_of(source, "run_tool", signed=True)


def per_runtime_factories(source: Path) -> set[str]:
    """The names of the factories `source` hands to `per_runtime`: what a test may override."""
    return {
        ast.unparse(call.args[0]).rpartition(".")[2]
        for call in ast.walk(ast.parse(source.read_text()))
        if isinstance(call, ast.Call)
        and ast.unparse(call.func).rpartition(".")[2] == "per_runtime"
        and call.args
    }


class Recorded:
    """A fake that notes each use of itself: which of its methods the code under test asked for."""

    def __init__(self, fake: Any) -> None:
        self.fake = fake
        self.used: list[str] = []

    def __getattr__(self, name: str) -> Any:
        self.used.append(name)
        return getattr(self.fake, name)

"""Fixtures every suite shares: isolated settings and a clean runtime per test."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from hypothesis import settings as hypothesis_settings

from shared import runtime
from shared.guard import strings
from shared.model import OnboardingRequest, RunState

pytest_plugins = ["tests.emulators"]

# No per-example deadline (this machine is noisy; timings belong in bench/). On CI the examples
# are drawn from a fixed seed, so a landing never depends on luck; locally they vary per run.
hypothesis_settings.register_profile(
    "chimera", deadline=None, derandomize=bool(os.environ.get("CI")), print_blob=True
)
hypothesis_settings.load_profile("chimera")


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch) -> Iterator[None]:
    """No test sees another's state or the developer's environment."""
    for key in list(os.environ):
        if key.startswith("CHIMERA_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("CHIMERA_HOME", str(tmp_path / "home"))
    runtime.install(None)
    yield
    runtime.install(None)


def make_request(**changes) -> OnboardingRequest:
    fields = {
        "company_name": "Acme Corp",
        "domain": "acme.example",
        "contact_email": "ada@acme.example",
        "contact_name": "Ada Lovelace",
        "goal": "Roll out the analytics suite to the finance team",
        "slack_channel": "#client-onboarding",
    }
    fields.update(changes)
    return OnboardingRequest(**fields)


def every_string(value: object) -> Iterator[str]:
    """Every string in a JSON-like value, keys too (in the paths guard.strings names)."""
    for where, text in strings(value):
        yield where
        yield text


def make_run(**changes) -> RunState:
    request = changes.pop("request", None) or make_request()
    return RunState(
        run_id=request.run_id(), request_key=request.idempotency_key(), request=request, **changes
    )

"""Functions served by the Functions Framework's test client, on in-memory fakes."""

from __future__ import annotations

from pathlib import Path

import functions_framework
import pytest

from shared.runtime import Runtime, install
from shared.settings import Settings
from tests.fakes import FakeStateStore, FakeTaskQueue

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def fakes():
    queue = FakeTaskQueue()
    store = FakeStateStore(queue)
    # No model here: planning takes the default plan (tests/unit/test_reasoning.py asks one).
    install(Runtime(Settings(agent_reasoning=False), store, queue))
    return store, queue


def client_of(source: str, target: str):
    return functions_framework.create_app(target, str(ROOT / source)).test_client()

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
    install(Runtime(Settings(), store, queue))
    return store, queue


def client_of(source: str, target: str):
    return functions_framework.create_app(target, str(ROOT / source)).test_client()

"""The one place that picks adapters from settings; built once per instance, lazily."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar, cast

from shared.logs import configure_logging
from shared.queues import QUEUES
from shared.settings import Settings
from shared.state import StateStore
from shared.task_queue import TaskQueue

T = TypeVar("T")


@dataclass(frozen=True)
class Runtime:
    settings: Settings
    store: StateStore
    queue: TaskQueue
    # What `per_runtime` hands out instead of building, by its factory's name (`SlackChat`,
    # `enrichment_providers`): how a test injects its fakes into the deployed targets.
    overrides: Mapping[str, object] = field(default_factory=dict)


def build_runtime(settings: Settings) -> Runtime:
    location = settings.state_location
    if location.startswith("sqlite:///"):
        from shared.local_queue import LocalTaskQueue
        from shared.sqlite_db import SqliteDatabase
        from shared.sqlite_state import SqliteStateStore

        db = SqliteDatabase(Path(location.removeprefix("sqlite:///")))
        scale = settings.local_backoff_scale
        local_queue = LocalTaskQueue(db, {n: q.scaled(scale) for n, q in QUEUES.items()})
        if settings.backend == "local":
            return Runtime(settings, SqliteStateStore(db, local_queue), local_queue)
        queue = _cloud_tasks(settings)
        return Runtime(settings, SqliteStateStore(db, queue), queue)
    if location.startswith("firestore://"):
        from shared.firestore_state import FirestoreStateStore

        queue = _cloud_tasks(settings)
        return Runtime(settings, FirestoreStateStore.from_url(location, queue=queue), queue)
    raise ValueError(f"CHIMERA_STATE_URL: no store for {location!r}")


def _cloud_tasks(settings: Settings) -> TaskQueue:
    from shared.cloud_tasks_queue import CloudTasksQueue

    return CloudTasksQueue.from_settings(settings)


_lock = threading.Lock()
_current: Runtime | None = None


def runtime() -> Runtime:
    """This instance's runtime: from the environment on first use, unless one was installed."""
    global _current
    with _lock:
        if _current is None:
            settings = Settings.from_env()
            configure_logging(settings.log_format, secrets=settings.secret_values())
            _current = build_runtime(settings)
        return _current


def install(new: Runtime | None) -> None:
    """Use `new` for this process (the local stack and tests); None rebuilds from the env."""
    global _current
    with _lock:
        _current = new


def per_runtime(factory: Callable[[Settings], T]) -> Callable[[], T]:
    """A lazily built dependency (a vendor client), rebuilt when the runtime changes."""
    built: dict[int, T] = {}

    def get() -> T:
        current = runtime()
        injected = overridden(current, factory)
        if injected is not None:
            return injected
        key = id(current)
        if key not in built:
            built.clear()
            built[key] = factory(current.settings)
        return built[key]

    return get


def overridden(current: Runtime, factory: Callable[[Settings], T]) -> T | None:
    """What `current` injects in place of `factory`'s build, if anything."""
    name = getattr(factory, "__name__", "")
    return cast("T | None", current.overrides.get(name))

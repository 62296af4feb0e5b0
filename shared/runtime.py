"""The one place that picks adapters from settings; built once per instance, lazily."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

from shared.errors import PermanentError
from shared.llm import LanguageModel
from shared.logs import configure_logging
from shared.metrics import observe_queues
from shared.model import LlmUsage
from shared.queues import QUEUES
from shared.settings import Settings, SettingsError
from shared.state import StateStore
from shared.state_urls import sqlite_path
from shared.task_queue import TaskQueue
from shared.telemetry import configure_telemetry

log = logging.getLogger(__name__)

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
    """The store and queue the backend names: SQLite and the local queue in one database (a
    change and its tasks commit together), or Firestore and Cloud Tasks.

    Raises:
        SettingsError: settings that disagree (a state URL of the other backend, say).
    """
    settings.check()
    configure_telemetry(settings)  # once per process: the first runtime's exporter stays
    observe_queues(_installed_queue)
    location = settings.state_location
    if settings.backend == "local":
        from shared.local_queue import LocalTaskQueue
        from shared.sqlite_db import SqliteDatabase
        from shared.sqlite_state import SqliteStateStore

        db = SqliteDatabase(sqlite_path(location))
        scale = settings.local_backoff_scale
        queues = {n: q.scaled(scale) for n, q in QUEUES.items()}
        if not settings.queue_rate_limits:
            queues = {n: q.unlimited() for n, q in queues.items()}
        queue = LocalTaskQueue(db, queues)
        store = SqliteStateStore(db, queue, event_cap=settings.event_log_cap)
        return Runtime(settings, store, queue)
    from shared.cloud_tasks_queue import CloudTasksQueue
    from shared.firestore_state import FirestoreStateStore

    cloud_tasks = CloudTasksQueue.from_settings(settings)
    firestore = FirestoreStateStore.from_url(
        location, cloud_tasks, retention=settings.retention, event_cap=settings.event_log_cap
    )
    return Runtime(settings, firestore, cloud_tasks)


def language_model(settings: Settings) -> LanguageModel:
    """The model settings configure: Gemini, on the Gemini API or on Vertex AI.

    Raises:
        ValueError: the model is misconfigured (say, Vertex AI without a project).
    """
    from shared.gemini import GeminiLanguageModel  # the SDK only where a model is used

    return GeminiLanguageModel(settings)


def reasoning_model(settings: Settings) -> LanguageModel:
    """The model the orchestrator plans with, on its own shorter timeout (the orchestrator's
    task must answer within the dispatch deadline). Misconfigured, a stand-in that answers
    with the configuration error, so runs fall back to the default plan, recorded."""
    timeout = min(settings.vendor_read_timeout, settings.reasoning_timeout)
    try:
        return language_model(settings.replace(vendor_read_timeout=timeout))
    except ValueError as exc:
        log.error("no model to plan with: %s", exc)
        return MisconfiguredModel(str(exc))


class MisconfiguredModel:
    """Answers every question with the configuration error, a permanent failure."""

    def __init__(self, problem: str) -> None:
        self.problem = problem

    def generate_json(
        self, *, system: str, prompt: str, schema: dict[str, Any], run_id: str
    ) -> tuple[dict[str, Any], LlmUsage]:
        raise PermanentError(f"the model is misconfigured: {self.problem}", code="misconfigured")


def enrichment_adapters(
    settings: Settings, adapters: Mapping[str, Callable[[Settings], T]]
) -> list[tuple[str, T]]:
    """Each enrichment provider settings name, in their order, built by the adapter the tool
    hands in under that name (shared/ cannot import the tools' adapters itself).

    Raises:
        SettingsError: settings name no provider, or one the tool has no adapter for.
    """
    names = settings.enrichment_provider_names
    if not names or any(name not in adapters for name in names):
        raise SettingsError(
            f"CHIMERA_ENRICHMENT_PROVIDERS={settings.enrichment_providers!r}: "
            f"name one or more of {', '.join(adapters)}"
        )
    return [(name, adapters[name](settings)) for name in names]


_lock = threading.Lock()
_current: Runtime | None = None


def runtime() -> Runtime:
    """This instance's runtime: from the environment on first use, unless one was installed."""
    global _current
    with _lock:
        if _current is None:
            settings = Settings.from_env()
            configure_logging(
                settings.log_format,
                secrets=settings.secret_values(),
                project=settings.gcp_project,
            )
            _current = build_runtime(settings)
        return _current


def _installed_queue() -> TaskQueue | None:
    """The queue of the runtime in use, for the queue gauges (never one built for them)."""
    current = _current
    return current.queue if current is not None else None


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

"""The runtime: the one place adapters are chosen from settings, and how they are joined."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.errors import PermanentError
from shared.gemini import GeminiLanguageModel
from shared.local_queue import LocalTaskQueue
from shared.model import Task
from shared.runtime import (
    MisconfiguredModel,
    build_runtime,
    enrichment_adapters,
    language_model,
    reasoning_model,
)
from shared.settings import Settings, SettingsError
from shared.sqlite_db import SqliteDatabase
from shared.sqlite_state import SqliteStateStore
from tests.conftest import make_run


def _watchdog(name: str) -> Task:
    return Task(queue="orchestrator", name=name, payload={"run_id": "x", "kind": "watchdog"})


def _create_twice(store: SqliteStateStore) -> None:
    """The same run created twice, each time with its own watchdog: the second changes nothing."""
    run = make_run()
    assert store.create_run(run, watchdogs=[_watchdog("first")])[1] is True
    assert store.create_run(run, watchdogs=[_watchdog("second")])[1] is False


def test_local_runtime_commits_a_watchdog_only_with_the_change_it_watches(tmp_path):
    rt = build_runtime(Settings(home=tmp_path))
    assert isinstance(rt.store, SqliteStateStore) and isinstance(rt.queue, LocalTaskQueue)

    _create_twice(rt.store)

    assert rt.queue.get("first") is not None
    assert rt.queue.get("second") is None  # in the transaction that changed nothing


def test_queue_on_another_database_gets_watchdogs_before_the_commit_when_not_joined(tmp_path):
    queue = LocalTaskQueue(SqliteDatabase(tmp_path / "queue.db"))
    store = SqliteStateStore(SqliteDatabase(tmp_path / "state.db"), queue)

    _create_twice(store)

    # Enqueued ahead of a commit it cannot join, as the StateStore port says.
    assert queue.get("first") is not None and queue.get("second") is not None


@pytest.mark.parametrize(
    "settings",
    [
        Settings(state_url="firestore://acme-prod"),
        Settings(backend="gcp", gcp_project="acme-prod", state_url="sqlite:///chimera.db"),
        Settings(backend="gcp"),
    ],
)
def test_runtime_refuses_settings_that_disagree_before_building_anything(settings, tmp_path):
    with pytest.raises(SettingsError, match="CHIMERA_STATE_URL"):
        build_runtime(settings.replace(home=tmp_path))
    assert list(tmp_path.iterdir()) == []


class Built:
    """A stand-in adapter: remembers its name and the settings it was built with."""

    def __init__(self, name: str, settings: Settings) -> None:
        self.name, self.settings = name, settings


ADAPTERS = {
    "clearbit": lambda s: Built("clearbit", s),
    "website": lambda s: Built("website", s),
}


@given(
    names=st.lists(st.sampled_from(sorted(ADAPTERS)), min_size=1, max_size=6),
    upper=st.booleans(),
)
def test_enrichment_adapters_are_built_once_each_in_the_order_settings_name_them(names, upper):
    written = " , ".join(n.upper() if upper else n for n in names)
    settings = Settings(enrichment_providers=written)

    built = enrichment_adapters(settings, ADAPTERS)

    assert [name for name, _ in built] == list(dict.fromkeys(names))
    assert all(a.name == name and a.settings is settings for name, a in built)


@pytest.mark.parametrize("names", ["", " , ", "clearbit,hubspot", "website,clearbit "])
def test_enrichment_adapters_are_refused_when_settings_name_one_the_tool_lacks(names):
    only_clearbit = {"clearbit": ADAPTERS["clearbit"]}
    with pytest.raises(SettingsError, match="CHIMERA_ENRICHMENT_PROVIDERS.*clearbit"):
        enrichment_adapters(Settings(enrichment_providers=names), only_clearbit)


def test_reasoning_model_answers_within_the_reasoning_timeout_when_it_is_the_shorter():
    def timeout_ms(model: object) -> int:
        assert isinstance(model, GeminiLanguageModel)
        return model._client._api_client._http_options.timeout

    assert timeout_ms(reasoning_model(Settings(reasoning_timeout=2.5))) == 2500
    assert timeout_ms(reasoning_model(Settings(vendor_read_timeout=4, reasoning_timeout=8))) == 4000
    assert timeout_ms(language_model(Settings(reasoning_timeout=2.5))) == 10_000


def test_misconfigured_reasoning_model_answers_every_question_with_its_problem():
    model = reasoning_model(Settings(gemini_vertexai=True))  # Vertex AI, but no project
    assert isinstance(model, MisconfiguredModel)
    with pytest.raises(PermanentError, match="CHIMERA_GEMINI_PROJECT") as refused:
        model.generate_json(system="s", prompt="p", schema={}, run_id="run-1")
    assert refused.value.code == "misconfigured" and not refused.value.retryable
    with pytest.raises(ValueError, match="CHIMERA_GEMINI_PROJECT"):
        language_model(Settings(gemini_vertexai=True))  # the tools' model fails, not falls back


def test_queue_rate_limits_off_lifts_the_local_dispatch_rates_and_keeps_the_rest(tmp_path):
    limited = build_runtime(Settings(home=tmp_path / "a")).queue
    lifted = build_runtime(
        Settings.from_env({"CHIMERA_QUEUE_RATE_LIMITS": "off"}).replace(home=tmp_path / "b")
    ).queue
    assert isinstance(limited, LocalTaskQueue) and isinstance(lifted, LocalTaskQueue)
    for name, config in limited.queues.items():
        assert config.max_dispatches_per_second < float("inf")
        assert lifted.queues[name].max_dispatches_per_second == float("inf")
        assert lifted.queues[name].max_concurrent_dispatches == config.max_concurrent_dispatches
        assert lifted.queues[name].max_attempts == config.max_attempts

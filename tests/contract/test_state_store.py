"""The StateStore contract, run against every adapter that can run here."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta

import pytest

from shared.breaker import BreakerPolicy, CircuitBreaker
from shared.errors import CircuitOpen, Conflict, VendorUnavailable
from shared.keys import ApiKey, key_hash, new_token
from shared.local_queue import LocalTaskQueue
from shared.model import (
    BreakerState,
    Event,
    Rejection,
    RunStatus,
    StepError,
    StepOutcome,
    Task,
    utcnow,
)
from shared.run_filter import RunFilter
from shared.sqlite_db import SqliteDatabase
from shared.sqlite_state import SqliteStateStore, prefix_query
from shared.state import StateStore
from tests.conftest import make_request, make_run
from tests.emulators import firestore_store_under_test
from tests.fakes import FakeStateStore


@dataclass
class StoreUnderTest:
    store: StateStore
    queued: Callable[[str], bool]  # was a task of this name queued?


def _fake(tmp_path) -> StoreUnderTest:
    store = FakeStateStore()
    return StoreUnderTest(store, lambda name: name in store.queue.tasks)


def _sqlite(tmp_path) -> StoreUnderTest:
    db = SqliteDatabase(tmp_path / "state.db")
    queue = LocalTaskQueue(db)
    return StoreUnderTest(SqliteStateStore(db, queue), lambda name: queue.get(name) is not None)


ADAPTERS: dict[str, Callable] = {
    "fake": _fake,
    "sqlite": _sqlite,
    "firestore": firestore_store_under_test,
}


@pytest.fixture(params=sorted(ADAPTERS))
def sut(request, tmp_path) -> Iterator[StoreUnderTest]:
    yield ADAPTERS[request.param](tmp_path)


def _task(name: str) -> Task:
    return Task(queue="orchestrator", name=name, payload={"run_id": "x", "kind": "start"})


def test_create_run_is_idempotent_when_created_twice(sut):
    run = make_run()
    first, created = sut.store.create_run(
        run,
        events=[Event(run_id=run.run_id, kind="run.created", actor="t")],
        tasks=[_task("start-1")],
    )
    again, created_again = sut.store.create_run(
        run,
        events=[Event(run_id=run.run_id, kind="run.created", actor="t")],
        tasks=[_task("start-2")],
    )
    assert created and not created_again
    assert again == first and first.version == 1
    assert [e.kind for e in sut.store.events(run.run_id)] == ["run.created"]
    assert sut.queued("start-1") and not sut.queued("start-2")


def test_load_returns_none_when_run_is_missing(sut):
    assert sut.store.load("run-missing") is None


def test_transition_bumps_version_and_emits_tasks(sut):
    run, _ = sut.store.create_run(make_run())
    moved = sut.store.transition(
        run.evolve(status=RunStatus.RUNNING),
        expected_version=1,
        events=[Event(run_id=run.run_id, kind="x", actor="t")],
        tasks=[_task("dispatch-1")],
    )
    assert moved.version == 2
    loaded = sut.store.load(run.run_id)
    assert loaded.status is RunStatus.RUNNING and loaded.version == 2
    assert sut.queued("dispatch-1")


def test_transition_raises_conflict_when_version_is_stale(sut):
    run, _ = sut.store.create_run(make_run())
    sut.store.transition(run.evolve(status=RunStatus.RUNNING), expected_version=1)
    with pytest.raises(Conflict):
        sut.store.transition(
            run.evolve(status=RunStatus.PARKED), expected_version=1, tasks=[_task("lost")]
        )
    assert sut.store.load(run.run_id).status is RunStatus.RUNNING
    assert not sut.queued("lost")


def test_transition_records_outcomes_once_with_the_change(sut):
    run, _ = sut.store.create_run(make_run())
    kept = StepOutcome(run_id=run.run_id, step_id="plan", tool="plan", ok=True, summary="first")
    sut.store.record_outcome(kept)
    fresh = StepOutcome(run_id=run.run_id, step_id="adapt-enrich", tool="adapt", ok=True)
    later = kept.model_copy(update={"summary": "second"})
    sut.store.transition(
        run.evolve(status=RunStatus.RUNNING), expected_version=1, outcomes=[later, fresh]
    )
    # As record_outcome: a step's first record stands; one without a record gets this one.
    assert sut.store.outcomes(run.run_id) == {"plan": kept, "adapt-enrich": fresh}


def test_a_stale_transition_records_none_of_its_outcomes(sut):
    run, _ = sut.store.create_run(make_run())
    sut.store.transition(run.evolve(status=RunStatus.RUNNING), expected_version=1)
    lost = StepOutcome(run_id=run.run_id, step_id="plan", tool="plan", ok=True)
    with pytest.raises(Conflict):
        sut.store.transition(run.evolve(reason="late"), expected_version=1, outcomes=[lost])
    assert sut.store.outcomes(run.run_id) == {}


def test_concurrent_transitions_have_one_winner_when_racing(sut):
    run, _ = sut.store.create_run(make_run())
    results: list[str] = []
    barrier = threading.Barrier(6)

    def contend(i: int) -> None:
        barrier.wait()
        try:
            sut.store.transition(run.evolve(reason=f"writer {i}"), expected_version=1)
            results.append(f"won {i}")
        except Conflict:
            results.append("conflict")

    threads = [threading.Thread(target=contend, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [r for r in results if r.startswith("won")]
    assert len(winners) == 1 and results.count("conflict") == 5
    assert sut.store.load(run.run_id).reason == "writer " + winners[0].split()[1]


def test_events_keep_their_order(sut):
    run, _ = sut.store.create_run(make_run())
    for kind in ("a", "b", "c"):
        sut.store.append_event(Event(run_id=run.run_id, kind=kind, actor="t"))
    sut.store.append_event(Event(run_id="other", kind="z", actor="t"))
    assert [e.kind for e in sut.store.events(run.run_id)] == ["a", "b", "c"]


def test_record_outcome_keeps_the_first_when_recorded_twice(sut):
    first = StepOutcome(
        run_id="r1",
        step_id="jira",
        tool="create_jira_project",
        ok=True,
        output={"project_key": "AC"},
    )
    second = first.model_copy(update={"ok": False, "error": StepError(code="x", message="y")})
    assert sut.store.record_outcome(first) == first
    assert sut.store.record_outcome(second) == first
    assert sut.store.outcome("r1", "jira") == first
    assert sut.store.outcome("r1", "slack") is None
    assert sut.store.outcomes("r1") == {"jira": first}


def test_record_outcome_queues_what_follows_from_the_stored_one(sut):
    first = StepOutcome(run_id="r1", step_id="jira", tool="create_jira_project", ok=True)
    told = []

    def report(stored: StepOutcome) -> list[Task]:
        told.append(stored)
        return [_task(f"report-{len(told)}")]

    assert sut.store.record_outcome(first, then=report) == first
    assert sut.queued("report-1")
    # Recorded again: what follows is worked out from the first outcome, which is kept.
    again = first.model_copy(update={"ok": False, "error": StepError(code="x", message="y")})
    assert sut.store.record_outcome(again, then=report) == first
    assert told == [first, first] and sut.queued("report-2")


def test_discard_outcome_lets_a_step_be_recorded_again(sut):
    failed = StepOutcome(
        run_id="r1", step_id="jira", tool="t", ok=False, error=StepError(code="x", message="y")
    )
    sut.store.record_outcome(failed)
    sut.store.discard_outcome("r1", "jira")
    ok = failed.model_copy(update={"ok": True, "error": None, "generation": 2})
    assert sut.store.record_outcome(ok) == ok


def test_list_runs_filters_and_limits(sut):
    for i in range(4):
        run, _ = sut.store.create_run(make_run(request=make_request(request_id=f"r{i}")))
        if i % 2:
            sut.store.transition(run.evolve(status=RunStatus.PARKED), expected_version=1)
    assert len(sut.store.list_runs()) == 4
    parked = sut.store.list_runs(RunFilter(status=RunStatus.PARKED))
    assert {r.request.request_id for r in parked} == {"r1", "r3"}
    assert len(sut.store.list_runs(RunFilter(limit=3))) == 3


def test_list_runs_filters_on_an_attention_flag_with_or_without_a_status(sut):
    flags = {
        "r0": ("template_email",),
        "r1": ("draft_refused", "injection_suspected", "template_email"),
        "r2": ("injection_suspected",),
        "r3": (),
    }
    for i, (request_id, attention) in enumerate(flags.items()):
        run, _ = sut.store.create_run(make_run(request=make_request(request_id=request_id)))
        status = RunStatus.SUCCEEDED if i % 2 else RunStatus.PARKED
        sut.store.transition(run.evolve(status=status, attention=attention), expected_version=1)

    def listed(**query) -> set[str]:
        return {r.request.request_id for r in sut.store.list_runs(RunFilter(**query))}

    assert listed(attention="template_email") == {"r0", "r1"}
    assert listed(attention="injection_suspected") == {"r1", "r2"}
    assert listed(attention="draft_refused") == {"r1"}
    assert listed(attention="not_raised") == set()
    assert listed(attention="template_email", status=RunStatus.SUCCEEDED) == {"r1"}
    assert listed(attention="injection_suspected", status=RunStatus.PARKED) == {"r2"}
    assert len(sut.store.list_runs(RunFilter(attention="template_email", limit=1))) == 1
    loaded = sut.store.load(make_request(request_id="r1").run_id())
    assert loaded.attention == flags["r1"]


def test_rejections_are_kept_newest_first(sut):
    sut.store.record_rejection(Rejection(source="pubsub", reason="one", excerpt="{"))
    sut.store.record_rejection(Rejection(source="tool-jira", reason="two", excerpt="["))
    assert [r.reason for r in sut.store.rejections()] == ["two", "one"]


def test_breaker_state_changes_by_compare_and_set_with_one_winner_when_racing(sut):
    assert sut.store.breaker("jira") == BreakerState(name="jira")
    opened = BreakerState(
        name="jira", state="open", failures=40, calls=50, opened_at=utcnow().replace(microsecond=0)
    )
    results: list[bool] = []
    barrier = threading.Barrier(6)

    def contend() -> None:
        barrier.wait()
        results.append(sut.store.save_breaker(opened, expected_version=0))

    threads = [threading.Thread(target=contend) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False] * 5 + [True]
    assert sut.store.breaker("jira") == opened.model_copy(update={"version": 1})
    closed = BreakerState(name="jira", failures=1, calls=10)
    assert sut.store.save_breaker(closed, expected_version=0) is False  # stale
    assert sut.store.save_breaker(closed, expected_version=1) is True
    assert sut.store.breaker("jira") == closed.model_copy(update={"version": 2})


def test_a_breaker_opened_through_one_instance_sheds_calls_in_another(sut):
    policy = BreakerPolicy(
        failure_rate=0.5, window=4, minimum_calls=4, cooldown=3600, state_cache=0
    )
    here, there = (CircuitBreaker(sut.store, "slack", policy) for _ in range(2))
    there.before_call()  # closed, as far as it knows
    for _ in range(4):
        with pytest.raises(VendorUnavailable), here.guard():
            raise VendorUnavailable("503")
    with pytest.raises(CircuitOpen):
        there.before_call()
    assert sut.store.breaker("slack").state == "open"


def _key(name: str, token: str | None = None) -> ApiKey:
    # Times at millisecond precision: what every adapter keeps.
    return ApiKey(
        name=name,
        key_hash=key_hash(token or new_token()),
        created_at=utcnow().replace(microsecond=0),
    )


def test_a_key_name_is_taken_once_even_after_its_key_is_revoked(sut):
    first = _key("ci")
    assert sut.store.create_key(first) is True
    assert sut.store.create_key(_key("ci")) is False
    assert sut.store.revoke_key("ci", utcnow()) is not None
    assert sut.store.create_key(_key("ci")) is False
    assert [k.key_hash for k in sut.store.list_keys()] == [first.key_hash]


def test_a_key_is_found_by_its_hash_and_a_revoke_keeps_its_first_time(sut):
    token = new_token()
    key = _key("console", token)
    sut.store.create_key(key)
    sut.store.create_key(_key("other"))
    assert sut.store.key_by_hash(key_hash(token)) == key
    assert sut.store.key_by_hash(key_hash(new_token())) is None

    first = utcnow().replace(microsecond=0)
    revoked = sut.store.revoke_key("console", first)
    assert revoked == key.model_copy(update={"revoked_at": first})
    again = sut.store.revoke_key("console", first + timedelta(hours=1))
    assert again is not None and again.revoked_at == first
    stored = sut.store.key_by_hash(key_hash(token))
    assert stored is not None and stored.revoked_at == first and not stored.active
    assert sut.store.revoke_key("nobody", first) is None
    assert {k.name: k.active for k in sut.store.list_keys()} == {"console": False, "other": True}


def test_concurrent_creates_of_one_key_name_have_one_winner(sut):
    results: list[bool] = []
    barrier = threading.Barrier(5)

    def contend() -> None:
        barrier.wait()
        results.append(sut.store.create_key(_key("racer")))

    threads = [threading.Thread(target=contend) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False] * 4 + [True]
    assert len(sut.store.list_keys()) == 1


# Ids that share prefixes at every length, with characters at the edges of the code point
# order (the ASCII end, a BMP character before the surrogates, the last code point).
PREFIXED_IDS = (
    "run-0a1b",
    "run-0a1c",
    "run-0a1",
    "run-0b",
    "run-1",
    "run-z",
    "run-~",
    "run-\ud7ff",
    "run-\ud7ffx",
    "run-\ue000",
    "run-\U0010ffff",
    "run-\U0010ffffa",
    "run.",
    "rum-9",
)


def _with_id(run_id: str):  # type: ignore[no-untyped-def]
    run = make_run(request=make_request(request_id=run_id))
    return run.model_copy(update={"run_id": run_id})


def test_run_ids_with_prefix_are_the_ids_in_range_in_order_when_ids_share_prefixes(sut):
    for run_id in PREFIXED_IDS:
        sut.store.create_run(_with_id(run_id))
    prefixes = {run_id[:n] for run_id in PREFIXED_IDS for n in range(len(run_id) + 1)}
    prefixes |= {"run-0a1bc", "run-2", "run-\ud7fe", "x", "run-\U0010ffffb", "run/", "a/b"}
    for prefix in sorted(prefixes):
        everything = sorted(r for r in PREFIXED_IDS if r.startswith(prefix))
        assert sut.store.run_ids_with_prefix(prefix, 100) == everything, prefix
        assert sut.store.run_ids_with_prefix(prefix, 2) == everything[:2], prefix


def test_run_ids_with_prefix_finds_the_whole_id_alone_when_no_other_extends_it(sut):
    run = make_run()
    sut.store.create_run(run)
    assert sut.store.run_ids_with_prefix(run.run_id, 5) == [run.run_id]
    assert sut.store.run_ids_with_prefix(run.run_id[:7], 5) == [run.run_id]
    assert sut.store.run_ids_with_prefix(run.run_id + "0", 5) == []


def test_run_ids_with_prefix_reads_a_range_of_the_primary_key_on_sqlite_when_prefixed(tmp_path):
    db = SqliteDatabase(tmp_path / "state.db")
    SqliteStateStore(db, LocalTaskQueue(db))
    for prefix in ("", "run-", "run-\U0010ffff"):
        sql, params = prefix_query(prefix, 5)
        plan = " ".join(r[3] for r in db.connection().execute("EXPLAIN QUERY PLAN " + sql, params))
        assert "SEARCH runs USING COVERING INDEX sqlite_autoindex_runs_1 (run_id>" in plan, plan

"""The console's store queries, against every store: the tool and time filters, the search by
business key, paging, counts per status, recently changed runs and the change mark; and the
SQLite plans and migration behind them."""

from __future__ import annotations

import itertools
import sqlite3
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.model import Event, RunState, RunStatus, StepStatus, StepSummary, utcnow
from shared.run_filter import RunFilter, business_keys, folded
from shared.sqlite_db import SqliteDatabase
from shared.sqlite_state import SqliteStateStore
from tests.conftest import make_request, make_run
from tests.contract.test_state_store import ADAPTERS
from tests.strategies import onboarding_batches

_fresh = itertools.count()


@pytest.fixture(params=sorted(ADAPTERS))
def sut(request, tmp_path):
    """The store (named as tests/emulators.py marks the emulated ones)."""
    return ADAPTERS[request.param](tmp_path).store


def _created(store, request_id: str, minutes_ago: float = 0, **changes) -> RunState:
    base = utcnow() - timedelta(minutes=minutes_ago)
    run = make_run(request=make_request(request_id=request_id), created_at=base)
    stored, _ = store.create_run(run)
    if changes:
        stored = store.transition(stored.evolve(**changes), expected_version=stored.version)
    return stored


def _step(step_id: str, tool: str, status: StepStatus) -> StepSummary:
    return StepSummary(step_id=step_id, tool=tool, status=status)


def _ids(runs) -> list[str]:
    return [r.request.request_id for r in runs]


def test_the_tool_filter_takes_a_tool_or_its_function_and_only_current_steps(sut):
    store = sut
    steps = {
        "out": {"jira": _step("jira", "create_jira_project", StepStatus.DISPATCHED)},
        "parked": {"jira": _step("jira", "create_jira_project", StepStatus.FAILED)},
        "done": {"jira": _step("jira", "create_jira_project", StepStatus.SUCCEEDED)},
        "mail": {"email": _step("email", "send_welcome_email", StepStatus.DISPATCHED)},
    }
    for i, (request_id, step) in enumerate(steps.items()):
        _created(store, request_id, minutes_ago=10 - i, steps=step, status=RunStatus.RUNNING)

    def listed(**query) -> set[str]:
        return set(_ids(store.list_runs(RunFilter(**query))))

    assert listed(tool="create_jira_project") == {"out", "parked"}
    assert listed(tool="jira") == {"out", "parked"}
    assert listed(tool="sendgrid") == listed(tool="send_welcome_email") == {"mail"}
    assert listed(tool="slack") == set()
    assert listed(tool="jira", status=RunStatus.RUNNING) == {"out", "parked"}
    assert listed(tool="jira", status=RunStatus.PARKED) == set()


def test_the_time_filter_keeps_runs_created_in_the_window(sut):
    store = sut
    for i in range(5):
        _created(store, f"r{i}", minutes_ago=50 - 10 * i)  # r0 oldest, r4 newest
    now = utcnow()
    after = RunFilter(created_after=now - timedelta(minutes=35))
    before = RunFilter(created_before=now - timedelta(minutes=25))
    both = RunFilter(
        created_after=now - timedelta(minutes=45), created_before=now - timedelta(minutes=15)
    )
    assert _ids(store.list_runs(after)) == ["r4", "r3", "r2"]
    assert _ids(store.list_runs(before)) == ["r2", "r1", "r0"]
    assert _ids(store.list_runs(both)) == ["r3", "r2", "r1"]


def test_pages_are_newest_first_and_together_hold_every_run_once(sut):
    store = sut
    for i in range(7):
        _created(store, f"r{i}", minutes_ago=70 - i)
    pages = [_ids(store.list_runs(RunFilter(limit=3, offset=o))) for o in (0, 3, 6, 9)]
    assert pages == [["r6", "r5", "r4"], ["r3", "r2", "r1"], ["r0"], []]


def test_counts_per_status_follow_the_filter_but_not_its_status(sut):
    store = sut
    statuses = [RunStatus.PARKED, RunStatus.PARKED, RunStatus.SUCCEEDED, RunStatus.RUNNING]
    for i, status in enumerate(statuses):
        _created(store, f"r{i}", minutes_ago=10 - i, status=status, attention=("x",) if i else ())
    counts = store.count_runs(RunFilter(status=RunStatus.PARKED))
    assert counts == {**dict.fromkeys(s.value for s in RunStatus), **counts}  # every status
    assert (counts["parked"], counts["succeeded"], counts["running"], counts["pending"]) == (
        2,
        1,
        1,
        0,
    )
    flagged = store.count_runs(RunFilter(attention="x"))
    assert (flagged["parked"], flagged["succeeded"], flagged["running"]) == (1, 1, 1)
    searched = store.count_runs(RunFilter(search="r2"))
    assert sum(searched.values()) == 1 and searched["succeeded"] == 1


def test_recent_runs_are_those_changed_since_latest_first(sut):
    store = sut
    old = _created(store, "old")
    middle = _created(store, "middle")
    since = utcnow()
    store.transition(middle.evolve(status=RunStatus.RUNNING), expected_version=middle.version)
    new = _created(store, "new")
    recent = store.recent_runs(since)
    assert _ids(recent) == ["new", "middle"]
    assert old.run_id not in {r.run_id for r in store.recent_runs(since, limit=5)}
    assert len(store.recent_runs(since - timedelta(hours=1), limit=2)) == 2
    assert new.run_id == recent[0].run_id


def test_the_change_mark_moves_with_a_transition_and_with_each_event(sut):
    store = sut
    run = _created(store, "r0")
    assert store.change_mark("run-missing") is None
    marks = [store.change_mark(run.run_id)]
    store.append_event(Event(run_id=run.run_id, kind="step.retry", actor="t", step_id="jira"))
    marks.append(store.change_mark(run.run_id))
    assert marks[-1] == store.change_mark(run.run_id)  # nothing changed: the same mark
    store.transition(run.evolve(status=RunStatus.RUNNING), expected_version=run.version)
    marks.append(store.change_mark(run.run_id))
    store.append_event(Event(run_id=run.run_id, kind="step.retry", actor="t", step_id="jira"))
    marks.append(store.change_mark(run.run_id))
    assert len(set(marks)) == 4


def test_a_search_finds_a_run_by_its_id_or_its_prefix(sut):
    store = sut
    run = _created(store, "r0")
    _created(store, "r1")
    assert _ids(store.list_runs(RunFilter(search=run.run_id))) == ["r0"]
    assert _ids(store.list_runs(RunFilter(search=run.run_id[:12]))) == ["r0"]


def _shouted(text: str, flips: list[bool]) -> str:
    return "".join(c.upper() if flip else c for c, flip in zip(text, itertools.cycle(flips)))


@settings(max_examples=12, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    batch=onboarding_batches(min_size=2, max_size=8),
    flips=st.lists(st.booleans(), min_size=1, max_size=5),
)
def test_a_search_by_any_business_key_finds_its_runs_whatever_the_case(sut, batch, flips):
    store, example = sut, next(_fresh)  # one store for every example: ids unique per example
    runs = []
    for i, request in enumerate(batch):
        request = request.model_copy(update={"request_id": f"req-{example}-{i}"})
        stored, _ = store.create_run(
            RunState(
                run_id=request.run_id(), request_key=request.idempotency_key(), request=request
            )
        )
        runs.append(stored)
    for run in runs:
        request = run.request
        for key in (
            request.company_name,
            request.domain,
            request.contact_email,
            request.request_id,
        ):
            query = RunFilter(search=_shouted(key, flips), limit=100)
            found = store.list_runs(query)
            assert run.run_id in {r.run_id for r in found}, key
            # Nothing found that the search does not name.
            assert all(any(folded(key) in k for k in business_keys(r)) for r in found)


def test_a_search_finds_a_part_of_a_company_name_on_sqlite(tmp_path):
    db = SqliteDatabase(tmp_path / "state.db")
    store = SqliteStateStore(db)
    store.create_run(make_run(request=make_request(company_name="Stadtwerke München GmbH")))
    store.create_run(make_run(request=make_request(company_name="Acme", domain="acme.io")))
    assert [r.request.company_name for r in store.list_runs(RunFilter(search="MÜNCH"))] == [
        "Stadtwerke München GmbH"
    ]


def _plan(db: SqliteDatabase, sql: str, params: tuple = ()) -> str:
    rows = db.connection().execute("EXPLAIN QUERY PLAN " + sql, params).fetchall()
    return " | ".join(row["detail"] for row in rows)


def test_sqlite_serves_the_lists_from_indexes_without_sorting(tmp_path):
    db = SqliteDatabase(tmp_path / "state.db")
    SqliteStateStore(db)
    newest = "SELECT doc FROM runs ORDER BY created_at DESC, run_id DESC LIMIT 50 OFFSET 0"
    by_status = (
        "SELECT doc FROM runs WHERE status = ? ORDER BY created_at DESC, run_id DESC LIMIT 50"
    )
    recent = "SELECT doc FROM runs WHERE updated_at >= ? ORDER BY updated_at DESC LIMIT 50"
    counts = "SELECT status, COUNT(*) FROM runs GROUP BY status"
    for sql, params, index in [
        (newest, (), "runs_newest"),
        (by_status, ("parked",), "runs_newest_by_status"),
        (recent, ("2026",), "runs_by_updated"),
    ]:
        plan = _plan(db, sql, params)
        assert index in plan and "TEMP B-TREE" not in plan, plan
    assert "TEMP B-TREE" not in _plan(db, counts)


def test_a_database_from_before_the_query_columns_gets_them_filled(tmp_path):
    path = tmp_path / "state.db"
    run = make_run(
        steps={"jira": _step("jira", "create_jira_project", StepStatus.FAILED)},
        status=RunStatus.PARKED,
    ).evolve(version=1)
    with sqlite3.connect(path) as conn:
        conn.execute(
            "CREATE TABLE runs (run_id TEXT PRIMARY KEY, request_key TEXT NOT NULL UNIQUE,"
            " status TEXT NOT NULL, version INTEGER NOT NULL, doc TEXT NOT NULL,"
            " created_at TEXT NOT NULL, updated_at TEXT NOT NULL)"
        )
        conn.execute(
            "INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                run.run_id,
                run.request_key,
                run.status.value,
                1,
                run.model_dump_json(),
                run.created_at.isoformat(),
                run.updated_at.isoformat(),
            ),
        )
    store = SqliteStateStore(SqliteDatabase(path))
    assert [r.run_id for r in store.list_runs(RunFilter(search="acme.example"))] == [run.run_id]
    assert [r.run_id for r in store.list_runs(RunFilter(tool="jira"))] == [run.run_id]

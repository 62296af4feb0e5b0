"""Bounded history's rules (shared/history.py): which runs retention takes, how retries fold."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.history import (
    EVENT_LOG_CAP,
    RETRIES_FOLDED,
    RETRY,
    expiry,
    fold_retries,
    prunable,
)
from shared.model import Event, RunStatus
from shared.settings import Settings, SettingsError
from shared.state import Pruned
from tests.conftest import make_run

NOW = datetime(2030, 6, 1, 12, tzinfo=UTC)


def test_finished_runs_are_prunable_only_when_last_changed_before_the_cutoff():
    for status in RunStatus:
        run = make_run(status=status, updated_at=NOW - timedelta(days=400))
        assert prunable(run, NOW) is status.terminal, status
        assert not prunable(run.evolve(updated_at=NOW), NOW)  # not before: kept
    assert {s for s in RunStatus if s.terminal} == {RunStatus.SUCCEEDED, RunStatus.CANCELLED}


def test_parked_waiting_pending_and_running_runs_never_expire_whatever_their_age():
    old = NOW - timedelta(days=10_000)
    for status in (RunStatus.PARKED, RunStatus.WAITING, RunStatus.PENDING, RunStatus.RUNNING):
        assert expiry(make_run(status=status, updated_at=old), timedelta(days=1)) is None
    done = make_run(status=RunStatus.SUCCEEDED, updated_at=NOW)
    assert expiry(done, timedelta(days=3)) == NOW + timedelta(days=3)
    assert expiry(done, None) is None  # retention off: kept forever


def _event(kind: str, step: str | None, at: datetime, **detail) -> Event:
    return Event(run_id="run-1", kind=kind, actor="tool-x", at=at, step_id=step, detail=detail)


@st.composite
def logs(draw) -> list[Event]:
    """A run's trail: retries of a few steps with codes, among events of other kinds."""
    kinds = st.sampled_from([RETRY, RETRY, RETRY, "step.dispatched", "step.skipped"])
    entries = draw(
        st.lists(
            st.tuples(
                kinds,
                st.sampled_from(["jira", "email", "slack"]),
                st.sampled_from(["unavailable", "rate_limited", "timeout", ""]),
            ),
            max_size=60,
        )
    )
    start = datetime(2030, 1, 1, tzinfo=UTC)
    return [
        _event(kind, step, start + timedelta(seconds=i), attempt=i + 1, code=code)
        if kind == RETRY
        else _event(kind, step, start + timedelta(seconds=i))
        for i, (kind, step, code) in enumerate(entries)
    ]


def _folded(events: list[Event]) -> list[Event]:
    keyed = list(enumerate(events))
    folding = fold_retries(keyed)
    return [folding.writes.get(k, e) for k, e in keyed if k not in folding.deletes]


def _accounted(events: list[Event]) -> dict[str, Counter]:
    seen: dict[str, Counter] = {}
    for e in events:
        if e.kind == RETRY:
            seen.setdefault(e.step_id, Counter())[e.detail["code"] or "unknown"] += 1
        elif e.kind == RETRIES_FOLDED:
            seen.setdefault(e.step_id, Counter()).update(e.detail["codes"])
    return seen


@given(logs())
def test_folding_keeps_every_retry_counted_and_the_rest_of_the_log_as_it_was(events):
    folded = _folded(events)
    assert _accounted(folded) == _accounted(events)
    others = [e for e in events if e.kind not in (RETRY, RETRIES_FOLDED)]
    assert [e for e in folded if e.kind not in (RETRY, RETRIES_FOLDED)] == others
    for step in {e.step_id for e in events if e.kind == RETRY}:
        own = [e for e in folded if e.step_id == step and e.kind in (RETRY, RETRIES_FOLDED)]
        newest = [e for e in events if e.step_id == step and e.kind == RETRY][-1]
        assert own[-1] == newest  # the newest retry stays, as it was
        assert len(own) <= 2
        if len(own) == 2:
            summary = own[0].detail
            older = [e for e in events if e.step_id == step and e.kind == RETRY][:-1]
            assert summary["count"] == len(older)
            assert summary["first_at"] == older[0].at.isoformat() == own[0].at.isoformat()
            assert summary["last_at"] == older[-1].at.isoformat()
            assert (summary["first_attempt"], summary["last_attempt"]) == (
                older[0].detail["attempt"],
                older[-1].detail["attempt"],
            )
    assert [e.at for e in folded] == sorted(e.at for e in folded)  # in order still
    assert not fold_retries(list(enumerate(folded)))  # folding a folded log changes nothing


@given(logs(), st.integers(min_value=1, max_value=10))
def test_folding_as_the_log_grows_counts_as_folding_once_when_done_in_stages(events, every):
    staged: list[Event] = []
    for i, event in enumerate(events):
        staged.append(event)
        if i % every == 0:
            staged = _folded(staged)
    assert _accounted(_folded(staged)) == _accounted(_folded(events)) == _accounted(events)


def test_retention_and_the_event_cap_default_to_thirty_days_and_two_hundred():
    settings = Settings.from_env({})
    assert settings.retention_days == 30 and settings.retention == timedelta(days=30)
    assert settings.event_log_cap == EVENT_LOG_CAP == 200
    assert Settings.from_env({"CHIMERA_RETENTION_DAYS": "0"}).retention is None
    assert Settings.from_env({"CHIMERA_RETENTION_DAYS": "0.5"}).retention == timedelta(hours=12)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("CHIMERA_RETENTION_DAYS", "-1"),
        ("CHIMERA_RETENTION_DAYS", "inf"),
        ("CHIMERA_RETENTION_DAYS", "forever"),
        ("CHIMERA_EVENT_LOG_CAP", "5"),
    ],
)
def test_history_settings_are_refused_at_start_up_when_they_cannot_be_right(variable, value):
    with pytest.raises(SettingsError, match=variable):
        Settings.from_env({variable: value})


def test_pruned_adds_up_batches_and_counts_each_kind():
    total = Pruned(("a",), events=3, ledger=1) + Pruned(("b", "c"), events=2, tasks=4)
    assert total.counts() == {"runs": 3, "events": 5, "ledger": 1, "tasks": 4}
    assert total.run_ids == ("a", "b", "c")

"""Retention on Firestore: what its TTL policy (terraform/firestore.tf) deletes is marked by
`expire_at` on a finished run's document and on every document under it, never on a run that
is not finished."""

from __future__ import annotations

from datetime import timedelta

import pytest

from shared import firestore_state
from shared.firestore_state import EXPIRE_AT, FirestoreStateStore
from shared.model import Event, RunStatus, StepOutcome
from tests.conftest import make_request, make_run
from tests.emulators import firestore_client
from tests.fakes import FakeTaskQueue

RETENTION = timedelta(days=7)


@pytest.fixture
def store(firestore_project) -> FirestoreStateStore:
    return FirestoreStateStore(
        firestore_client(firestore_project), FakeTaskQueue(), retention=RETENTION
    )


def _documents(store: FirestoreStateStore, run_id: str) -> dict[str, dict]:
    """The run's document and every document under it, by path, as stored."""
    run = store.client.collection("runs").document(run_id)
    docs = {run.path: run.get().to_dict() or {}}
    for name in ("events", "steps"):
        docs |= {d.reference.path: d.to_dict() for d in run.collection(name).stream()}
    return docs


def _started(store: FirestoreStateStore, request_id: str = "r1"):
    run, _ = store.create_run(
        make_run(request=make_request(request_id=request_id)),
        events=[
            Event(
                run_id=make_request(request_id=request_id).run_id(), kind="run.created", actor="t"
            )
        ],
    )
    store.append_event(Event(run_id=run.run_id, kind="step.retry", actor="t", step_id="jira"))
    store.record_outcome(StepOutcome(run_id=run.run_id, step_id="enrich", tool="t", ok=True))
    return store.transition(run.evolve(status=RunStatus.RUNNING), expected_version=1)


@pytest.mark.parametrize("status", [RunStatus.SUCCEEDED, RunStatus.CANCELLED])
def test_a_finished_run_and_everything_under_it_expire_together_when_it_finishes(store, status):
    run = _started(store)
    assert not any(EXPIRE_AT in d for d in _documents(store, run.run_id).values())
    done = store.transition(
        run.evolve(status=status),
        expected_version=run.version,
        events=[Event(run_id=run.run_id, kind="run.finished", actor="t")],
    )
    # Written after it finished: a late report, a skipped redelivery.
    store.record_outcome(StepOutcome(run_id=run.run_id, step_id="slack", tool="t", ok=True))
    store.append_event(Event(run_id=run.run_id, kind="step.skipped", actor="t"))
    docs = _documents(store, run.run_id)
    assert len(docs) == 1 + 4 + 2  # the run, its four events, its two ledger records
    assert {d[EXPIRE_AT] for d in docs.values()} == {done.updated_at + RETENTION}
    # The field is the store's own: reading the run back is unchanged.
    assert store.load(run.run_id) == done
    assert [e.kind for e in store.events(run.run_id)][-1] == "step.skipped"
    assert set(store.outcomes(run.run_id)) == {"enrich", "slack"}


@pytest.mark.parametrize("status", [RunStatus.PARKED, RunStatus.WAITING, RunStatus.RUNNING])
def test_a_run_that_is_not_finished_never_expires_when_it_stops(store, status):
    run = _started(store)
    store.transition(run.evolve(status=status), expected_version=run.version)
    store.append_event(Event(run_id=run.run_id, kind="run.note", actor="t"))
    assert not any(EXPIRE_AT in d for d in _documents(store, run.run_id).values())


def test_a_later_change_of_a_finished_run_moves_its_expiry_for_every_document(store):
    run = _started(store)
    done = store.transition(run.evolve(status=RunStatus.SUCCEEDED), expected_version=run.version)
    later = store.transition(
        done.evolve(reason="verified late"),
        expected_version=done.version,
        events=[Event(run_id=run.run_id, kind="step.verified", actor="t")],
    )
    docs = _documents(store, run.run_id)
    assert {d[EXPIRE_AT] for d in docs.values()} == {later.updated_at + RETENTION}


def test_every_document_is_stamped_when_a_run_has_more_than_one_commit_takes(store, monkeypatch):
    monkeypatch.setattr(firestore_state, "STAMPS_PER_COMMIT", 3)
    run = _started(store)
    for i in range(6):
        store.append_event(Event(run_id=run.run_id, kind=f"note.{i}", actor="t"))
    done = store.transition(run.evolve(status=RunStatus.SUCCEEDED), expected_version=run.version)
    docs = _documents(store, run.run_id)
    assert len(docs) == 1 + 8 + 1
    assert {d[EXPIRE_AT] for d in docs.values()} == {done.updated_at + RETENTION}


def test_nothing_expires_when_retention_is_off(firestore_project):
    store = FirestoreStateStore(firestore_client(firestore_project), FakeTaskQueue())
    run = _started(store)
    store.transition(run.evolve(status=RunStatus.SUCCEEDED), expected_version=run.version)
    assert not any(EXPIRE_AT in d for d in _documents(store, run.run_id).values())

"""`chimera runs prune` on a local home: what goes (finished runs past the retention, with their
events, ledger and finished tasks), what never does (parked, waiting, running), said before."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from chimera.cli import main
from chimera.stack import LocalStack
from shared.local_queue import DONE
from shared.model import Event, RunStatus, StepOutcome, Task, utcnow
from shared.runtime import build_runtime
from shared.settings import Settings
from shared.sqlite_state import SqliteStateStore
from tests.conftest import make_request, make_run

AGE = timedelta(days=45)  # past the default retention of 30 days


@pytest.fixture
def home_runs() -> dict[str, dict[RunStatus, str]]:
    """Runs of every status in CHIMERA_HOME, old (45 days) and new, each with records."""
    rt = build_runtime(Settings.from_env())
    store = rt.store
    assert isinstance(store, SqliteStateStore)
    runs: dict[str, dict[RunStatus, str]] = {"old": {}, "new": {}}
    for age in runs:
        for status in RunStatus:
            request = make_request(request_id=f"{age}-{status.value}")
            run, _ = store.create_run(
                make_run(request=request),
                events=[Event(run_id=request.run_id(), kind="run.created", actor="t")],
            )
            store.record_outcome(StepOutcome(run_id=run.run_id, step_id="jira", tool="t", ok=True))
            rt.queue.enqueue(
                Task(
                    queue="orchestrator", name=f"{run.run_id}-start", payload={"run_id": run.run_id}
                )
            )
            store.transition(run.evolve(status=status), expected_version=1)
            runs[age][status] = run.run_id
    with store.db.transaction() as conn:
        conn.execute("UPDATE tasks SET state = ?", (DONE,))
        for run_id in runs["old"].values():
            conn.execute(
                "UPDATE runs SET updated_at = ? WHERE run_id = ?",
                ((utcnow() - AGE).isoformat(), run_id),
            )
    return runs


def _listed(capsys) -> set[str]:
    capsys.readouterr()
    assert main(["runs", "list", "--json", "--limit", "1000"]) == 0
    return {r["run_id"] for r in json.loads(capsys.readouterr().out)}


FINISHED = (RunStatus.SUCCEEDED, RunStatus.CANCELLED)


def test_a_dry_run_shows_the_old_finished_runs_and_their_records_and_deletes_nothing(
    home_runs, capsys
):
    every = {r for runs in home_runs.values() for r in runs.values()}
    assert main(["runs", "prune", "--dry-run", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    old_finished = {home_runs["old"][s] for s in FINISHED}
    assert report["dry_run"] is True and report["older_than_days"] == 30
    assert set(report["run_ids"]) == old_finished
    assert report["counts"] == {"runs": 2, "events": 2, "ledger": 2, "tasks": 2}
    assert _listed(capsys) == every

    assert main(["runs", "prune", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "dry run: would prune 2 runs, 2 events, 2 ledger records, 2 finished tasks" in out
    assert all(run_id in out for run_id in old_finished)


def test_prune_deletes_what_the_dry_run_showed_and_never_a_run_still_going(home_runs, capsys):
    assert main(["runs", "prune", "--dry-run", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert main(["runs", "prune", "--json"]) == 0
    done = json.loads(capsys.readouterr().out)
    assert done["dry_run"] is False
    assert (done["run_ids"], done["counts"]) == (shown["run_ids"], shown["counts"])
    left = _listed(capsys)
    assert left.isdisjoint(done["run_ids"])
    assert {home_runs["old"][s] for s in RunStatus if not s.terminal} <= left

    # Older than 0 days: every finished run, new ones too; still never one that is going.
    assert main(["runs", "prune", "--older-than", "0"]) == 0
    assert "pruned 2 runs" in capsys.readouterr().out
    going = {runs[s] for runs in home_runs.values() for s in RunStatus if not s.terminal}
    assert _listed(capsys) == going
    assert main(["runs", "prune", "--older-than", "0", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["run_ids"] == []


def test_prune_keeps_everything_when_retention_is_off_unless_told_how_old(
    home_runs, capsys, monkeypatch
):
    monkeypatch.setenv("CHIMERA_RETENTION_DAYS", "0")
    every = {r for runs in home_runs.values() for r in runs.values()}
    assert main(["runs", "prune"]) == 0
    assert "keeps every run" in capsys.readouterr().out
    assert _listed(capsys) == every
    assert main(["runs", "prune", "--older-than", "40", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["run_ids"]) == 2


@pytest.mark.parametrize("days", ["-1", "soon", "nan"])
def test_prune_refuses_an_age_that_is_not_a_number_of_days(days, capsys):
    with pytest.raises(SystemExit) as exit:
        main(["runs", "prune", "--older-than", days])
    assert exit.value.code == 2
    assert "not a number of days" in capsys.readouterr().err


def test_the_local_stack_prunes_with_the_configured_retention(tmp_path):
    stack = LocalStack(Settings(home=tmp_path / "home", retention_days=7)).start()
    try:
        assert stack.dispatcher is not None and stack.runtime is not None
        housekeeping = stack.dispatcher.housekeeping
        assert housekeeping.store is stack.runtime.store
        assert housekeeping.retention == timedelta(days=7)
    finally:
        stack.stop()

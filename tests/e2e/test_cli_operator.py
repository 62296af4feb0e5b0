"""The `chimera` command as an operator uses it: the demo's run where `runs list` looks, run ids
by prefix, `runs show --follow` on a run another thread or process moves, and output that reads
well on a terminal and in a pipe."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from fcntl import ioctl
from pathlib import Path

import pytest
from werkzeug.test import Client

from chimera.cli import main
from chimera.follow import settled
from chimera.stack import LocalStack
from shared.model import Event, RunStatus
from shared.runtime import build_runtime
from shared.settings import Settings
from tests.conftest import make_run
from tests.e2e.conftest import ONBOARD, body, submit, wait_until_settled

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
# One event as a line without a terminal: time, step (or -), kind, detail.
EVENT_LINE = re.compile(r"^\d\d:\d\d:\d\d\.\d{3}  (\S+)\s+(\S+)")
RUN_ID = re.compile(r"run-[0-9a-f]{20}")
# A slack fault mix that fails the step's first two attempts and lets the third through (each
# call to a vendor draws from (seed, vendor, call number), whatever the client).
FLAKY_SLACK = "slack.error=0.5,seed=3"


def _event_lines(out: str) -> list[tuple[str, str]]:
    return [m.groups() for m in map(EVENT_LINE.match, out.splitlines()) if m]  # type: ignore[misc]


def _store(settings: Settings | None = None):  # type: ignore[no-untyped-def]
    return build_runtime(settings or Settings.from_env()).store


def test_the_default_home_shows_the_onboarded_run_to_a_bare_runs_list(
    tmp_path, monkeypatch, capsys
):
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    monkeypatch.chdir(checkout)
    monkeypatch.delenv("CHIMERA_HOME")  # as on a fresh clone: nothing set

    assert main(ONBOARD) == 0
    out = capsys.readouterr().out
    [run_id] = set(RUN_ID.findall(out))
    # It says how to see it again, exactly: no home to name, since it is the default one.
    assert f"  chimera runs show {run_id}\n" in out and "  chimera runs list\n" in out
    assert (checkout / ".chimera" / "chimera.db").is_file()

    assert main(["runs", "list", "--json"]) == 0
    assert [r["run_id"] for r in json.loads(capsys.readouterr().out)] == [run_id]
    assert main(["runs", "show", run_id]) == 0
    assert run_id in capsys.readouterr().out.splitlines()[0]


def test_onboard_without_a_terminal_prints_one_line_per_event_as_the_run_moves(monkeypatch, capsys):
    monkeypatch.setenv("CHIMERA_LOCAL_BACKOFF_SCALE", "0.01")
    assert main([*ONBOARD, "--faults", FLAKY_SLACK]) == 0
    out = capsys.readouterr().out
    [run_id] = set(RUN_ID.findall(out))
    events = _store().events(run_id)
    assert _event_lines(out) == [(e.step_id or "-", e.kind) for e in events]
    retries = [line for line in out.splitlines() if "  step.retry  " in line]
    assert retries, "the seeded fault mix retried no step"
    assert all(re.search(r"attempt \d+/\d+ failed; next attempt", line) for line in retries)
    assert all("gives up and parks the run at" in line for line in retries)
    assert "timeline" not in out  # the lines told it; the end is a summary, not a second log


def test_runs_show_follow_streams_a_run_another_thread_moves_until_it_settles(start_stack, capsys):
    stack = start_stack(FLAKY_SLACK, local_backoff_scale=0.05)
    _, answer = submit(stack, body(1))
    run_id = answer["run_id"]
    assert not settled(stack.runtime.store.load(run_id))  # it moves while followed

    assert main(["runs", "show", run_id[:10], "--follow"]) == 0
    out = capsys.readouterr().out
    run = stack.runtime.store.load(run_id)
    assert run.status is RunStatus.SUCCEEDED
    events = stack.runtime.store.events(run_id)
    assert _event_lines(out) == [(e.step_id or "-", e.kind) for e in events]
    assert [e.kind for e in events].count("step.retry") >= 1
    retry = next(line for line in out.splitlines() if "  step.retry  " in line)
    assert re.search(r"attempt 1/\d+ failed; next attempt (in \d+ s|now); \d+ left", retry)
    assert out.splitlines()[-1] == f"{run_id} succeeded"


def _parked(stack: LocalStack) -> str:
    """A run that parks on its last step: approved, then Slack has no such channel."""
    [run_id] = _waiting(stack, [body(9, slack_channel="#missing-team")])
    assert Client(stack.intake()).post(f"/runs/{run_id}:approve", json={}).status_code == 200
    run = wait_until_settled(stack, [run_id])[run_id]
    assert run.status is RunStatus.PARKED
    return run_id


def _unique_prefix(run_id: str, others: list[str]) -> str:
    for end in range(5, len(run_id)):
        if not any(o.startswith(run_id[:end]) for o in others if o != run_id):
            return run_id[:end]
    return run_id


def _waiting(stack: LocalStack, bodies: list[dict[str, str]]) -> list[str]:
    run_ids = [submit(stack, b)[1]["run_id"] for b in bodies]
    end = time.monotonic() + 60
    while time.monotonic() < end:
        runs = [stack.runtime.store.load(r) for r in run_ids]
        if all(r.approval and r.approval.status == "waiting" for r in runs):
            return run_ids
        time.sleep(0.05)
    raise AssertionError("the runs did not come to wait for approval")


def test_each_run_command_takes_a_unique_prefix_and_refuses_an_ambiguous_or_unknown_one(
    start_stack, capsys
):
    stack = start_stack(require_approval=True, local_backoff_scale=0.01)
    approved, rejected, cancelled = ids = _waiting(stack, [body(i) for i in range(3)])
    parked = _parked(stack)
    every = [*ids, parked]
    prefix = {run_id: _unique_prefix(run_id, every) for run_id in every}
    capsys.readouterr()

    def taking(run: str) -> list[list[str]]:
        return [
            ["runs", "show", run],
            ["runs", "resume", run],
            ["runs", "approve", run],
            ["runs", "reject", run, "--reason", "too formal"],
            ["runs", "cancel", run],
            ["sandbox", "records", "--run-id", run],
        ]

    for command in taking("run-"):
        assert main(command) == 1, command
        said = " ".join(capsys.readouterr().out.split())
        assert (
            "'run-' is ambiguous, the start of several runs:" in said
            and "give more of the id" in said
        )
        assert sum(run_id in said for run_id in every) == len(every)
    for command in taking("run-ffffffffffff0000"):
        assert main(command) == 1, command
        assert "no run run-ffffffffffff0000" in capsys.readouterr().out

    assert main(["runs", "show", prefix[approved], "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["run_id"] == approved
    assert main(["runs", "show", approved]) == 0  # the whole id, as before
    assert approved in capsys.readouterr().out.splitlines()[0]
    assert main(["sandbox", "records", "--json", "--run-id", prefix[approved]]) == 0
    records = json.loads(capsys.readouterr().out)
    assert records and {r["run_id"] for r in records} == {approved}

    assert main(["runs", "approve", prefix[approved]]) == 0
    assert f"{approved}: approved" in capsys.readouterr().out
    assert main(["runs", "reject", prefix[rejected], "--reason", "too formal"]) == 0
    assert f"{rejected}: rejected (too formal)" in capsys.readouterr().out
    assert main(["runs", "cancel", prefix[cancelled]]) == 0
    assert f"{cancelled}: cancelled" in capsys.readouterr().out
    assert main(["runs", "resume", prefix[parked]]) == 0
    assert f"{parked}: resumed from its failed step" in capsys.readouterr().out

    runs = wait_until_settled(stack, [approved, rejected, cancelled, parked])
    assert runs[approved].status is RunStatus.SUCCEEDED
    assert runs[rejected].status is runs[cancelled].status is RunStatus.CANCELLED
    resumed = [e.kind for e in stack.runtime.store.events(parked)]
    assert "run.resumed" in resumed


# --- on a terminal, and stopped by Ctrl-C: the real command in its own process -------------


def _env(home: Path, **more: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHIMERA_")}
    return {**env, "CHIMERA_HOME": str(home), "TERM": "xterm-256color", **more}


def _on_a_terminal(args: list[str], env: dict[str, str], timeout: float = 120) -> tuple[int, str]:
    """Run `chimera args` with a pseudo-terminal (120 x 40) as its stdin, stdout and stderr."""
    leader, follower = pty.openpty()
    ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    process = subprocess.Popen(
        [sys.executable, "-m", "chimera.cli", *args],
        cwd=ROOT,
        env=env,
        stdin=follower,
        stdout=follower,
        stderr=follower,
        close_fds=True,
    )
    os.close(follower)
    chunks, end = [], time.monotonic() + timeout
    try:
        while time.monotonic() < end:
            ready, _, _ = select.select([leader], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(leader, 65536)
                except OSError:  # the other end closed: the command is done
                    break
                if not chunk:
                    break
                chunks.append(chunk)
            elif process.poll() is not None:
                break
        return process.wait(timeout=30), b"".join(chunks).decode("utf-8", "replace")
    finally:
        os.close(leader)
        if process.poll() is None:
            process.kill()


HIDE_CURSOR = "\x1b[?25l"  # rich's Live hides the cursor while it redraws the view in place


def test_onboard_on_a_terminal_keeps_its_live_view_and_ends_with_the_timeline(tmp_path):
    code, out = _on_a_terminal(ONBOARD, _env(tmp_path / "home"))
    assert code == 0, out
    assert HIDE_CURSOR in out and "timeline" in out and "succeeded" in out
    assert not _event_lines(out.replace("\r", ""))


def test_runs_show_follow_on_a_terminal_draws_the_run_live_as_another_process_moves_it(
    start_stack, tmp_path
):
    stack = start_stack(FLAKY_SLACK, local_backoff_scale=0.01)
    run_id = submit(stack, body(2))[1]["run_id"]
    code, out = _on_a_terminal(["runs", "show", run_id, "--follow"], _env(tmp_path / "home"))
    assert code == 0, out
    assert HIDE_CURSOR in out and "Ctrl-C stops following" in out
    assert "timeline" in out and "run.succeeded" in out
    assert stack.runtime.store.load(run_id).status is RunStatus.SUCCEEDED


def test_ctrl_c_stops_following_and_says_the_run_goes_on(tmp_path):
    home = tmp_path / "home"
    store = _store(Settings(home=home))
    run, _ = store.create_run(make_run())  # nothing moves it: no stack runs
    store.append_event(Event(run_id=run.run_id, kind="run.created", actor="test"))
    process = subprocess.Popen(
        [sys.executable, "-m", "chimera.cli", "runs", "show", run.run_id, "--follow"],
        cwd=ROOT,
        env=_env(home),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    first = process.stdout.readline()  # following: the run's first event came out
    assert "run.created" in first
    process.send_signal(signal.SIGINT)
    out, _ = process.communicate(timeout=30)
    assert process.returncode == 130
    said = " ".join(out.split())
    assert f"stopped following {run.run_id}; the run goes on without you" in said
    assert store.load(run.run_id).status is RunStatus.PENDING

"""A step that retries for hours keeps a short log: the tool endpoint's retry events fold past
the store's cap, and the newest retry is still there for the live view."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from chimera import render
from shared.errors import RateLimited, VendorUnavailable
from shared.history import RETRIES_FOLDED, RETRY
from shared.model import RunStatus
from shared.runtime import Runtime, install
from shared.settings import Settings
from tests.fakes import FakeChat, FakeStateStore, FakeTaskQueue
from tests.functions.test_tool_mains import QUEUED, _dispatched, tool_client

CAP = 20


class Flaky(FakeChat):
    """Slack that is rate limiting, then down, by turns, for as long as the test asks."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def post_message(self, **message):  # type: ignore[no-untyped-def, override]
        self.calls += 1
        if self.calls % 3:
            raise RateLimited("ratelimited", retry_after=1)
        raise VendorUnavailable("Slack answered 503")


@pytest.fixture
def capped():
    queue = FakeTaskQueue()
    store = FakeStateStore(queue, event_cap=CAP)
    install(Runtime(Settings(agent_reasoning=False, event_log_cap=CAP), store, queue))
    return store


def test_a_step_retrying_all_its_attempts_keeps_a_log_under_the_cap(capped):
    slack = Flaky()
    client = tool_client("slack", SlackChat=slack)
    run, call = _dispatched(capped, "slack")
    for retry in range(39):  # every attempt but the queue's last
        headers = {**QUEUED, "X-CloudTasks-TaskRetryCount": str(retry)}
        assert client.post("/", json=call, headers=headers).status_code in (429, 503)
    events = capped.events(run.run_id)
    assert len(events) <= CAP + 1
    [summary] = [e for e in events if e.kind == RETRIES_FOLDED]
    retries = [e for e in events if e.kind == RETRY]
    assert summary.detail["count"] + len(retries) == slack.calls == 39
    codes = dict(summary.detail["codes"])
    for e in retries:
        codes[e.detail["code"]] = codes.get(e.detail["code"], 0) + 1
    assert codes == {"rate_limited": 26, "unavailable": 13}
    assert retries[-1].detail["attempt"] == 39
    # The live view still says what the step is waiting on: its newest attempt.
    dispatched = capped.load(run.run_id)
    assert dispatched is not None and dispatched.status is not RunStatus.PARKED
    console = Console(width=300, record=True, file=io.StringIO())
    console.print(render.steps_table(dispatched, events))
    assert "retrying after unavailable: Slack answered 503" in console.export_text()

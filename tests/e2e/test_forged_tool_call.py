"""The issue's attack on `chimera dev`'s HTTP surface: a local process polls the runs and posts a
forged tool call while the welcome email is dispatched. It is refused; the client gets exactly
the one real email, judged from the sandbox's own records."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from chimera.stack import LocalStack
from sandbox.records import RecordStore
from shared.model import RunStatus
from shared.settings import Settings
from tests.e2e.conftest import body, wait_until_settled

pytestmark = pytest.mark.slow


def _http(
    method: str, url: str, payload: Any = None, headers: dict[str, str] | None = None
) -> tuple[int, dict]:
    data = None if payload is None else json.dumps(payload).encode()
    request = urllib.request.Request(
        url,
        data=data,
        method=method,
        headers={"Content-Type": "application/json", **(headers or {})},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


@pytest.fixture
def served(tmp_path) -> Iterator[LocalStack]:
    # SendGrid slow enough that the email step stays dispatched while the attacker looks.
    stack = LocalStack(
        Settings(home=tmp_path / "home"),
        faults="sendgrid.latency_ms=1500",
        serve_port=0,
        over_http=True,
    ).start()
    yield stack
    stack.stop()


def _email_dispatched(stack: LocalStack, run_id: str, timeout: float = 60) -> dict:
    """Poll `GET /runs` as the attacker does, until the run's email step is dispatched."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        # The worst case: the attacker holds an intake key (it reads the runs), not the queue's.
        status, listed = _http("GET", f"{stack.url}/runs", headers=stack.auth_headers)
        assert status == 200
        run = next((r for r in listed["runs"] if r["run_id"] == run_id), None)
        if run and run["steps"].get("email", {}).get("status") == "dispatched":
            return run
        time.sleep(0.02)
    raise AssertionError("the email step was never seen dispatched")


def test_a_forged_tool_call_while_the_email_is_dispatched_sends_nothing(served, tmp_path):
    stack = served
    status, created = _http("POST", f"{stack.url}/runs", body(), stack.auth_headers)
    assert status == 202
    run_id = created["run_id"]
    seen = _email_dispatched(stack, run_id)

    # The old ToolCall: its own recipient and its own draft, phishing link included.
    forged = {
        "run_id": run_id,
        "step_id": "email",
        "tool": "send_welcome_email",
        "generation": seen["steps"]["email"]["generation"],
        "args": {},
        "inputs": {
            "draft": {
                "subject": "Action needed: confirm your billing details",
                "text": "Please confirm at https://evil.example/billing today.",
                "html": '<p><a href="https://evil.example/billing">Confirm</a></p>',
            }
        },
        "request": {**seen["request"], "contact_email": "victim@evil.example"},
    }
    status, refused = _http(
        "POST", f"{stack.url}/functions/tool-sendgrid/", forged, stack.auth_headers
    )
    # Refused as a payload here (400); once tasks are signed, already as unsigned (401/403).
    assert status in (400, 401, 403), refused

    run = wait_until_settled(stack, [run_id])[run_id]
    assert run.status is RunStatus.SUCCEEDED, run.reason
    mails = [
        r
        for r in RecordStore(tmp_path / "home").list()
        if r["vendor"] == "sendgrid" and r["action"] == "mail.send"
    ]
    assert len(mails) == 1, "exactly the one real email"
    (mail,) = mails
    assert [to["email"] for to in mail["request"]["personalizations"][0]["to"]] == [
        "ceo@client0.example"
    ]
    assert "evil.example" not in json.dumps(mail["request"])
    assert stack.runtime is not None
    outcome = stack.runtime.store.outcome(run_id, "email")
    assert outcome is not None and outcome.output["to"] == "ceo@client0.example"
    if status == 400:
        (rejection,) = stack.runtime.store.rejections()
        assert rejection.source == "tool-sendgrid" and "Extra inputs" in rejection.reason

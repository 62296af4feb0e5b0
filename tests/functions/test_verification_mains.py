"""Verification tasks through each tool's deployed target, on in-memory fakes."""

from __future__ import annotations

from dataclasses import replace

import pytest

from orchestrator import core, tasks
from shared.errors import AuthFailed, RateLimited
from shared.model import (
    BreakerState,
    OrchestratorTask,
    VerificationStatus,
    utcnow,
    verification_key,
)
from shared.runtime import install, runtime
from tests.fakes import FakeChat, FakeJira, FakeMail
from tests.functions.conftest import tool_client
from tests.functions.test_tool_mains import QUEUED, _dispatched

ON = core.VerificationPolicy(enabled=True, mismatch_limit=2)
# (function, step, the factory its main.py hands per_runtime, the fake, how it loses the work)
CASES = [
    ("jira", "jira", "JiraClient", FakeJira, lambda fake: fake.projects.clear()),
    ("sendgrid", "email", "SendGridMailer", FakeMail, lambda fake: fake.lost.add(0)),
    ("slack", "slack", "SlackChat", FakeChat, lambda fake: fake.messages.clear()),
]


def _succeeded(store, client, step_id):
    """Run the step through its tool, take its report in: the verification to send."""
    run, call = _dispatched(store, step_id)
    assert client.post("/", json=call, headers=QUEUED).get_json()["ok"] is True
    outcomes = store.outcomes(run.run_id)
    happening = OrchestratorTask(run_id=run.run_id, kind="step_finished", step_id=step_id)
    decision = core.decide(run, happening, outcomes, utcnow(), verification=ON)
    store.transition(decision.run, expected_version=run.version)
    (check,) = decision.verifications
    tool = decision.run.steps[step_id].tool
    return run.run_id, tasks.verification_task(check, tool).payload


def _finding(store, run_id, step_id):
    record = store.outcome(run_id, verification_key(step_id, 1))
    return VerificationStatus(record.output["status"]), record.output["reason"]


@pytest.mark.parametrize(("function", "step_id", "factory", "make", "lose"), CASES)
def test_verification_is_recorded_and_reported_once_when_the_effect_is_there(
    fakes, function, step_id, factory, make, lose
):
    store, queue = fakes
    client = tool_client(function, **{factory: make()})
    run_id, payload = _succeeded(store, client, step_id)
    response = client.post("/", json=payload, headers=QUEUED)
    assert response.status_code == 200
    assert response.get_json()["status"] == "verified"
    assert _finding(store, run_id, step_id)[0] is VerificationStatus.VERIFIED
    reports = [t.name for t in queue.on("orchestrator") if t.name.endswith("-verified")]
    assert reports == [f"{run_id}-{step_id}-g1-verified"]
    again = client.post("/", json=payload, headers=QUEUED)
    assert again.get_json()["status"] == "already_verified"


@pytest.mark.parametrize(("function", "step_id", "factory", "make", "lose"), CASES)
def test_verification_is_a_mismatch_when_the_vendor_lost_the_work(
    fakes, function, step_id, factory, make, lose
):
    store, _ = fakes
    # SendGrid's feed does not lag here: absent one second after the send is lost.
    install(replace(runtime(), settings=runtime().settings.replace(verify_max_lag=0.001)))
    fake = make()
    client = tool_client(function, **{factory: fake})
    run_id, payload = _succeeded(store, client, step_id)
    lose(fake)
    response = client.post("/", json=payload, headers=QUEUED)
    assert response.get_json()["status"] == "mismatch"
    status, reason = _finding(store, run_id, step_id)
    assert status is VerificationStatus.MISMATCH and reason


def test_a_lagging_lookup_is_retried_then_unverifiable_after_the_window(fakes):
    store, _ = fakes
    mail = FakeMail()
    client = tool_client("sendgrid", SendGridMailer=mail)
    run_id, payload = _succeeded(store, client, "email")
    mail.lost.add(0)  # not in the feed (yet), and absence proves nothing (max lag 0)
    response = client.post("/", json=payload, headers=QUEUED)
    assert response.status_code == 503
    assert [e.kind for e in store.events(run_id)][-1] == "verification.retry"
    assert store.outcome(run_id, verification_key("email", 1)) is None

    settings = runtime().settings.replace(verify_window=0.001)
    install(replace(runtime(), settings=settings))
    response = client.post("/", json=payload, headers=QUEUED)
    assert response.get_json()["status"] == "unverifiable"
    status, reason = _finding(store, run_id, "email")
    assert status is VerificationStatus.UNVERIFIABLE and "still not visible" in reason


class Refusing(FakeChat):
    def __init__(self, error: Exception) -> None:
        super().__init__()
        self.error = error

    def find_message(self, **_: object) -> str | None:
        raise self.error


def test_a_vendor_that_cannot_be_asked_is_unverifiable_at_once(fakes):
    store, _ = fakes
    client = tool_client("slack", SlackChat=Refusing(AuthFailed("missing_scope")))
    run_id, payload = _succeeded(store, client, "slack")
    response = client.post("/", json=payload, headers=QUEUED)
    assert response.get_json()["status"] == "unverifiable"
    assert "auth_failed" in _finding(store, run_id, "slack")[1]


def test_a_vendors_passing_trouble_asks_the_queue_to_retry(fakes):
    store, _ = fakes
    client = tool_client("slack", SlackChat=Refusing(RateLimited("slow down", retry_after=3)))
    _, payload = _succeeded(store, client, "slack")
    response = client.post("/", json=payload, headers=QUEUED)
    assert response.status_code == 429 and response.headers["Retry-After"] == "3"


def test_a_verification_of_a_generation_already_rerun_is_skipped(fakes):
    store, _ = fakes
    client = tool_client("slack", SlackChat=FakeChat())
    run_id, payload = _succeeded(store, client, "slack")
    response = client.post("/", json={**payload, "generation": 2}, headers=QUEUED)
    assert response.get_json()["status"] == "skipped"


def test_a_look_at_a_vendor_whose_circuit_is_open_waits_for_the_cool_down(fakes):
    store, _ = fakes
    chat = FakeChat()
    client = tool_client("slack", SlackChat=chat)
    _, payload = _succeeded(store, client, "slack")
    opened = BreakerState(name="slack", state="open", opened_at=utcnow(), failures=60, calls=100)
    assert store.save_breaker(opened, expected_version=store.breaker("slack").version)
    # Read the shared state at once (the step's own call left it cached as closed).
    install(replace(runtime(), settings=runtime().settings.replace(breaker_state_cache=0)))
    response = client.post("/", json=payload, headers=QUEUED)
    assert response.status_code == 503
    assert response.get_json()["error"]["code"] == "circuit_open"

"""The console's app through Flask's test client, on in-memory fakes: nothing without a
session, every change needs the session's CSRF token and this server's Origin, the filters
and search, the new-onboarding form with its field errors, bulk resume, and the live stream."""

from __future__ import annotations

import re
import threading
import time
from types import SimpleNamespace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chimera.console import create_app
from chimera.console.health import health, percentile
from chimera.console.live import LivePolicy
from chimera.console.pages import trace_of
from orchestrator.planning import default_plan
from shared.keys import SESSION_COOKIE, Keys, local_credential
from shared.model import RunStatus, StepError, StepStatus, StepSummary, utcnow
from shared.runtime import Runtime
from shared.settings import Settings
from tests.conftest import make_request, make_run
from tests.fakes import FakeStateStore, FakeTaskQueue

ORIGIN = "http://localhost"


@pytest.fixture
def rt(tmp_path) -> Runtime:
    queue = FakeTaskQueue()
    return Runtime(
        Settings(agent_reasoning=False, home=tmp_path / "home"), FakeStateStore(queue), queue
    )


def _client(rt: Runtime, policy: LivePolicy | None = None, *, signed: bool = True):
    client = create_app(rt, policy).test_client()
    if signed:
        keys = Keys(rt.store, rt.settings.home)
        client.set_cookie(SESSION_COOKIE, keys.session_for(local_credential(rt.settings.home)))
    return client


def _csrf(client, path: str = "/new") -> str:
    page = client.get(path).get_data(as_text=True)
    return re.search(r'name="csrf" value="([0-9a-f]{64})"', page).group(1)


def _parked(rt: Runtime, request_id: str, tool: str = "create_jira_project", code="unavailable"):
    run = make_run(request=make_request(request_id=request_id, domain=f"{request_id}.example"))
    plan = default_plan(run)
    at = next(i for i, s in enumerate(plan) if s.tool == tool)
    steps = {}
    for i, step in enumerate(plan):
        status = StepStatus.SUCCEEDED if i < at else StepStatus.PENDING
        steps[step.step_id] = StepSummary(step_id=step.step_id, tool=step.tool, status=status)
    failed = plan[at].step_id
    steps[failed] = steps[failed].model_copy(
        update={
            "status": StepStatus.FAILED,
            "attempts": 3,
            "error": StepError(code=code, message="down"),
        }
    )
    stored, _ = rt.store.create_run(run)
    return rt.store.transition(
        stored.evolve(plan=plan, steps=steps, status=RunStatus.PARKED, reason="down"),
        expected_version=stored.version,
    )


def test_every_page_asks_to_sign_in_and_shows_no_run_without_a_session(rt):
    run = _parked(rt, "r1")
    client = _client(rt, signed=False)
    for path in (
        "/",
        f"/run/{run.run_id}",
        "/parked",
        "/health",
        "/new",
        f"/run/{run.run_id}/live",
    ):
        page = client.get(path)
        assert page.status_code == 401, path
        text = page.get_data(as_text=True)
        assert "chimera dev" in text and "chimera ui" in text
        assert run.run_id not in text and "Acme" not in text
    client.set_cookie(SESSION_COOKIE, "1.forged.cookie")
    assert client.get("/").status_code == 401


def test_the_runs_list_shows_whole_ids_counts_and_the_filters_results(rt):
    parked = _parked(rt, "r1")
    other, _ = rt.store.create_run(
        make_run(request=make_request(request_id="r2", company_name="Globex", domain="globex.io"))
    )
    client = _client(rt)
    page = client.get("/").get_data(as_text=True)
    assert parked.run_id in page and other.run_id in page
    assert re.search(r"parked</span> 1", page) and re.search(r"pending</span> 1", page)
    searched = client.get("/?q=GLOBEX.io").get_data(as_text=True)
    assert other.run_id in searched and parked.run_id not in searched
    by_tool = client.get("/?tool=jira").get_data(as_text=True)
    assert parked.run_id in by_tool and other.run_id not in by_tool
    by_status = client.get("/?status=pending").get_data(as_text=True)
    assert other.run_id in by_status and parked.run_id not in by_status
    refused = client.get("/?after=not-a-time")
    assert refused.status_code == 400 and "not valid" in refused.get_data(as_text=True)


def test_a_change_without_the_token_or_from_another_origin_is_refused_and_changes_nothing(rt):
    run = _parked(rt, "r1")
    client = _client(rt)
    token = _csrf(client)
    for data, headers in [
        ({}, {"Origin": ORIGIN}),  # no token
        ({"csrf": "0" * 64}, {"Origin": ORIGIN}),  # another session's
        ({"csrf": token}, {"Origin": "http://evil.example"}),  # a cross-site form
        ({"csrf": token}, {}),  # no Origin at all
        ({"csrf": token}, {"Origin": ORIGIN, "Sec-Fetch-Site": "cross-site"}),
    ]:
        answer = client.post(f"/run/{run.run_id}/cancel", data=data, headers=headers)
        assert answer.status_code == 403, (data, headers)
    assert rt.store.load(run.run_id).status is RunStatus.PARKED
    assert rt.store.load(run.run_id).version == run.version

    done = client.post(
        f"/run/{run.run_id}/cancel", data={"csrf": token}, headers={"Origin": ORIGIN}
    )
    assert done.status_code == 303 and done.headers["Location"] == f"/run/{run.run_id}"
    assert rt.store.load(run.run_id).status is RunStatus.CANCELLED
    assert rt.store.events(run.run_id)[-1].actor == "local"


def test_resume_from_the_run_page_goes_on_from_the_failed_step_as_the_signed_in_key(rt):
    run = _parked(rt, "r1")
    client = _client(rt)
    answer = client.post(
        f"/run/{run.run_id}/resume", data={"csrf": _csrf(client)}, headers={"Origin": ORIGIN}
    )
    assert answer.status_code == 303
    resumed = rt.store.load(run.run_id)
    assert resumed.status is RunStatus.RUNNING
    assert resumed.steps["jira"].status is StepStatus.DISPATCHED
    assert any(e.kind == "run.resumed" and e.actor == "local" for e in rt.store.events(run.run_id))
    again = client.post(
        f"/run/{run.run_id}/resume", data={"csrf": _csrf(client)}, headers={"Origin": ORIGIN}
    )
    assert again.status_code == 409


def test_bulk_resume_takes_only_the_runs_parked_on_that_tool_or_reason(rt):
    jira = [_parked(rt, f"j{i}") for i in range(3)]
    slack = _parked(rt, "s1", tool="post_slack_notice", code="rate_limited")
    client = _client(rt)
    page = client.get("/parked").get_data(as_text=True)
    assert "Resume the 3 parked on create_jira_project" in page
    assert "Resume the 1 failed with rate_limited" in page
    token = _csrf(client, "/parked")
    answer = client.post(
        "/parked/resume",
        data={"csrf": token, "tool": "create_jira_project"},
        headers={"Origin": ORIGIN},
    )
    assert answer.status_code == 303 and answer.headers["Location"] == "/parked?resumed=3"
    assert all(rt.store.load(r.run_id).status is RunStatus.RUNNING for r in jira)
    assert rt.store.load(slack.run_id).status is RunStatus.PARKED
    client.post(
        "/parked/resume", data={"csrf": token, "reason": "rate_limited"}, headers={"Origin": ORIGIN}
    )
    assert rt.store.load(slack.run_id).status is RunStatus.RUNNING


def test_the_new_form_shows_each_field_error_and_starts_nothing_when_invalid(rt):
    client = _client(rt)
    token = _csrf(client)
    bad = client.post(
        "/new",
        data={
            "csrf": token,
            "company_name": "Acme",
            "domain": "not a domain",
            "contact_email": "x",
        },
        headers={"Origin": ORIGIN},
    )
    text = bad.get_data(as_text=True)
    assert bad.status_code == 422
    assert 'id="domain-error"' in text and 'id="contact_email-error"' in text
    assert rt.store.list_runs() == []
    good = client.post(
        "/new",
        data={
            "csrf": token,
            "company_name": "Acme Corp",
            "domain": "acme.example",
            "contact_email": "ada@acme.example",
        },
        headers={"Origin": ORIGIN},
    )
    (run,) = rt.store.list_runs()
    assert good.status_code == 303 and good.headers["Location"] == f"/run/{run.run_id}"
    assert rt.store.events(run.run_id)[0].actor == "local"
    assert client.get(f"/run/{run.run_id}").status_code == 200


def test_a_run_id_prefix_leads_to_its_run_and_an_unknown_one_is_404(rt):
    run = _parked(rt, "r1")
    client = _client(rt)
    found = client.get(f"/run/{run.run_id[:12]}")
    assert found.status_code == 303 and found.headers["Location"] == f"/run/{run.run_id}"
    assert client.get("/run/run-nothing-like-it").status_code == 404


def test_the_trace_id_comes_from_the_traceparent_and_is_linked_only_with_a_viewer():
    trace = "0af7651916cd43dd8448eb211c80319c"
    run = make_run().evolve(traceparent=f"00-{trace}-b7ad6b7169203331-01")
    viewer = SimpleNamespace(settings=Settings(trace_url="https://traces.example/{trace_id}"))
    assert trace_of(viewer, run) == (trace, f"https://traces.example/{trace}")
    assert trace_of(SimpleNamespace(settings=Settings()), run) == (trace, "")
    assert trace_of(viewer, make_run()) == ("", "")
    assert trace_of(viewer, make_run().evolve(traceparent="garbage")) == ("", "")


def test_the_live_stream_sends_the_run_when_it_changes_and_ends_on_its_own(rt):
    run = _parked(rt, "r1")
    client = _client(rt, LivePolicy(poll_s=0.01, max_s=0.6, heartbeat_s=0.1))
    mark = f"{run.version}:{rt.store.change_mark(run.run_id)[1]}"

    def cancel_soon() -> None:
        time.sleep(0.2)
        rt.store.transition(run.evolve(status=RunStatus.CANCELLED), expected_version=run.version)

    threading.Thread(target=cancel_soon).start()
    answer = client.get(f"/run/{run.run_id}/live?mark={mark}", buffered=False)
    assert answer.mimetype == "text/event-stream"
    body = b"".join(answer.response).decode()
    messages = [m for m in body.split("\n\n") if m.startswith("event: run")]
    assert len(messages) == 1  # only the change, once
    assert 'data-status="cancelled"' in messages[0]
    assert ": still here" in body


def test_health_counts_attempts_per_vendor_and_each_breaker(rt):
    now = utcnow()
    run = make_run(
        steps={
            "jira": StepSummary(
                step_id="jira",
                tool="create_jira_project",
                status=StepStatus.SUCCEEDED,
                attempts=1,
                finished_at=now,
                latency_ms=40,
            ),
            "slack": StepSummary(
                step_id="slack",
                tool="post_slack_notice",
                status=StepStatus.FAILED,
                attempts=1,
                finished_at=now,
                latency_ms=10,
            ),
        }
    )
    rt.store.create_run(run)
    seen = {v.vendor: v for v in health(rt, utcnow()).vendors}
    assert (seen["jira"].attempts, seen["jira"].failures, seen["jira"].p50_ms) == (1, 0, 40)
    assert seen["slack"].error_rate == 1.0 and seen["clearbit"].error_rate is None
    assert {v.breaker for v in seen.values()} == {"closed"}
    page = _client(rt).get("/health").get_data(as_text=True)
    assert "tool attempts" in page and "unknown" in page  # the fake queue cannot tell its depth


@given(st.lists(st.floats(0, 1e6, allow_nan=False), min_size=1, max_size=200))
def test_a_percentile_is_one_of_the_values_and_grows_with_p(values):
    p50, p99 = percentile(values, 50), percentile(values, 99)
    assert p50 in values and p99 in values and p50 <= p99 <= max(values)
    assert percentile(values, 100) == max(values)

"""The console over HTTP, as `chimera dev` and `chimera ui` serve it: form posts reach only
its own POST routes, and a cross-site one or one without the session's token changes nothing."""

from __future__ import annotations

import re

import pytest
import requests

from chimera.console.command import ConsoleServer
from chimera.stack import LocalStack
from shared.model import RunStatus
from shared.settings import Settings
from tests.e2e.conftest import body, submit, wait_until_settled

pytestmark = pytest.mark.slow


@pytest.fixture
def served(tmp_path):
    # Jira is down for good, every attempt reaching it at once: the run parks in a second.
    settings = Settings(
        home=tmp_path / "home",
        local_backoff_scale=0.001,
        breaker_window=1000,
        breaker_minimum_calls=1000,
    )
    stack = LocalStack(settings, serve_port=0, faults="jira.error=1").start()
    yield stack
    stack.stop()


def _signed_in(url: str) -> tuple[requests.Session, str]:
    session = requests.Session()
    page = session.get(url, timeout=10)
    assert page.status_code == 200 and "Signed in as" in page.text
    return session, re.search(
        r'name="csrf" value="([0-9a-f]{64})"',
        session.get(url.split("/?")[0] + "/new", timeout=10).text,
    ).group(1)


def test_a_cross_site_or_tokenless_form_post_changes_nothing_and_the_intake_still_takes_json_only(
    served,
):
    run_id = submit(served, body(1))[1]["run_id"]
    session, token = _signed_in(served.console_url)
    before = served.runtime.store.load(run_id)
    cancel = f"{served.url}/run/{run_id}/cancel"
    for data, headers in [
        ({"csrf": token}, {"Origin": "http://evil.example"}),
        ({"csrf": token}, {"Origin": "http://127.0.0.1:1"}),  # another local port
        ({"reason": "no token"}, {"Origin": served.url}),
        ({"csrf": "f" * 64}, {"Origin": served.url}),
    ]:
        assert session.post(cancel, data=data, headers=headers, timeout=10).status_code == 403
    after = served.runtime.store.load(run_id)
    assert after.status is not RunStatus.CANCELLED
    assert [e.kind for e in served.runtime.store.events(run_id)].count("run.cancelled") == 0
    assert before.status is not RunStatus.CANCELLED
    # Forms reach the console's POST routes only: the intake and the functions take JSON.
    for path in ("/runs", f"/runs/{run_id}:cancel", "/functions/orchestrator-intake/runs"):
        form = session.post(
            served.url + path, data={"csrf": token}, headers={"Origin": served.url}, timeout=10
        )
        assert form.status_code == 415, path
    own = session.post(cancel, data={"csrf": token}, headers={"Origin": served.url}, timeout=10)
    assert own.status_code == 200 and "cancelled" in own.text  # followed to the run's page
    assert served.runtime.store.load(run_id).status is RunStatus.CANCELLED


def test_chimera_ui_serves_the_console_alone_against_the_state_url(served, tmp_path):
    run_id = submit(served, body(2))[1]["run_id"]
    wait_until_settled(served, [run_id])
    console = ConsoleServer(Settings(home=tmp_path / "home"), 0)
    try:
        anonymous = requests.get(console.url + "/", timeout=10)
        assert anonymous.status_code == 401 and run_id not in anonymous.text
        session, _ = _signed_in(console.sign_in_url)
        page = session.get(f"{console.url}/run/{run_id}", timeout=10)
        assert page.status_code == 200 and "parked" in page.text
        assert run_id in session.get(f"{console.url}/parked", timeout=10).text
    finally:
        console.stop()

"""`chimera dev`'s HTTP surface with keys: unauthenticated callers get nothing, the CLI's keys
get in until revoked, the console signs in once by URL and its cookie cannot be used from
another site; judged from the store and the sandbox's own records."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from chimera.cli import main
from chimera.stack import LocalStack
from sandbox.records import RecordStore
from shared.keys import KEY_RE, SESSION_COOKIE
from shared.settings import Settings
from tests.e2e.conftest import body, wait_until_settled
from tests.e2e.test_crash import _free_port

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def served(tmp_path):
    stack = LocalStack(Settings(home=tmp_path / "home"), serve_port=0).start()
    yield stack
    stack.stop()


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_an_unauthenticated_caller_gets_401_everywhere_and_nothing_happens(served, tmp_path):
    url = served.url
    for method, path in [
        ("POST", "/runs"),
        ("GET", "/runs"),
        ("GET", "/runs/run-x"),
        ("POST", "/runs/run-x:cancel"),
        ("POST", "/runs/run-x:approve"),
        # The intake's own function path is the same function: no way around the key.
        ("POST", "/functions/orchestrator-intake/runs"),
        ("GET", "/functions/orchestrator-intake/runs"),
    ]:
        response = requests.request(method, url + path, json=body(1), timeout=10)
        assert response.status_code == 401, path
        assert response.headers["WWW-Authenticate"] == "Bearer"
    assert served.runtime.store.list_runs() == []
    assert RecordStore(tmp_path / "home").list() == []


def test_a_key_from_the_cli_gets_in_and_is_refused_at_once_when_revoked(
    served, tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("CHIMERA_HOME", str(tmp_path / "home"))
    assert main(["keys", "create", "crm"]) == 0
    token = capsys.readouterr().out.rstrip("\n").splitlines()[-1]
    assert KEY_RE.fullmatch(token)

    answer = requests.post(f"{served.url}/runs", json=body(2), headers=_bearer(token), timeout=10)
    assert answer.status_code == 202
    run_id = answer.json()["run_id"]
    wait_until_settled(served, [run_id])

    assert main(["keys", "list", "--json"]) == 0
    listed = capsys.readouterr().out
    assert '"crm"' in listed and token not in listed and "key_hash" not in listed

    assert main(["keys", "revoke", "crm"]) == 0
    capsys.readouterr()
    refused = requests.get(f"{served.url}/runs/{run_id}", headers=_bearer(token), timeout=10)
    assert refused.status_code == 401
    again = requests.post(f"{served.url}/runs", json=body(3), headers=_bearer(token), timeout=10)
    assert again.status_code == 401
    assert [r.run_id for r in served.runtime.store.list_runs()] == [run_id]
    assert served.runtime.store.events(run_id)[0].actor == "crm"


def test_the_console_signs_in_by_url_once_and_its_cookie_refuses_other_sites(served, tmp_path):
    signed_in = requests.get(
        f"{served.url}/runs?status=pending&token={served.credential}",
        allow_redirects=False,
        timeout=10,
    )
    assert signed_in.status_code == 303
    assert signed_in.headers["Location"] == "/runs?status=pending"  # the token is gone
    cookie = signed_in.headers["Set-Cookie"]
    assert f"{SESSION_COOKIE}=" in cookie and served.credential not in cookie
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
    session = requests.Session()
    session.cookies.set(SESSION_COOKIE, signed_in.cookies[SESSION_COOKIE])

    assert session.get(f"{served.url}/runs", timeout=10).status_code == 200
    # A page on another site, or another local port, posts with the victim's cookie.
    for origin in ("http://evil.example", "http://127.0.0.1:1", "null"):
        forged = session.post(
            f"{served.url}/runs", json=body(4), headers={"Origin": origin}, timeout=10
        )
        assert forged.status_code == 403, origin
    assert session.post(f"{served.url}/runs", json=body(4), timeout=10).status_code == 403
    assert served.runtime.store.list_runs() == []
    assert RecordStore(tmp_path / "home").list() == []

    own = session.post(f"{served.url}/runs", json=body(4), headers={"Origin": served.url})
    assert own.status_code == 202


def test_a_sign_in_url_never_redirects_off_site_and_a_wrong_token_is_401(served):
    for path in ("//evil.example/", "///evil.example/"):
        response = requests.get(
            f"{served.url}{path}?token={served.credential}", allow_redirects=False, timeout=10
        )
        assert response.status_code == 303
        location = response.headers["Location"]
        assert location.startswith("/") and not location.startswith("//"), location
    wrong = requests.get(f"{served.url}/?token=chimera_{'x' * 43}", allow_redirects=False)
    assert wrong.status_code == 401 and "Set-Cookie" not in wrong.headers


def test_chimera_dev_prints_a_console_url_that_signs_the_local_user_in(tmp_path):
    port = _free_port()
    env = {**os.environ, "CHIMERA_HOME": str(tmp_path / "home")}
    process = subprocess.Popen(
        [sys.executable, "-m", "chimera.cli", "-q", "dev", "--port", str(port)]
        + ["--sandbox-port", str(_free_port())],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        end, url = time.monotonic() + 60, ""
        while time.monotonic() < end and not url:
            line = process.stdout.readline()
            if "?token=" in line:
                url = line.strip()
        assert url.startswith(f"http://127.0.0.1:{port}/?token=chimera_"), url
        signed_in = requests.get(url, allow_redirects=False, timeout=10)
        assert signed_in.status_code == 303 and SESSION_COOKIE in signed_in.cookies
        runs = requests.get(f"http://127.0.0.1:{port}/runs", cookies=signed_in.cookies, timeout=10)
        assert runs.status_code == 200 and runs.json() == {"runs": []}
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)

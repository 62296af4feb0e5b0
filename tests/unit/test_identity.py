"""Callers' Google ID tokens, checked offline with a key made here instead of Google's."""

from __future__ import annotations

import time
from typing import Any

import flask
import pytest
from google.auth import crypt, jwt

from shared import identity
from shared.identity import GoogleCerts, GoogleTokenVerifier, identity_denied
from shared.runtime import Runtime, install
from shared.settings import Settings
from tests.fakes import FakeStateStore, FakeTaskQueue, rsa_key_pair
from tests.functions.conftest import Recorded, client_of

KID = "test-key"
TASKS_ACCOUNT = "chimera-tasks@acme-prod.iam.gserviceaccount.com"
SETTINGS = Settings(
    backend="gcp",
    require_identity=True,
    functions_url="https://us-central1-acme-prod.cloudfunctions.net",
    tasks_service_account=TASKS_ACCOUNT,
)
ORCHESTRATOR_URL = f"{SETTINGS.functions_url}/orchestrator"
INTAKE_URL = f"{SETTINGS.functions_url}/orchestrator-intake"


def _key() -> tuple[str, str]:
    return rsa_key_pair()


@pytest.fixture(scope="module")
def keys() -> dict[str, tuple[str, str]]:
    return {"google": _key(), "stranger": _key()}


@pytest.fixture(autouse=True)
def google_certs(keys):
    """Tokens are verified against our test key, as if it were one of Google's."""
    identity.use_verifier(GoogleTokenVerifier(certs={KID: keys["google"][1]}))
    yield
    identity.use_verifier(None)


def _token(keys, *, signer: str = "google", **claims: Any) -> str:
    now = int(time.time())
    payload = {
        "iss": "https://accounts.google.com",
        "aud": ORCHESTRATOR_URL,
        "sub": "1234567890",
        "email": TASKS_ACCOUNT,
        "email_verified": True,
        "iat": now,
        "exp": now + 600,
        **claims,
    }
    rsa_signer = crypt.RSASigner.from_string(keys[signer][0], key_id=KID)
    return jwt.encode(rsa_signer, payload).decode()


def _denied(token: str | None, settings: Settings = SETTINGS, **check: Any):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    check = {"audience": ORCHESTRATOR_URL, "email": TASKS_ACCOUNT, **check}
    with flask.Flask(__name__).test_request_context("/", method="POST", headers=headers):
        return identity_denied(flask.request, settings, **check)


def test_caller_passes_when_the_token_is_the_tasks_accounts(keys):
    assert _denied(_token(keys)) is None


def test_anyone_passes_when_identity_is_not_required():
    assert _denied(None, SETTINGS.replace(require_identity=False)) is None


def test_caller_is_refused_401_when_there_is_no_token():
    response = _denied(None)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert response.get_json()["error"]["code"] == "unauthenticated"


@pytest.mark.parametrize(
    "case",
    ["not a jwt", "signed by a stranger", "expired"],
)
def test_caller_is_refused_401_when_the_token_is_not_valid(keys, case):
    token = {
        "not a jwt": "abc.def",
        "signed by a stranger": _token(keys, signer="stranger"),
        "expired": _token(keys, iat=int(time.time()) - 7200, exp=int(time.time()) - 3600),
    }[case]
    response = _denied(token)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    error = response.get_json()["error"]
    assert error["code"] == "unauthenticated" and error["message"].startswith("invalid token")


@pytest.mark.parametrize(
    "claims",
    [
        {"aud": f"{SETTINGS.functions_url}/tool-slack"},
        {"iss": "https://evil.example"},
        {"email": "someone@acme-prod.iam.gserviceaccount.com"},
        {"email_verified": False},
    ],
    ids=["audience", "issuer", "email", "unverified-email"],
)
def test_caller_is_refused_403_when_a_claim_is_wrong(keys, claims):
    response = _denied(_token(keys, **claims))
    assert response.status_code == 403
    assert response.get_json()["error"]["code"] == "permission_denied"


def test_caller_is_refused_403_when_no_tasks_account_is_configured(keys):
    settings = SETTINGS.replace(tasks_service_account="")
    response = _denied(_token(keys), settings, email="")
    assert response.status_code == 403
    # A valid Google token is not enough: with no account configured, nobody gets in.
    assert response.get_json()["error"] == {
        "code": "permission_denied",
        "message": "no caller is configured for this target",
    }


def test_certificates_are_refetched_when_a_token_names_an_unknown_key():
    fetched: list[int] = []

    def fetch():
        fetched.append(1)
        return {f"key-{len(fetched)}": "pem"}

    certs = GoogleCerts(fetch, refetch_after_s=0)
    assert certs.get("key-1") == {"key-1": "pem"}
    assert certs.get("key-1") == {"key-1": "pem"} and len(fetched) == 1
    assert certs.get("key-2") == {"key-2": "pem"} and len(fetched) == 2
    rate_limited = GoogleCerts(fetch, refetch_after_s=3600)
    rate_limited.get(None)
    rate_limited.get("unknown")
    assert len(fetched) == 3


@pytest.fixture
def recorded() -> tuple[Recorded, FakeTaskQueue]:
    queue = FakeTaskQueue()
    store = Recorded(FakeStateStore(queue))  # notes each use of the store
    install(Runtime(SETTINGS, store, queue))  # type: ignore[arg-type]
    return store, queue


def test_refused_task_touches_no_state_when_the_token_is_missing_or_wrong(keys, recorded):
    store, queue = recorded
    tasks = client_of("orchestrator/main.py", "handle_task")
    body = {"run_id": "run-1", "kind": "start"}
    assert tasks.post("/", json=body).status_code == 401
    wrong = {"Authorization": f"Bearer {_token(keys, email='intruder@example.com')}"}
    assert tasks.post("/", json=body, headers=wrong).status_code == 403
    assert store.used == [] and queue.tasks == {}
    # The same task with the tasks account's token gets in (and finds no such run).
    right = {"Authorization": f"Bearer {_token(keys)}"}
    assert tasks.post("/", json=body, headers=right).status_code == 200
    assert store.used


def test_refused_intake_touches_no_state_when_the_audience_is_another(keys, recorded):
    store, queue = recorded
    intake = client_of("orchestrator/main.py", "intake_http")
    assert intake.get("/runs").status_code == 401
    token = _token(keys, aud=ORCHESTRATOR_URL, email="ada@acme.example")
    assert intake.get("/runs", headers={"Authorization": f"Bearer {token}"}).status_code == 403
    assert store.used == [] and queue.tasks == {}
    token = _token(keys, aud=INTAKE_URL, email="ada@acme.example")
    # Ada is verified, but not an operator: runs hold personal data.
    response = intake.get("/runs", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 403 and store.used == []
    install(Runtime(SETTINGS.replace(intake_operators="ada@acme.example"), store, queue))  # type: ignore[arg-type]
    response = intake.get("/runs", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200 and store.used == ["list_runs"]


def test_refused_tool_task_touches_no_state_when_the_token_is_for_another_function(keys, recorded):
    store, queue = recorded
    slack = client_of("tools/slack/main.py", "run_tool")
    assert slack.post("/", json={}).status_code == 401
    for_orchestrator = {"Authorization": f"Bearer {_token(keys)}"}
    assert slack.post("/", json={}, headers=for_orchestrator).status_code == 403
    assert store.used == [] and queue.tasks == {}
    for_slack = {
        "Authorization": f"Bearer {_token(keys, aud=f'{SETTINGS.functions_url}/tool-slack')}"
    }
    assert slack.post("/", json={}, headers=for_slack).status_code == 400  # let in, then refused
    assert store.used == ["record_rejection"]

"""Who may call the intake and who is recorded for what they do: local bearer keys, console
sessions and their cross-site check, Google accounts and operators."""

from __future__ import annotations

import time

import pytest
from google.auth import crypt, jwt

from shared import identity
from shared.identity import GoogleTokenVerifier
from shared.keys import SESSION_COOKIE, Keys, local_credential
from shared.model import Approval, RunStatus
from shared.runtime import Runtime, install, runtime
from shared.settings import Settings
from tests.fakes import FakeStateStore, FakeTaskQueue, rsa_key_pair
from tests.functions.conftest import client_of
from tests.functions.test_orchestrator_main import REQUEST

ROUTES = [
    ("POST", "/runs"),
    ("GET", "/runs"),
    ("GET", "/runs/run-1"),
    *[("POST", f"/runs/run-1:{a}") for a in ("resume", "cancel", "approve", "reject")],
]
SITE = "http://localhost"  # the test client's own origin


@pytest.fixture
def intake():
    return client_of("orchestrator/main.py", "intake_http")


def _keys() -> Keys:
    rt = runtime()
    return Keys(rt.store, rt.settings.home)  # type: ignore[arg-type]


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _waiting_run(intake, token: str) -> str:
    """A run waiting for approval of its email, made through the intake."""
    store = runtime().store
    run_id = intake.post("/runs", json=REQUEST, headers=_bearer(token)).get_json()["run_id"]
    run = store.load(run_id)
    waiting = run.evolve(
        status=RunStatus.WAITING, approval=Approval(step_id="email", status="waiting")
    )
    store.transition(waiting, expected_version=run.version)
    return run_id


@pytest.mark.parametrize(("method", "path"), ROUTES)
@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer chimera_" + "A" * 43},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "Bearer"},
        {"Cookie": f"{SESSION_COOKIE}=forged"},
    ],
    ids=["none", "unknown-key", "basic", "empty-bearer", "forged-cookie"],
)
def test_every_route_is_401_and_changes_nothing_when_the_caller_has_no_valid_key(
    fakes, intake, method, path, headers
):
    store, queue = fakes
    response = intake.open(path, method=method, json=REQUEST, headers=headers)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert response.get_json()["error"]["code"] == "unauthenticated"
    assert response.get_json()["error"]["message"]
    assert store.runs == {} and queue.tasks == {}


def test_a_created_key_gets_in_and_is_the_submitter_in_the_audit_trail(fakes, intake):
    store, _ = fakes
    _, token = _keys().create("crm")
    response = intake.post("/runs", json=REQUEST, headers=_bearer(token))
    assert response.status_code == 202
    (created,) = store.events(response.get_json()["run_id"])
    assert created.kind == "run.created" and created.actor == "crm"


def test_a_revoked_key_is_refused_at_once(fakes, intake):
    store, _ = fakes
    _, token = _keys().create("crm")
    assert intake.get("/runs", headers=_bearer(token)).status_code == 200
    _keys().revoke("crm")
    assert intake.post("/runs", json=REQUEST, headers=_bearer(token)).status_code == 401
    assert store.runs == {}


def test_the_approver_and_the_canceller_are_the_keys_never_the_body(fakes, intake):
    store, _ = fakes
    _, ada = _keys().create("ada")
    _, grace = _keys().create("grace")
    approved_id = _waiting_run(intake, ada)
    approved = intake.post(
        f"/runs/{approved_id}:approve", json={"actor": "mallory"}, headers=_bearer(ada)
    )
    assert approved.status_code == 200 and approved.get_json()["actor"] == "ada"
    cancelled_id = intake.post(
        "/runs", json={**REQUEST, "request_id": "second"}, headers=_bearer(ada)
    ).get_json()["run_id"]
    cancelled = intake.post(
        f"/runs/{cancelled_id}:cancel",
        json={"actor": "mallory", "reason": "client asked"},
        headers=_bearer(grace),
    )
    assert cancelled.status_code == 200 and cancelled.get_json()["status"] == "cancelled"
    approvals = [e.actor for e in store.events(approved_id) if e.kind == "approval.approved"]
    cancels = [e.actor for e in store.events(cancelled_id) if e.kind == "run.cancelled"]
    assert approvals == ["ada"] and cancels == ["grace"]
    assert store.load(approved_id).approval.actor == "ada"
    for run_id in (approved_id, cancelled_id):
        assert "mallory" not in str(store.load(run_id).model_dump())
        assert "mallory" not in str([e.model_dump() for e in store.events(run_id)])


def test_the_resumer_is_the_key(fakes, intake):
    store, _ = fakes
    _, ops = _keys().create("ops")
    run_id = intake.post("/runs", json=REQUEST, headers=_bearer(ops)).get_json()["run_id"]
    run = store.load(run_id)
    store.transition(run.evolve(status=RunStatus.PARKED), expected_version=run.version)
    resumed = intake.post(f"/runs/{run_id}:resume", json={}, headers=_bearer(ops))
    assert resumed.status_code == 200 and resumed.get_json()["actor"] == "ops"
    assert [e.actor for e in store.events(run_id) if e.kind == "run.resumed"] == ["ops"]


def test_an_action_with_an_unknown_field_or_a_bad_reason_is_refused_and_changes_nothing(
    fakes, intake
):
    store, _ = fakes
    token = local_credential(runtime().settings.home)
    run_id = _waiting_run(intake, token)
    before = store.load(run_id)
    for body in ({"surprise": 1}, {"reason": "x" * 501}, {"reason": "bad\u0000"}, ["reason"]):
        response = intake.post(f"/runs/{run_id}:reject", json=body, headers=_bearer(token))
        assert response.status_code == 400, body
        assert response.get_json()["error"]["code"] == "invalid_input"
    assert store.load(run_id) == before


def test_a_session_cookie_reads_and_acts_from_its_own_origin(fakes, intake):
    _, token = _keys().create("console")
    intake.set_cookie(SESSION_COOKIE, _keys().session_for(token))
    assert intake.get("/runs").status_code == 200
    submitted = intake.post("/runs", json=REQUEST, headers={"Origin": SITE})
    assert submitted.status_code == 202
    same_origin = {"Origin": SITE, "Sec-Fetch-Site": "same-origin"}
    run_id = submitted.get_json()["run_id"]
    cancelled = intake.post(f"/runs/{run_id}:cancel", json={}, headers=same_origin)
    assert cancelled.status_code == 200 and cancelled.get_json()["actor"] == "console"


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Origin": "http://evil.example"},
        {"Origin": "http://localhost:9999"},  # another local server: same site, other origin
        {"Origin": "null"},
        {"Origin": SITE, "Sec-Fetch-Site": "cross-site"},
        {"Origin": SITE, "Sec-Fetch-Site": "same-site"},
    ],
    ids=["no-origin", "evil", "other-port", "null", "cross-site", "same-site"],
)
def test_a_cookie_borne_post_from_another_site_is_403_and_changes_nothing(fakes, intake, headers):
    store, queue = fakes
    _, token = _keys().create("console")
    intake.set_cookie(SESSION_COOKIE, _keys().session_for(token))
    response = intake.post("/runs", json=REQUEST, headers=headers)
    assert response.status_code == 403
    assert "this site" in response.get_json()["error"]["message"]
    assert store.runs == {} and queue.tasks == {}


def test_a_bearer_key_needs_no_origin(fakes, intake):
    # A page cannot make a browser send an Authorization header cross-site without CORS,
    # which the intake never grants.
    token = local_credential(runtime().settings.home)
    response = intake.post("/runs", json=REQUEST, headers={**_bearer(token), "Origin": "http://x"})
    assert response.status_code == 202
    assert "Access-Control-Allow-Origin" not in response.headers


# --- Google Cloud: verified ID tokens, operators --------------------------------------------

FUNCTIONS_URL = "https://us-central1-acme-prod.cloudfunctions.net"
INTAKE_URL = f"{FUNCTIONS_URL}/orchestrator-intake"


@pytest.fixture(scope="module")
def google_key() -> tuple[str, str]:
    return rsa_key_pair()


@pytest.fixture
def cloud(google_key, tmp_path):
    identity.use_verifier(GoogleTokenVerifier(certs={"k": google_key[1]}))
    queue = FakeTaskQueue()
    store = FakeStateStore(queue)
    settings = Settings(
        backend="gcp",
        home=tmp_path / "home",
        functions_url=FUNCTIONS_URL,
        intake_operators="ops@acme.example, Lead@Acme.example",
        agent_reasoning=False,
    )
    install(Runtime(settings, store, queue))
    yield store
    identity.use_verifier(None)


def _google(google_key, who: str, aud: str = INTAKE_URL, **claims) -> dict[str, str]:
    now = int(time.time())
    payload = {
        "iss": "https://accounts.google.com",
        "aud": aud,
        "email": who,
        "email_verified": True,
        "iat": now,
        "exp": now + 300,
        **claims,
    }
    token = jwt.encode(crypt.RSASigner.from_string(google_key[0], "k"), payload).decode()
    return _bearer(token)


def test_google_cloud_verifies_intake_identity_by_default():
    assert Settings(backend="gcp").intake_identity_required is True
    assert Settings().intake_identity_required is False  # locally: keys
    assert Settings(backend="gcp", intake_require_identity=False).intake_identity_required is False


def test_on_google_cloud_an_operator_acts_under_their_verified_email(cloud, google_key, intake):
    crm = _google(google_key, "crm@acme-prod.iam.gserviceaccount.com")
    submitted = intake.post("/runs", json=REQUEST, headers=crm)
    assert submitted.status_code == 202
    run_id = submitted.get_json()["run_id"]
    assert cloud.events(run_id)[0].actor == "crm@acme-prod.iam.gserviceaccount.com"
    # Not an operator: no reading the client's personal data, no acting on the run.
    for method, path in ROUTES[1:]:
        path = path.replace("run-1", run_id)
        assert intake.open(path, method=method, json={}, headers=crm).status_code == 403, path
    lead = _google(google_key, "lead@acme.example")
    assert intake.get(f"/runs/{run_id}", headers=lead).status_code == 200
    cancelled = intake.post(f"/runs/{run_id}:cancel", json={"actor": "someone"}, headers=lead)
    assert cancelled.status_code == 200
    assert [e.actor for e in cloud.events(run_id) if e.kind == "run.cancelled"] == [
        "lead@acme.example"
    ]


@pytest.mark.parametrize(
    ("claims", "status"),
    [
        ({"aud": f"{FUNCTIONS_URL}/orchestrator"}, 403),
        ({"iss": "https://evil.example"}, 403),
        ({"email_verified": False}, 403),
        ({"email": ""}, 403),
        ({"exp": int(time.time()) - 3600}, 401),
    ],
    ids=["other-audience", "other-issuer", "unverified-email", "no-email", "expired"],
)
def test_on_google_cloud_a_token_that_is_not_for_this_intake_is_refused(
    cloud, google_key, intake, claims, status
):
    headers = _google(google_key, "ops@acme.example", **claims)
    response = intake.post("/runs", json=REQUEST, headers=headers)
    assert response.status_code == status
    assert cloud.runs == {}


def test_on_google_cloud_a_local_key_is_not_an_identity(cloud, intake):
    token = local_credential(runtime().settings.home)
    assert intake.post("/runs", json=REQUEST, headers=_bearer(token)).status_code == 401
    assert cloud.runs == {}


def test_several_audiences_may_be_accepted(cloud, google_key, intake):
    gcloud = "32555940559.apps.googleusercontent.com"  # what a person's gcloud token names
    install(
        Runtime(
            runtime().settings.replace(intake_audience=f"{INTAKE_URL},{gcloud}"),
            runtime().store,
            runtime().queue,
        )
    )
    headers = _google(google_key, "ops@acme.example", aud=gcloud)
    assert intake.get("/runs", headers=headers).status_code == 200

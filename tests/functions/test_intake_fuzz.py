"""The intake and the run actions under random and hostile requests (hypothesis): never a 500,
never a partial run, never a step dispatched towards a vendor, every refusal a clear error."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.keys import Keys, local_credential
from shared.model import Approval, RunStatus
from shared.queues import ORCHESTRATOR_QUEUE
from shared.runtime import Runtime, install
from shared.settings import Settings
from tests.fakes import FakeStateStore, FakeTaskQueue
from tests.functions.conftest import client_of
from tests.functions.test_orchestrator_main import REQUEST
from tests.strategies import json_values

# What the intake may answer; anything else (a 500 above all) is a bug.
ANSWERS = {200, 202, 400, 401, 403, 404, 405, 409, 413, 415}
FIELDS = sorted(REQUEST) + ["request_id"]


@st.composite
def hostile_bodies(draw: Any) -> Any:
    """A valid request bent out of shape, or anything at all."""
    kind = draw(st.sampled_from(["bent", "extra", "missing", "anything"]))
    body: dict[str, Any] = dict(REQUEST)
    if kind == "bent":
        for field in draw(st.lists(st.sampled_from(FIELDS), min_size=1, max_size=3)):
            body[field] = draw(json_values)
    elif kind == "extra":
        body[draw(st.text(min_size=1, max_size=20))] = draw(json_values)
    elif kind == "missing":
        body.pop(draw(st.sampled_from(sorted(REQUEST))))
    else:
        return draw(json_values)
    return body


credentials = st.sampled_from(["key", "local", "none", "garbage", "revoked"])


def _runtime(home) -> tuple[FakeStateStore, FakeTaskQueue, dict[str, str]]:
    """A fresh store per example; the keys each credential kind stands for."""
    queue = FakeTaskQueue()
    store = FakeStateStore(queue)
    install(Runtime(Settings(agent_reasoning=False, home=home), store, queue))
    keys = Keys(store, home)
    _, key = keys.create("fuzzer")
    _, revoked = keys.create("gone")
    keys.revoke("gone")
    headers = {
        "key": f"Bearer {key}",
        "local": f"Bearer {local_credential(home)}",
        "garbage": "Bearer chimera_" + "0" * 43,
        "revoked": f"Bearer {revoked}",
    }
    return store, queue, headers


def _auth(headers: dict[str, str], credential: str) -> dict[str, str]:
    return {"Authorization": headers[credential]} if credential in headers else {}


def _clear_error(response: Any) -> None:
    error = response.get_json()["error"]
    assert isinstance(error["code"], str) and error["code"]
    assert isinstance(error["message"], str) and error["message"]


def _no_partial_run(store: FakeStateStore, queue: FakeTaskQueue) -> None:
    """Every stored run has its audit trail's first line and its start task; nothing else is
    queued, and nothing for a tool: the intake never reaches a vendor."""
    assert {t.queue for t in queue.tasks.values()} <= {ORCHESTRATOR_QUEUE}
    for run_id, run in store.runs.items():
        assert run.status is RunStatus.PENDING and run.version == 1
        assert [e.kind for e in store.events(run_id)] == ["run.created"]
        assert f"{run_id}-start" in queue.tasks
    assert len(queue.tasks) == 2 * len(store.runs)  # a start and its watchdog each


@settings(max_examples=100, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=hostile_bodies(), credential=credentials, raw=st.booleans())
def test_the_intake_never_fails_or_half_creates_whatever_it_is_sent(
    tmp_path, body, credential, raw
):
    store, queue, headers = _runtime(tmp_path / "home")
    intake = client_of("orchestrator/main.py", "intake_http")
    if raw:  # the same bytes, not necessarily JSON any more
        data = json.dumps(body).encode()[:-1]
        response = intake.post(
            "/runs",
            data=data,
            headers={**_auth(headers, credential), "Content-Type": "application/json"},
        )
    else:
        response = intake.post("/runs", json=body, headers=_auth(headers, credential))
    assert response.status_code in ANSWERS
    if credential not in ("key", "local"):
        assert response.status_code == 401
    if response.status_code >= 400:
        _clear_error(response)
        assert store.runs == {} and queue.tasks == {}
    else:
        assert response.status_code == 202 and len(store.runs) == 1
        assert store.events(response.get_json()["run_id"])[0].actor in ("fuzzer", "local")
    _no_partial_run(store, queue)


action_names = st.sampled_from(["resume", "cancel", "approve", "reject"])
paths = st.one_of(
    st.builds(lambda r, a: f"/runs/{r}:{a}", st.text(max_size=30), action_names),
    st.builds(lambda r, a: f"/runs/{r}:{a}", st.just("RUN"), action_names | st.text(max_size=10)),
    st.text(max_size=40).map(lambda p: "/" + p),
)


@settings(max_examples=100, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    path=paths, body=json_values, credential=credentials, method=st.sampled_from(["GET", "POST"])
)
def test_an_action_on_any_run_with_any_body_never_fails(tmp_path, path, body, credential, method):
    store, queue, headers = _runtime(tmp_path / "home")
    intake = client_of("orchestrator/main.py", "intake_http")
    # One real run waiting for approval: the fuzzer may hit it (as RUN) or miss every run.
    run_id = intake.post("/runs", json=REQUEST, headers=_auth(headers, "key")).get_json()["run_id"]
    run = store.runs[run_id]
    store.transition(
        run.evolve(status=RunStatus.WAITING, approval=Approval(step_id="email", status="waiting")),
        expected_version=1,
    )
    before = store.runs[run_id]
    path = path.replace("RUN", run_id)
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        path = path.encode("utf-8", "replace").decode()
    response = intake.open(path, method=method, json=body, headers=_auth(headers, credential))
    if response.status_code == 308:
        # The Functions Framework's router merges repeated slashes with a redirect before any
        # view runs: nothing is read or changed, whoever asks.
        assert "//" in path and "//" not in response.headers["Location"].split("://", 1)[-1]
        assert store.runs[run_id] == before
        return
    assert response.status_code in ANSWERS
    if credential not in ("key", "local"):
        assert response.status_code == 401
    if response.status_code >= 400:
        _clear_error(response)
    changed = store.runs[run_id] != before
    if changed:  # only an action that succeeded changes the run, recorded under its caller
        assert response.status_code == 200 and method == "POST"
        events = store.events(run_id)[1:]
        assert events and {e.actor for e in events} <= {"fuzzer", "local", "orchestrator"}
        assert response.get_json()["actor"] in ("fuzzer", "local")
    assert len(store.runs) == 1

"""The attacks on `chimera dev --http` from another local process or a web page: each one
refused, and nothing happens at the vendors (judged from the sandbox's own records)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
import requests

from chimera.stack import LocalStack
from sandbox.effects import side_effects
from sandbox.records import RecordStore
from shared.local_targets import Delivery, DeliveryResult, Target
from shared.model import RunStatus
from shared.run_filter import RunFilter
from shared.settings import Settings
from shared.task_signing import SIGNATURE_HEADER
from tests.e2e.conftest import ONE_ONBOARDING, body, submit, wait_until_settled

pytestmark = pytest.mark.slow

# Short, so that a captured task can be replayed after it; every real delivery is signed the
# moment it is sent, well within it.
WINDOW_S = 5.0


class Capturing:
    """Hands each delivery on to the real target, keeping a copy: what a sniffer would see."""

    def __init__(self, target: Target, seen: list[Delivery]) -> None:
        self.target = target
        self.seen = seen

    def __call__(self, delivery: Delivery) -> DeliveryResult:
        self.seen.append(delivery)
        return self.target(delivery)


@pytest.fixture
def served(tmp_path) -> Iterator[tuple[LocalStack, list[Delivery]]]:
    settings = Settings(home=tmp_path / "home", task_signature_window=WINDOW_S)
    stack = LocalStack(settings, serve_port=0, over_http=True).start()
    seen: list[Delivery] = []
    assert stack.dispatcher is not None
    for name, target in list(stack.dispatcher.targets.items()):
        stack.dispatcher.targets[name] = Capturing(target, seen)
    yield stack, seen
    stack.stop()


def _post(url: str, data: bytes, headers: dict[str, str]) -> requests.Response:
    return requests.post(url, data=data, headers=headers, timeout=10)


def _signed_at(delivery: Delivery) -> int:
    return int(delivery.headers[SIGNATURE_HEADER].partition(",")[0].removeprefix("t="))


def test_forged_replayed_tampered_cross_site_rebound_and_oversized_requests_do_nothing(
    served, tmp_path
):
    stack, seen = served
    home = tmp_path / "home"
    run_id = submit(stack, body())[1]["run_id"]
    run = wait_until_settled(stack, [run_id])[run_id]
    assert run.status is RunStatus.SUCCEEDED, run.reason
    store = stack.runtime.store  # type: ignore[union-attr]
    calls, effects = len(RecordStore(home).list()), side_effects(home)
    events = len(store.events(run_id))
    email = next(d for d in seen if d.queue == "tool-sendgrid" and "-email-" in d.task_name)
    sendgrid = f"{stack.url}/functions/tool-sendgrid/"
    url_of = {d.queue: f"{stack.url}/functions/{d.queue}/" for d in seen}
    json_headers = {"Content-Type": "application/json"}

    # The forged tool call of the issue: the email task, to another recipient, unsigned (the
    # task carries references only, so the forger adds the request it wants obeyed).
    forged = json.loads(email.body)
    forged["request"] = {**run.request.model_dump(), "contact_email": "victim@elsewhere.example"}
    unsigned = {k: v for k, v in email.headers.items() if k != SIGNATURE_HEADER}
    answer = _post(sendgrid, json.dumps(forged).encode(), {**unsigned, **json_headers})
    assert answer.status_code == 401

    # A tampered body under a real, current signature: the latest delivery, as the dispatcher
    # signs it now (a redelivery), then changed.
    latest = seen[-1]
    headers = {
        **latest.headers,
        **stack.signer.headers(latest.body, latest.task_name),  # type: ignore[union-attr]
        **json_headers,
    }
    tampered = latest.body.replace(b'"run_id"', b'"run_id" ', 1) + b" "
    assert _post(url_of[latest.queue], tampered, headers).status_code == 403
    renamed = {**headers, "X-CloudTasks-TaskName": f"{latest.task_name}-2"}
    assert _post(url_of[latest.queue], latest.body, renamed).status_code == 403
    # The same delivery as signed is a redelivery, which changes nothing either (below).
    assert _post(url_of[latest.queue], latest.body, headers).status_code == 200

    # Cross-site: a page's text/plain POST (a "simple" request, no preflight), or a form.
    for url in (f"{stack.url}/runs", sendgrid, f"{stack.url}/runs/{run_id}:cancel"):
        for content_type in ("text/plain", "application/x-www-form-urlencoded"):
            answer = _post(url, json.dumps(forged).encode(), {"Content-Type": content_type})
            assert answer.status_code == 415, (url, content_type)

    # DNS rebinding: a page on evil.example whose name now points at 127.0.0.1.
    rebound = {"Host": "evil.example", **json_headers}
    assert requests.get(f"{stack.url}/runs", headers=rebound, timeout=10).status_code == 421
    assert _post(sendgrid, email.body, {**email.headers, **rebound}).status_code == 421
    assert _post(f"{stack.url}/runs", json.dumps(body(9)).encode(), rebound).status_code == 421

    # Oversized: refused on its Content-Length, before it is read.
    huge = json.dumps(body(8, goal="x" * 100_000)).encode()
    assert _post(f"{stack.url}/runs", huge, json_headers).status_code == 413
    assert _post(sendgrid, huge, {**email.headers, **json_headers}).status_code == 413

    # A captured task replayed once its window has passed.
    time.sleep(max(0.0, _signed_at(email) + WINDOW_S + 1.5 - time.time()))
    assert _post(sendgrid, email.body, {**email.headers, **json_headers}).status_code == 403

    # Nothing happened: no vendor call, no side effect, no new run, the run unchanged.
    assert len(RecordStore(home).list()) == calls
    assert side_effects(home) == effects and effects[run_id] == ONE_ONBOARDING
    assert [r.run_id for r in store.list_runs(RunFilter())] == [run_id]
    after = store.load(run_id)
    assert after.version == run.version and after.status is RunStatus.SUCCEEDED
    # Only the genuine redelivery left a trace: its step says it was skipped.
    assert len(store.events(run_id)) <= events + 1

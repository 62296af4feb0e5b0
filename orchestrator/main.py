"""The orchestrator's deployed targets: intake over HTTP and Pub/Sub, and its task queue."""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re

import flask
import functions_framework
from cloudevents.http import CloudEvent
from pydantic import Field, ValidationError

import shared.runtime
from orchestrator import service
from shared import telemetry
from shared.callers import Caller, intake_caller, refused
from shared.errors import Conflict, StoreBusy
from shared.fields import ActionReason
from shared.identity import task_caller_denied
from shared.keys import Keys
from shared.model import (
    Model,
    OnboardingRequest,
    OrchestratorTask,
    Rejection,
    RunStatus,
)
from shared.queues import ORCHESTRATOR_QUEUE
from shared.request_guard import body_refused
from shared.run_filter import RunFilter
from shared.runtime import per_runtime, runtime
from shared.tasks_http import answer, attempt_of, refuse, retry_later
from shared.validation_errors import field_errors, one_line

log = logging.getLogger(__name__)
telemetry.serve_as("orchestrator")

RUN_PATH = re.compile(
    r"^/runs/(?P<run_id>[A-Za-z0-9_-]+)(?::(?P<action>resume|cancel|approve|reject))?$"
)


# The model is chosen in shared/runtime.py, with the orchestrator's shorter timeout.
reasoning_model = per_runtime(shared.runtime.reasoning_model)


@functions_framework.http
def intake_http(request: flask.Request) -> flask.Response:
    """POST /runs starts a run; GET /runs and GET /runs/{id} read them; POST /runs/{id}:action
    acts on one. Every route needs an authenticated caller (shared/callers.py); reads and
    actions, an operator: runs hold clients' personal data."""
    try:
        return _intake(request)
    except StoreBusy as exc:
        log.warning("intake: %s; asked the caller to send again", exc.message)
        return retry_later(exc)
    finally:
        telemetry.flush()  # the run's root span leaves before the answer


def _intake(request: flask.Request) -> flask.Response:
    rt = runtime()
    # Who calls first (headers only), so a stranger cannot make us read a body.
    caller = intake_caller(request, rt.settings, Keys(rt.store, rt.settings.home))
    if isinstance(caller, flask.Response):
        return caller
    unreadable = body_refused(request, rt.settings.max_body_bytes)  # 415 not JSON, 413 large
    if unreadable is not None:
        return unreadable
    path = request.path.rstrip("/") or "/"
    if request.method == "POST" and path in ("/", "/runs"):
        return _submit(request, caller)
    match = RUN_PATH.match(path)
    listing = request.method == "GET" and path == "/runs"
    reading = request.method == "GET" and match is not None and not match["action"]
    acting = request.method == "POST" and match is not None and match["action"]
    if not (listing or reading or acting):
        return answer(404, {"error": {"code": "not_found", "message": f"no route {path}"}})
    if not caller.operator:
        return refused(403, f"{caller.name} may submit runs, not read them or act on them")
    if match is None:
        return _list(request)
    if acting:
        return _act(match["run_id"], match["action"], request, caller)
    run = rt.store.load(match["run_id"])
    if run is None:
        return answer(404, {"error": {"code": "not_found", "message": "no such run"}})
    return answer(200, _run_view(run))


def _list(request: flask.Request) -> flask.Response:
    status = request.args.get("status")
    try:
        query = RunFilter(
            status=RunStatus(status) if status else None,
            attention=request.args.get("attention") or None,
            limit=int(request.args.get("limit", 50)),
        )
    except ValueError as exc:
        return answer(400, {"error": {"code": "invalid_input", "message": str(exc)}})
    runs = runtime().store.list_runs(query)
    return answer(200, {"runs": [_run_view(r) for r in runs]})


class ActionBody(Model):
    """What an action's body may say. Who acts is the authenticated caller, never the body."""

    reason: ActionReason = ""
    # Clients once named the actor here; still accepted, never believed (the answer says who
    # was recorded instead).
    actor: str | None = Field(default=None, max_length=200)


def _act(run_id: str, action: str, request: flask.Request, caller: Caller) -> flask.Response:
    """POST /runs/{id}:resume goes on from the failed step; :cancel stops the run; :approve
    and :reject (body: reason) answer a run waiting for approval of its email. The caller is
    recorded as the actor."""
    body = request.get_json(silent=True) if request.get_data() else {}
    if not isinstance(body, dict):
        return answer(
            400, {"error": {"code": "invalid_input", "message": "the body must be a JSON object"}}
        )
    try:
        action_body = ActionBody.model_validate(body)
    except ValidationError as exc:
        return answer(
            400,
            {
                "error": {
                    "code": "invalid_input",
                    "message": "invalid action",
                    "fields": field_errors(exc),
                }
            },
        )
    if action_body.actor is not None and action_body.actor != caller.name:
        log.warning("%s named %r as the actor of %s: ignored", caller.name, body["actor"], action)
    actor, reason = caller.name, action_body.reason
    try:
        if action == "resume":
            status = service.resume(runtime(), run_id, actor)
        elif action == "approve":
            status = service.approve(runtime(), run_id, actor)
        elif action == "reject":
            if not reason:
                return answer(
                    400,
                    {"error": {"code": "invalid_input", "message": "a rejection needs a reason"}},
                )
            status = service.reject(runtime(), run_id, actor, reason)
        else:
            status = service.cancel(runtime(), run_id, reason, actor)
    except LookupError as exc:
        return answer(404, {"error": {"code": "not_found", "message": str(exc)}})
    except service.NotAllowed as exc:
        return answer(409, {"error": {"code": "not_allowed", "message": str(exc)}})
    except Conflict as exc:
        return retry_later(exc)
    return answer(200, {"run_id": run_id, "status": status, "actor": actor})


def _submit(request: flask.Request, caller: Caller) -> flask.Response:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        return answer(
            400, {"error": {"code": "invalid_input", "message": "the body must be a JSON object"}}
        )
    try:
        onboarding = OnboardingRequest.model_validate(body)
    except ValidationError as exc:
        return answer(
            400,
            {
                "error": {
                    "code": "invalid_input",
                    "message": "invalid request",
                    "fields": field_errors(exc),
                }
            },
        )
    try:
        run, created = service.submit(runtime(), onboarding, source="http", actor=caller.name)
    except service.RequestKeyReused as exc:
        return answer(409, {"error": {"code": "request_id_reused", "message": str(exc)}})
    return answer(
        202 if created else 200,
        {"run_id": run.run_id, "status": run.status.value, "created": created},
    )


@functions_framework.cloud_event
def intake_pubsub(event: CloudEvent) -> None:
    """A run from a Pub/Sub message. A message that can never be a run is acknowledged and
    recorded as rejected, so Pub/Sub does not redeliver it forever."""
    rt = runtime()
    message = (event.data or {}).get("message", {}) if isinstance(event.data, dict) else {}
    message_id = str(message.get("messageId") or message.get("message_id") or "")
    try:
        raw = base64.b64decode(message.get("data", ""), validate=True)
        onboarding = OnboardingRequest.model_validate(json.loads(raw))
    except (binascii.Error, ValueError, ValidationError) as exc:
        reason = (
            f"invalid request: {field_errors(exc)}"
            if isinstance(exc, ValidationError)
            else f"not a JSON request: {exc}"
        )
        log.error("pubsub message %s rejected: %s", message_id, reason)
        rt.store.record_rejection(
            Rejection(source="pubsub", reason=reason, excerpt=json.dumps(message)[:500])
        )
        return
    try:
        service.submit(rt, onboarding, source="pubsub")
    except service.RequestKeyReused as exc:
        log.error("pubsub message %s rejected: %s", message_id, exc)
        rt.store.record_rejection(
            Rejection(source="pubsub", reason=str(exc), excerpt=json.dumps(message)[:500])
        )
    finally:
        telemetry.flush()  # the run's root span leaves before the answer


@functions_framework.http
def handle_task(request: flask.Request) -> flask.Response:
    """The orchestrator queue's target: a run to start or a step's report to take in."""
    rt = runtime()
    # Only the queue's own tasks get past here: nothing before it reads state.
    denied = task_caller_denied(request, rt.settings, ORCHESTRATOR_QUEUE)
    if denied is not None:
        return denied
    attempt = attempt_of(request, ORCHESTRATOR_QUEUE)
    raw = request.get_data()
    try:
        happening = OrchestratorTask.model_validate_json(raw)
    except ValidationError as exc:
        return refuse(rt.store, attempt, ORCHESTRATOR_QUEUE, one_line(exc), raw)
    with telemetry.task_delivery(
        f"orchestrator {happening.kind}",
        request.headers,
        rt.store,
        attempt,
        run_id=happening.run_id,
        step_id=happening.step_id,
    ) as span:
        try:
            model = reasoning_model() if rt.settings.agent_reasoning else None
            result = service.take(rt, happening, model)
        except (Conflict, StoreBusy) as exc:
            telemetry.failed(span, exc)
            return retry_later(exc)
        span.set_attribute("chimera.decision", result)
    return answer(200, {"status": result})


def _run_view(run) -> dict:  # type: ignore[no-untyped-def]
    return run.model_dump(mode="json")

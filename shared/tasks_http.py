"""What every queue-served endpoint shares: reading Cloud Tasks' headers, answering, refusing."""

from __future__ import annotations

import logging
from typing import Any

import flask

from shared.errors import ChimeraError, RateLimited
from shared.model import Attempt, Rejection
from shared.queues import QUEUES
from shared.state import StateStore

log = logging.getLogger(__name__)


def attempt_of(request: flask.Request, default_queue: str) -> Attempt:
    """Which delivery of a task this is, from Cloud Tasks' headers."""
    queue = request.headers.get("X-CloudTasks-QueueName", "") or default_queue
    try:
        retry_count = max(0, int(request.headers.get("X-CloudTasks-TaskRetryCount", "0")))
    except ValueError:
        retry_count = 0
    config = QUEUES.get(queue) or QUEUES[default_queue]
    return Attempt(
        queue=queue,
        task_name=request.headers.get("X-CloudTasks-TaskName", ""),
        retry_count=retry_count,
        max_attempts=config.max_attempts,
    )


def answer(
    status: int, body: dict[str, Any], headers: dict[str, str] | None = None
) -> flask.Response:
    response = flask.jsonify(body)
    response.status_code = status
    for key, value in (headers or {}).items():
        response.headers[key] = value
    return response


def retry_later(error: ChimeraError) -> flask.Response:
    """Ask the queue to deliver again: 429 for rate limits, else 503; with Retry-After when
    the error knows how long to wait (a vendor's Retry-After, a circuit's cool-down)."""
    retry_after = getattr(error, "retry_after", None)
    headers = {"Retry-After": str(max(1, round(retry_after)))} if retry_after else {}
    status = 429 if isinstance(error, RateLimited) else 503
    return answer(status, {"status": "retry", "error": error.as_dict()}, headers)


def refuse(
    store: StateStore, attempt: Attempt, source: str, reason: str, raw: bytes
) -> flask.Response:
    """A payload that can never succeed: kept as a rejection, never retried forever.

    A queue would redeliver a 4xx until its attempts run out, so a queued task is
    acknowledged (200, with the refusal in the body) once recorded; a direct caller gets 400.
    """
    excerpt = raw[:500].decode("utf-8", "replace")
    store.record_rejection(Rejection(source=source, reason=reason, excerpt=excerpt))
    log.error("refused a %s payload: %s", source, reason)
    status = 200 if attempt.from_queue else 400
    return answer(
        status, {"status": "rejected", "error": {"code": "invalid_task", "message": reason}}
    )

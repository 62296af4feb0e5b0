"""One map from a vendor's HTTP answer, or the lack of one, to a `ChimeraError`.

Every vendor client handles first what is its own (Slack's ok=false codes, Jira's taken key,
a website's 404 meaning "no page") and hands the rest here:

| status            | error                                  | retried |
| ----------------- | -------------------------------------- | ------- |
| none (0)          | VendorUnavailable                      | yes     |
| 400, 413, 422     | InvalidInput                           | no      |
| 401, 403          | AuthFailed                             | no      |
| 404               | NotFound                               | no      |
| 408               | VendorUnavailable                      | yes     |
| 410               | PermanentError `<vendor>_gone`         | no      |
| 429               | RateLimited, with its Retry-After      | yes     |
| 500 and above     | VendorUnavailable                      | yes     |
| any other         | PermanentError `<vendor>_http_<status>`| no      |
"""

from __future__ import annotations

import json
import re
import urllib.error
from collections.abc import Mapping
from typing import Any

from shared.errors import (
    AuthFailed,
    ChimeraError,
    InvalidInput,
    NotFound,
    PermanentError,
    RateLimited,
    RetryableError,
    VendorTimeout,
    VendorUnavailable,
)
from shared.retry_after import retry_after

# A vendor's own words, clipped: enough to act on, never a whole error page in a log line.
MAX_DETAIL = 300
INVALID_INPUT_STATUSES = frozenset({400, 413, 422})
AUTH_STATUSES = frozenset({401, 403})
NO_DETAILS = "no details"


def error_for_status(
    vendor: str,
    action: str,
    status: int | None,
    body: Any = None,
    headers: Mapping[str, Any] | None = None,
    *,
    reason: str = "",
    retry_delay: float | None = None,
) -> ChimeraError:
    """The error for a vendor's non-success answer, by its HTTP status (table above).

    Args:
        vendor: who answered, as people name it ("Jira"); its lower case starts the codes.
        action: what was asked ("project.create"), or "" when the vendor says enough.
        status: the HTTP status; None or 0 when no answer came with one.
        body: the answer's body, raw (bytes, str) or parsed; any garbage is fine.
        headers: the answer's headers, for a 429's Retry-After.
        reason: words to use when the body has none (the status line's reason, an SDK's text).
        retry_delay: the vendor's own hint for a 429 when its headers carry no Retry-After.
    """
    where = _where(vendor, action)
    if not status or status < 0:
        return VendorUnavailable(f"{where} gave no response")
    message = answer_message(vendor, action, status, body, reason=reason)
    if status in AUTH_STATUSES:
        return AuthFailed(message)
    if status == 404:
        return NotFound(message)
    if status == 408 or status >= 500:
        return VendorUnavailable(message)
    if status == 429:
        wait = retry_after(headers)
        return RateLimited(message, retry_after=retry_delay if wait is None else wait)
    if status in INVALID_INPUT_STATUSES:
        return InvalidInput(message)
    if status == 410:
        # What a retired API answers (Clearbit's free platform, Jira Cloud's old search).
        return PermanentError(f"{message} (the API was retired)", code=f"{_slug(vendor)}_gone")
    return PermanentError(message, code=f"{_slug(vendor)}_http_{status}")


def transport_error(
    vendor: str,
    action: str,
    exc: BaseException,
    *,
    timeouts: tuple[type[BaseException], ...] = (),
) -> RetryableError:
    """The error for a request that got no HTTP answer: VendorTimeout when it timed out (the
    stdlib's TimeoutError, urllib's wrapped one, or one of the SDK's `timeouts`), else
    VendorUnavailable."""
    where = _where(vendor, action)
    cause = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    if isinstance(cause, (TimeoutError, *timeouts)):
        return VendorTimeout(f"{where} timed out ({type(cause).__name__})")
    return VendorUnavailable(f"{where} unreachable ({type(cause).__name__})")


def answer_message(
    vendor: str, action: str, status: int, body: Any = None, *, reason: str = ""
) -> str:
    """`<vendor> <action> answered <status>: <the vendor's words>`, on one line."""
    return f"{_where(vendor, action)} answered {status}: {vendor_detail(body, fallback=reason)}"


def vendor_detail(body: Any, *, fallback: str = "") -> str:
    """What a vendor's error body says, on one clipped line, from the shapes vendors use:
    {"error": "code"}, {"error": {"type" or "status", "message"}} (Clearbit, Google),
    {"errorMessages": [...], "errors": {field: message}} (Jira), {"errors": [{"field",
    "message"}]} (SendGrid), {"status", "message"}. Anything else, `fallback`, else "no details"."""
    parsed = _parsed(body)
    parts = _parts(parsed) if isinstance(parsed, dict) else []
    text = "; ".join(part for part in parts if part) or str(fallback or "")
    return " ".join(text.split())[:MAX_DETAIL] or NO_DETAILS


def _parsed(body: Any) -> Any:
    if isinstance(body, (bytes, bytearray)):
        body = bytes(body).decode("utf-8", "replace")
    if not isinstance(body, str):
        return body
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        return None


def _parts(body: dict[Any, Any]) -> list[str]:
    parts: list[str] = []
    error = body.get("error")
    if isinstance(error, str):
        parts.append(error)
    elif isinstance(error, dict):
        parts.append(_labelled(error))
    elif isinstance(body.get("message"), str):
        parts.append(_labelled(body))  # google-genai's stand-in for a body that was not JSON
    messages = body.get("errorMessages")
    if isinstance(messages, list):
        parts.extend(_text(m) for m in messages)
    errors = body.get("errors")
    if isinstance(errors, dict):
        parts.extend(f"{_text(k)}: {_text(v)}" for k, v in errors.items())
    elif isinstance(errors, list):
        for item in errors:
            if isinstance(item, dict):
                field, text = item.get("field"), _text(item.get("message"))
                parts.append(f"{_text(field)}: {text}" if field else text)
            else:
                parts.append(_text(item))
    return parts


def _labelled(error: dict[Any, Any]) -> str:
    label = error.get("type") or error.get("status") or ""
    return f"{_text(label)}: {_text(error.get('message'))}".strip(": ")


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _where(vendor: str, action: str) -> str:
    return f"{vendor} {action}" if action else vendor


def _slug(vendor: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", vendor.lower()).strip("_") or "vendor"

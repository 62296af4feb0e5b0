"""What a sandbox vendor sees of a request (Call) and what it answers (Reply)."""

from __future__ import annotations

import base64
import contextlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from werkzeug.datastructures import Headers
from werkzeug.wrappers import Request, Response

# Query or form parameters that carry credentials (Gemini's `key`, Slack's `token`, ...).
QUERY_SECRET_KEYS = frozenset({"key", "api_key", "apikey", "token", "access_token", "password"})
CREDENTIAL_HEADERS = ("x-goog-api-key", "x-api-key")

# A proxy's error page served with 200: what a `garbage` fault answers.
GARBAGE_BODY = (
    "<!DOCTYPE html><html><head><title>Gateway</title></head>"
    "<body><h1>Upstream sent an invalid response</h1></body></html>"
)


@dataclass(frozen=True)
class Call:
    """One request, parsed once: query, form, JSON body and headers."""

    method: str
    path: str
    # This vendor's base URL as the client sees it, e.g. http://127.0.0.1:8086/jira.
    base_url: str
    args: dict[str, str]
    query: dict[str, str]
    # Every value of a repeated query parameter (e.g. Jira's `fields=a&fields=b`).
    query_lists: dict[str, list[str]]
    form: dict[str, str]
    headers: Headers
    body: Any = None
    # True when a body was sent that is not the JSON it claims to be.
    body_malformed: bool = False
    # A `drop` fault: answer as if the work was done, but keep nothing.
    drop: bool = False

    @classmethod
    def from_request(cls, request: Request, *, vendor: str, args: dict[str, str]) -> Call:
        raw = request.get_data(cache=True)
        body, malformed = None, False
        form: dict[str, str] = {}
        if request.mimetype == "application/x-www-form-urlencoded":
            form = {key: request.form[key] for key in request.form}
        elif raw:
            try:
                body = json.loads(raw)
            except ValueError:
                malformed = True
        return cls(
            method=request.method,
            path=request.path,
            base_url=request.host_url.rstrip("/") + "/" + vendor,
            args=args,
            query={key: request.args[key] for key in request.args},
            query_lists={key: request.args.getlist(key) for key in request.args},
            form=form,
            headers=request.headers,
            body=body,
            body_malformed=malformed,
        )

    def header(self, name: str) -> str:
        return (self.headers.get(name) or "").strip()

    def bearer_token(self) -> str:
        scheme, _, token = self.header("Authorization").partition(" ")
        return token.strip() if scheme.lower() == "bearer" else ""

    def params(self) -> dict[str, Any]:
        """Query, form and JSON object merged: Slack accepts its arguments in any of them."""
        merged: dict[str, Any] = {**self.query, **self.form}
        if isinstance(self.body, dict):
            merged.update(self.body)
        return merged

    def recorded_request(self, body_secret_keys: Iterable[str]) -> Any:
        """The body (or the query when there is none) without credentials, for the call log.

        Known credential fields are dropped, and any string that contains a credential the
        caller presented (header or query) is blanked, wherever it was put.
        """
        if self.body is not None:
            received = scrub(self.body, frozenset(k.lower() for k in body_secret_keys))
        elif self.form:
            received = scrub(self.form, frozenset(k.lower() for k in body_secret_keys))
        else:
            query = {k: v[0] if len(v) == 1 else v for k, v in self.query_lists.items()}
            received = scrub(query, QUERY_SECRET_KEYS)
        return redact(received, self.presented_credentials())

    def presented_credentials(self) -> list[str]:
        values = [self.header(name) for name in CREDENTIAL_HEADERS]
        scheme, _, credentials = self.header("Authorization").partition(" ")
        values.append(credentials)
        if scheme.lower() == "basic":
            with contextlib.suppress(ValueError):
                values.append(base64.b64decode(credentials).decode().partition(":")[2])
        values += [self.query.get(key, "") for key in QUERY_SECRET_KEYS]
        values += [self.form.get(key, "") for key in QUERY_SECRET_KEYS]
        return [value.strip() for value in values if len(value.strip()) >= 6]


def scrub(value: Any, secret_keys: frozenset[str]) -> Any:
    if isinstance(value, dict):
        return {k: scrub(v, secret_keys) for k, v in value.items() if k.lower() not in secret_keys}
    if isinstance(value, list):
        return [scrub(item, secret_keys) for item in value]
    return value


def redact(value: Any, secrets: list[str]) -> Any:
    if not secrets:
        return value
    if isinstance(value, dict):
        return {k: redact(v, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(item, secrets) for item in value]
    if isinstance(value, str) and any(secret in value for secret in secrets):
        return "[redacted]"
    return value


@dataclass
class Reply:
    """A vendor's answer: status, a JSON-able body (or raw text), headers."""

    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json; charset=utf-8"
    # The vendor answered success for work it did not keep (a `drop` fault it honoured).
    dropped: bool = False

    def to_response(self) -> Response:
        data: str | bytes
        if self.body is None:
            data = b""
        elif isinstance(self.body, str | bytes):
            data = self.body
        else:
            data = json.dumps(self.body)
        response = Response(data, status=self.status, content_type=self.content_type)
        for name, value in self.headers.items():
            response.headers[name] = value
        return response


def json_reply(status: int, body: Any, headers: dict[str, str] | None = None) -> Reply:
    return Reply(status=status, body=body, headers=dict(headers or {}))


def garbage_reply() -> Reply:
    return Reply(status=200, body=GARBAGE_BODY, content_type="text/html; charset=utf-8")


@dataclass(frozen=True)
class Route:
    """One vendor endpoint: a werkzeug rule under the vendor's prefix and its handler."""

    rule: str
    methods: tuple[str, ...]
    action: str
    handle: Callable[[Call], Reply]

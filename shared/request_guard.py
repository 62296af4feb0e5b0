"""What every Chimera server refuses before reading a request: a foreign Host (DNS
rebinding), a body that is not JSON (a browser's cross-site form or text/plain POST), and a
body over the size cap. In the targets (`body_refused`) and, locally, around the whole server
(`LocalServerGuard`)."""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import flask
from werkzeug.exceptions import RequestEntityTooLarge

JSON_TYPES = frozenset({"application/json"})
# A Pub/Sub push through Eventarc arrives as a CloudEvent: binary (JSON) or structured mode.
CLOUD_EVENT_TYPES = frozenset({"application/json", "application/cloudevents+json"})
# The console's own forms: let through to its POST routes only, which check a CSRF token bound
# to the session and the exact Origin before changing anything (chimera/console/auth.py).
FORM_TYPES = frozenset({"application/x-www-form-urlencoded"})
BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})

StartResponse = Callable[..., Any]


def media_type(content_type: str | None) -> str:
    """`application/json` of `application/json; charset=utf-8`, lower-cased."""
    return (content_type or "").partition(";")[0].strip().lower()


def _error(status: int, code: str, message: str) -> tuple[int, dict[str, Any]]:
    return status, {"error": {"code": code, "message": message}}


def _type_refusal(
    method: str, content_type: str | None, allowed: Iterable[str]
) -> tuple[int, dict[str, Any]] | None:
    # Every request that may carry a body must say it is JSON, even an empty one: a
    # cross-site fetch without a body sends no Content-Type at all.
    if method.upper() in BODY_METHODS and media_type(content_type) not in allowed:
        return _error(
            415,
            "unsupported_media_type",
            f"the body must be {' or '.join(sorted(allowed))}",
        )
    return None


def _too_large(limit: int) -> tuple[int, dict[str, Any]]:
    return _error(413, "too_large", f"the body is over {limit} bytes")


def body_refused(
    request: flask.Request, limit: int, allowed: Iterable[str] = JSON_TYPES
) -> flask.Response | None:
    """The answer refusing `request`'s body (415 not JSON, 413 over `limit` bytes), or None.

    Reads the body (at most `limit` bytes, chunked or not) only when its type and declared
    length pass; afterwards `request.get_data()` returns it from the cache.
    """
    from shared.tasks_http import answer

    refusal = _type_refusal(request.method, request.content_type, allowed)
    if refusal is None and request.content_length is not None and request.content_length > limit:
        refusal = _too_large(limit)
    if refusal is None:
        request.max_content_length = limit  # enforced on a streamed (chunked) body too
        try:
            request.get_data(cache=True)
        except RequestEntityTooLarge:
            refusal = _too_large(limit)
    if refusal is None:
        return None
    status, body = refusal
    return answer(status, body)


def bound_hosts(port: int) -> frozenset[str]:
    """The Host values a server bound to 127.0.0.1:`port` answers to."""
    names = ("127.0.0.1", "localhost", "[::1]")
    hosts = {f"{name}:{port}" for name in names}
    if port == 80:
        hosts |= set(names)
    return frozenset(hosts)


class LocalServerGuard:
    """WSGI middleware for a server bound to the loopback: refuses, before the app sees it, a
    request whose Host is not one of `hosts` (421), whose body is not of its path's types (415),
    or over `limit` bytes (413, a chunked body read at most `limit` + 1 bytes)."""

    def __init__(
        self,
        app: Callable[[dict[str, Any], StartResponse], Iterable[bytes]],
        hosts: Callable[[], Iterable[str]] | Iterable[str],
        limit: int,
        types_by_prefix: Mapping[str, Iterable[str]] | None = None,
    ) -> None:
        self.app = app
        self._hosts = hosts
        self.limit = limit
        self.types_by_prefix = {p: frozenset(t) for p, t in (types_by_prefix or {}).items()}

    def hosts(self) -> frozenset[str]:
        hosts = self._hosts() if callable(self._hosts) else self._hosts
        return frozenset(h.lower() for h in hosts)

    def types_for(self, path: str) -> frozenset[str]:
        for prefix, types in self.types_by_prefix.items():
            if path == prefix or path.startswith(prefix.rstrip("/") + "/"):
                return types
        return JSON_TYPES

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        refusal = self._refusal(environ)
        if refusal is None:
            return self.app(environ, start_response)
        status, body = refusal
        payload = json.dumps(body).encode()
        reason = {400: "Bad Request", 413: "Content Too Large", 415: "Unsupported Media Type"}
        start_response(
            f"{status} {reason.get(status, 'Misdirected Request')}",
            [
                ("Content-Type", "application/json"),
                ("Content-Length", str(len(payload))),
                ("Connection", "close"),
            ],
        )
        return [payload]

    def _refusal(self, environ: dict[str, Any]) -> tuple[int, dict[str, Any]] | None:
        host = str(environ.get("HTTP_HOST", "")).strip().lower()
        if not host:
            return _error(400, "bad_host", "the request names no Host")
        if host not in self.hosts():
            return _error(421, "bad_host", f"this server does not answer to {host[:100]!r}")
        refusal = _type_refusal(
            str(environ.get("REQUEST_METHOD", "GET")),
            environ.get("CONTENT_TYPE"),
            self.types_for(str(environ.get("SCRIPT_NAME", "")) + str(environ.get("PATH_INFO", ""))),
        )
        if refusal is not None:
            return refusal
        declared = str(environ.get("CONTENT_LENGTH", "")).strip()
        if declared:
            if not declared.isdigit():
                return _error(400, "bad_length", "the Content-Length is not a number")
            if int(declared) > self.limit:
                return _too_large(self.limit)
        elif environ.get("wsgi.input_terminated"):
            # Chunked: read it here, at most one byte past the cap, and hand on what was read.
            data = environ["wsgi.input"].read(self.limit + 1)
            if len(data) > self.limit:
                return _too_large(self.limit)
            environ["wsgi.input"] = io.BytesIO(data)
            environ["CONTENT_LENGTH"] = str(len(data))
            environ.pop("wsgi.input_terminated", None)
        return None

"""Each HTTP request a guarded call makes to its vendor, counted on its own.

A tool's call may make several requests (Jira: look up, create, add issues) and fails if any
one does, so a vendor failing 40% of its requests fails most such calls: the circuit breaker
must see the vendor's rate, not the call's. The clients mark their one-request helpers with
`@counted_request`; the breaker's guard says, through a context variable, where to count.
Each request is also traced where the HTTP call is made (`http_request`, one CLIENT span).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar
from urllib.parse import urlsplit

from opentelemetry.semconv.attributes.error_attributes import ERROR_TYPE
from opentelemetry.semconv.attributes.http_attributes import (
    HTTP_REQUEST_METHOD,
    HTTP_RESPONSE_STATUS_CODE,
)
from opentelemetry.semconv.attributes.server_attributes import SERVER_ADDRESS, SERVER_PORT
from opentelemetry.trace import NonRecordingSpan, Span, SpanKind, Status, StatusCode

from shared import metrics, telemetry
from shared.errors import (
    BadVendorReply,
    ChimeraError,
    CircuitOpen,
    Conflict,
    VendorTimeout,
    VendorUnavailable,
)

T = TypeVar("T")

# The vendor gave no usable answer. A reply we cannot read (BadVendorReply) counts: it is
# usually a proxy's error page or a cut-off body, i.e. the vendor is not really answering, and
# calling again at full rate helps no more than after a 503.
FAILURES = (VendorUnavailable, VendorTimeout, BadVendorReply)
# Not the vendor's answer at all: our own shedding (a nested breaker), store contention. Such a
# call counts neither way. Every other ChimeraError is an answer (a 429, a 4xx, "still
# looking it up"): the vendor is alive, so it counts as a success.
NOT_THE_VENDOR = (CircuitOpen, Conflict)


@dataclass
class Tally:
    """The vendor requests one guarded call made, and how many of them failed."""

    requests: int = 0
    failures: int = 0


class RequestCounter(Protocol):
    """What counts a guarded call's requests: the vendor's circuit breaker."""

    def count_request(self, admission: Any, tally: Tally, *, failed: bool) -> None: ...


# The guarded call this thread (or task) is in, for vendor_request() to count into.
_guarded: ContextVar[tuple[RequestCounter, Any, Tally] | None] = ContextVar(
    "breaker_guarded", default=None
)


@contextmanager
def counting_into(counter: RequestCounter, admission: Any) -> Iterator[Tally]:
    """While inside, vendor_request() counts into `counter` for `admission`."""
    tally = Tally()
    token = _guarded.set((counter, admission, tally))
    try:
        yield tally
    finally:
        _guarded.reset(token)


@contextmanager
def vendor_request() -> Iterator[None]:
    """One HTTP request to the vendor, inside a guarded call: counted on its own.

    A tool's call may make several requests (Jira: look up, create, add issues) and fails if
    any one does, so a vendor failing 40% of its requests fails most such calls. The breaker
    must see the vendor's rate, not the call's: each client wraps every request in this.
    Outside a guarded call it counts nothing.
    """
    try:
        yield
    except FAILURES:
        _count_request(failed=True)
        raise
    except NOT_THE_VENDOR:
        raise
    except ChimeraError:
        _count_request(failed=False)  # an answer: the vendor is alive
        raise
    _count_request(failed=False)


def counted_request(method: Callable[..., T]) -> Callable[..., T]:
    """A client's one-request helper, each call of it counted by vendor_request()."""

    @functools.wraps(method)
    def counted(*args: object, **kwargs: object) -> T:
        with vendor_request():
            return method(*args, **kwargs)

    return counted


def _count_request(*, failed: bool) -> None:
    guarded = _guarded.get()
    if guarded is not None:
        breaker, admission, tally = guarded
        breaker.count_request(admission, tally, failed=failed)


DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass
class HttpExchange:
    """One traced request: its span, and the status it was answered with (None: no answer)."""

    span: Span = field(default_factory=lambda: NonRecordingSpan(telemetry.INVALID_CONTEXT))
    status: int | None = None

    def answered(self, status: int) -> None:
        self.status = status
        self.span.set_attribute(HTTP_RESPONSE_STATUS_CODE, status)
        if status >= 400:
            self.span.set_attribute(ERROR_TYPE, str(status))
            self.span.set_status(Status(StatusCode.ERROR))


def http_attributes(vendor: str, method: str, url: str) -> dict[str, Any]:
    """What a request's span says of it: the vendor, the method, the host and port. Never the
    path, the query or a header: keys and tokens live there (a Slack webhook's path is one)."""
    parts = urlsplit(url)
    try:
        port = parts.port or DEFAULT_PORTS.get(parts.scheme.lower())
    except ValueError:
        port = None
    attributes: dict[str, Any] = {
        "chimera.vendor": vendor,
        HTTP_REQUEST_METHOD: method.upper() or "GET",
        SERVER_ADDRESS: parts.hostname or "",
    }
    if port is not None:
        attributes[SERVER_PORT] = port
    return attributes


@contextmanager
def http_request(vendor: str, method: str, url: str) -> Iterator[HttpExchange]:
    """One HTTP request to `vendor`: a CLIENT span, and its duration by status.

    The client says `exchange.answered(status)` when an answer came; an exception that
    escapes (no answer) marks the span failed.
    """
    attributes = http_attributes(vendor, method, url)
    started = time.perf_counter()
    exchange = HttpExchange()
    try:
        with telemetry.span(
            attributes[HTTP_REQUEST_METHOD], kind=SpanKind.CLIENT, attributes=attributes
        ) as current:
            exchange.span = current
            yield exchange
    finally:
        metrics.vendor_request(vendor, exchange.status, time.perf_counter() - started)

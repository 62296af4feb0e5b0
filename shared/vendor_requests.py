"""Each HTTP request a guarded call makes to its vendor, counted on its own.

A tool's call may make several requests (Jira: look up, create, add issues) and fails if any
one does, so a vendor failing 40% of its requests fails most such calls: the circuit breaker
must see the vendor's rate, not the call's. The clients mark their one-request helpers with
`@counted_request`; the breaker's guard says, through a context variable, where to count.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

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

"""Errors as values: a stable code and whether the queue should try again."""

from __future__ import annotations


class ChimeraError(Exception):
    """Base of every error Chimera expects; anything else escaping is a bug."""

    code = "error"
    retryable = False

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code:
            self.code = code

    def as_dict(self) -> dict[str, object]:
        return {"code": self.code, "message": self.message, "retryable": self.retryable}


class RetryableError(ChimeraError):
    """The queue should try again later: rate limited, unavailable, timeout, conflict."""

    code = "unavailable"
    retryable = True

    def __init__(
        self, message: str, *, code: str | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message, code=code)
        self.retry_after = retry_after


class PermanentError(ChimeraError):
    """Trying again cannot help: invalid input, auth failed, not found, bad model output."""

    code = "permanent"


class RateLimited(RetryableError):
    code = "rate_limited"


class VendorTimeout(RetryableError):
    code = "timeout"


class VendorUnavailable(RetryableError):
    code = "unavailable"


class BadVendorReply(RetryableError):
    """The vendor answered something we cannot parse; often a transient proxy page."""

    code = "bad_reply"


class CircuitOpen(RetryableError):
    code = "circuit_open"


class Conflict(RetryableError):
    """Someone else changed the run first; reload and decide again."""

    code = "conflict"


class StoreBusy(RetryableError):
    """The state store could not take its write lock in time (other writers held it): the
    request or task is answered 503, to be sent again, instead of failing with a trace."""

    code = "store_busy"


class InvalidInput(PermanentError):
    code = "invalid_input"


class AuthFailed(PermanentError):
    code = "auth_failed"


class NotFound(PermanentError):
    code = "not_found"


class OutcomeUnknown(PermanentError):
    """A side effect may have happened and the vendor offers no way to check."""

    code = "outcome_unknown"

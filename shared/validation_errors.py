"""A pydantic ValidationError in words a person can act on: per field, or on one line."""

from __future__ import annotations

from pydantic import ValidationError

# What pydantic puts before the message of a ValueError a validator raised.
_VALUE_ERROR_PREFIX = "Value error, "


def field_errors(exc: ValidationError, *, whole: str = "body") -> dict[str, str]:
    """Each refused field (dotted path; `whole` for the value itself) and why."""
    return {where: why for where, why in _errors(exc, whole)}


def one_line(exc: ValidationError, *, whole: str = "body", most: int = 5) -> str:
    """`where: why` for the first `most` errors, joined by "; "."""
    return "; ".join(f"{where}: {why}" for where, why in _errors(exc, whole)[:most])


def _errors(exc: ValidationError, whole: str) -> list[tuple[str, str]]:
    return [
        (".".join(str(part) for part in err["loc"]) or whole, _why(err["msg"]))
        for err in exc.errors()
    ]


def _why(message: str) -> str:
    return message.removeprefix(_VALUE_ERROR_PREFIX)

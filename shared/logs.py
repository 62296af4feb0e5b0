"""Logging: run, step and tool carried in a context variable; JSON lines for Cloud Logging."""

from __future__ import annotations

import contextvars
import json
import logging
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime

_context: contextvars.ContextVar[tuple[tuple[str, str], ...]] = contextvars.ContextVar(
    "chimera_log_context", default=()
)


@contextmanager
def log_context(**fields: str | None) -> Iterator[None]:
    merged = {**dict(_context.get()), **{k: v for k, v in fields.items() if v}}
    token = _context.set(tuple(merged.items()))
    try:
        yield
    finally:
        _context.reset(token)


class _ContextFilter(logging.Filter):
    def __init__(self, secrets: Sequence[str] = ()) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if len(s) >= 6]

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in _context.get():
            setattr(record, key, value)
        if self.secrets:
            message = record.getMessage()
            if any(s in message for s in self.secrets):
                for secret in self.secrets:
                    message = message.replace(secret, "[redacted]")
                record.msg, record.args = message, None
        return True


class CloudLoggingFormatter(logging.Formatter):
    """One JSON object per line, in the shape Cloud Logging reads from stdout."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "severity": record.levelname,
            "message": record.getMessage(),
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "logger": record.name,
        }
        for key in ("run_id", "step_id", "tool", "latency_ms", "attempt", "outcome"):
            value = getattr(record, key, None)
            if value is not None:
                entry[key] = value
        if record.exc_info:
            entry["stack_trace"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        tags = " ".join(
            f"{key}={getattr(record, key)}"
            for key in ("run_id", "step_id", "tool")
            if getattr(record, key, None)
        )
        return f"{line} [{tags}]" if tags else line


def configure_logging(
    fmt: str = "text", level: int = logging.INFO, secrets: Sequence[str] = ()
) -> None:
    handler = logging.StreamHandler(sys.stderr if fmt == "text" else sys.stdout)
    handler.addFilter(_ContextFilter(secrets))
    handler.setFormatter(
        CloudLoggingFormatter()
        if fmt == "json"
        else TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)

"""Logging: run, step, tool and attempt carried in a context variable; JSON lines in Cloud
Logging's shape, or readable text; every line redacted after it is formatted."""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import traceback
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TextIO

from shared.redaction import Redactor

try:  # the traces come from the telemetry's spans; without OpenTelemetry, lines carry none
    from opentelemetry import trace as otel_trace
except ImportError:  # pragma: no cover - opentelemetry-api ships with every function
    otel_trace = None  # type: ignore[assignment]

LogValue = str | int
_context: contextvars.ContextVar[tuple[tuple[str, LogValue], ...]] = contextvars.ContextVar(
    "chimera_log_context", default=()
)
# The tags a line carries from the log context, in the order the text format shows them.
CONTEXT_FIELDS = ("run_id", "step_id", "tool", "attempt")
TRACE = "logging.googleapis.com/trace"
SPAN_ID = "logging.googleapis.com/spanId"
TRACE_SAMPLED = "logging.googleapis.com/trace_sampled"
SOURCE_LOCATION = "logging.googleapis.com/sourceLocation"
# The text format's tags: (label, record field).
_TEXT_TAGS = (
    ("run", "run_id"),
    ("step", "step_id"),
    ("tool", "tool"),
    ("attempt", "attempt"),
    ("latency_ms", "latency_ms"),
    ("outcome", "outcome"),
)
# What every LogRecord has: anything else on a record is an extra, and goes into the JSON.
_RECORD_FIELDS = frozenset(
    logging.LogRecord("", 0, "", 0, "", (), None).__dict__.keys() | {"message", "asctime"}
)
# Cloud Logging's LogSeverity for Python's levels (a custom level takes the one below it).
_SEVERITIES = ((50, "CRITICAL"), (40, "ERROR"), (30, "WARNING"), (20, "INFO"), (10, "DEBUG"))


@contextmanager
def log_context(**fields: LogValue | None) -> Iterator[None]:
    """Tag every line logged inside with `fields` (None and "" leave a tag as it was)."""
    given = {k: v for k, v in fields.items() if v is not None and v != ""}
    token = _context.set(tuple({**dict(_context.get()), **given}.items()))
    try:
        yield
    finally:
        _context.reset(token)


class _ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in _context.get():
            setattr(record, key, value)
        return True


def severity(levelno: int) -> str:
    return next((name for floor, name in _SEVERITIES if levelno >= floor), "DEFAULT")


def trace_fields(project: str) -> dict[str, object]:
    """Cloud Logging's trace fields for the current span; none without a valid one. The trace
    is `projects/<project>/traces/<id>` (what links a line to Cloud Trace), the bare id when
    no project is known (local runs)."""
    if otel_trace is None:
        return {}
    context = otel_trace.get_current_span().get_span_context()
    if not context.is_valid:
        return {}
    trace_id = otel_trace.format_trace_id(context.trace_id)
    return {
        TRACE: f"projects/{project}/traces/{trace_id}" if project else trace_id,
        SPAN_ID: otel_trace.format_span_id(context.span_id),
        TRACE_SAMPLED: context.trace_flags.sampled,
    }


class CloudLoggingFormatter(logging.Formatter):
    """One JSON object per line, in the shape Cloud Logging reads from stdout: its special
    fields (severity, message, time, trace, span, source location) and every extra at the
    top level of jsonPayload."""

    def __init__(self, project: str = "") -> None:
        super().__init__()
        self.project = project

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "severity": severity(record.levelno),
            "message": record.getMessage(),
            "time": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="microseconds")
            .replace("+00:00", "Z"),
            "logger": record.name,
            **trace_fields(self.project),
            SOURCE_LOCATION: {
                "file": record.pathname,
                "line": record.lineno,
                "function": record.funcName,
            },
        }
        for key, value in record.__dict__.items():
            if key not in _RECORD_FIELDS and key not in entry and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            # Error Reporting groups the errors it finds in this field.
            entry["stack_trace"] = self.formatException(record.exc_info)
        elif record.stack_info:
            entry["stack_trace"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    """For a person at a terminal: time, level, message, then the run's tags and the logger."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line, _, rest = super().format(record).partition("\n")
        shown = ((label, getattr(record, key, None)) for label, key in _TEXT_TAGS)
        tags = "".join(f"{label}={value} " for label, value in shown if value not in (None, ""))
        text = f"{line}  {tags}({record.name})"
        return f"{text}\n{rest}" if rest else text


class RedactingFormatter(logging.Formatter):
    """Formats with `inner`, then redacts the finished line: a secret in a message, an
    argument, an extra, a traceback or a JSON escape of any of them is caught in one place."""

    def __init__(self, inner: logging.Formatter, redact: Redactor) -> None:
        super().__init__()
        self.inner = inner
        self.redact = redact

    def format(self, record: logging.LogRecord) -> str:
        return self.redact(self.inner.format(record))


class RedactingStreamHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A stream handler whose only way out is redacted, its error report included (the
    standard one prints the record's message and arguments as they are)."""

    def __init__(self, stream: TextIO, formatter: logging.Formatter, redact: Redactor) -> None:
        super().__init__(stream)
        self.redact = redact
        self.setFormatter(RedactingFormatter(formatter, redact))
        self.addFilter(_ContextFilter())

    def setFormatter(self, fmt: logging.Formatter | None) -> None:  # noqa: N802 - logging's
        # Whatever formatter is set later still goes through the redactor.
        if fmt is not None and not isinstance(fmt, RedactingFormatter):
            fmt = RedactingFormatter(fmt, self.redact)
        super().setFormatter(fmt)

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 - logging's
        if not logging.raiseExceptions:
            return
        problem = "".join(traceback.format_exception_only(*sys.exc_info()[:2])).strip()
        # A line of its own in the handler's format, never the record's raw message or args.
        report = logging.LogRecord(
            record.name,
            logging.ERROR,
            record.pathname,
            record.lineno,
            "a log line could not be written: %s",
            (problem,),
            None,
            record.funcName,
        )
        try:
            self.filter(report)
            self.stream.write(self.format(report) + self.terminator)
            self.flush()
        except Exception:  # noqa: BLE001 - nowhere left to report to
            pass


def configure_logging(
    fmt: str = "text",
    level: int = logging.INFO,
    secrets: Sequence[str] = (),
    *,
    project: str = "",
    stream: TextIO | None = None,
) -> logging.Handler:
    """Make the root logger write one redacted line per record: JSON (Cloud Logging's shape,
    to stdout, with `project` naming the traces) or text (to stderr). Returns the handler."""
    redact = Redactor(secrets)
    formatter = CloudLoggingFormatter(project) if fmt == "json" else TextFormatter()
    out = stream if stream is not None else (sys.stdout if fmt == "json" else sys.stderr)
    handler = RedactingStreamHandler(out, formatter, redact)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    return handler

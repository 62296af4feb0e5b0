"""OpenTelemetry for every function: the providers settings choose, and the trace context that
rides on the run and on each task (docs/decisions/0012t-one-trace-per-onboarding.md)."""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import metrics, trace
from opentelemetry.context import Context
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import SERVICE_INSTANCE_ID, SERVICE_NAME, Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.trace import INVALID_SPAN_CONTEXT, Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from shared.logs import log_context
from shared.model import TRACEPARENT_RE, Attempt, Task
from shared.settings import Settings

log = logging.getLogger(__name__)

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
# The W3C header itself, not the global propagator: OTEL_PROPAGATORS must not change what a
# task carries, or the run document stores.
W3C = TraceContextTextMapPropagator()
# Metrics leave the process at this pace, never per request (Cloud Monitoring takes one point
# per series every 5 s at most).
METRIC_EXPORT_INTERVAL_MS = 60_000
LOCAL_SERVICE = "chimera"
INVALID_CONTEXT = INVALID_SPAN_CONTEXT


@dataclass(frozen=True)
class Telemetry:
    """What this process traces and measures with; `flushes`: spans wait in a batch that must
    leave before the request's answer (a serverless CPU is throttled after it)."""

    tracer_provider: trace.TracerProvider
    meter_provider: metrics.MeterProvider
    flushes: bool = False
    # What the providers export through (None for `none`): what a test checks.
    span_processor: SpanProcessor | None = None
    span_exporter: SpanExporter | None = None
    metric_reader: MetricReader | None = None
    # False when the tracer samples nothing: a span inside a trace is then not made at all.
    records: bool = True

    def flush(self) -> None:
        if self.flushes and isinstance(self.tracer_provider, TracerProvider):
            self.tracer_provider.force_flush(timeout_millis=5_000)


_lock = threading.Lock()
_services: set[str] = set()
_current: Telemetry | None = None
_configured = False


def serve_as(name: str) -> None:
    """Say which function this process serves (orchestrator, tool-jira): its service.name.
    Called where a deployed target is defined; a process serving several is the local stack."""
    _services.add(name)


def service_name() -> str:
    return next(iter(_services)) if len(_services) == 1 else LOCAL_SERVICE


def build_telemetry(
    settings: Settings, service: str, *, gcp_clients: tuple[Any, Any] | None = None
) -> Telemetry:
    """The providers `settings.telemetry_exporter` names. `none`: a tracer that samples
    nothing (ids and traceparents exist, nothing is recorded) and no metrics; `console`: the
    SDK's exporters, to stderr; `otlp`: OTLP over HTTP, configured by OTEL_EXPORTER_OTLP_*;
    `gcp`: Cloud Trace and Cloud Monitoring (`gcp_clients`, the trace and metric clients to
    use instead of the default credentials', are for tests)."""
    # An instance id beside the name: Cloud Monitoring files such series under the generic_task
    # resource, which terraform/monitoring.tf's dashboards and alerts read.
    resource = Resource.create({SERVICE_NAME: service, SERVICE_INSTANCE_ID: uuid.uuid4().hex})
    exporter = settings.telemetry_exporter
    if exporter == "none":
        return Telemetry(
            TracerProvider(resource=resource, sampler=ALWAYS_OFF),
            metrics.NoOpMeterProvider(),
            records=False,
        )
    spans, reader = _exporters(exporter, settings, gcp_clients)
    processor = BatchSpanProcessor(spans)
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(processor)
    return Telemetry(
        tracer_provider,
        MeterProvider(resource=resource, metric_readers=[reader]),
        flushes=True,
        span_processor=processor,
        span_exporter=spans,
        metric_reader=reader,
    )


def _exporters(
    exporter: str, settings: Settings, gcp_clients: tuple[Any, Any] | None
) -> tuple[SpanExporter, MetricReader]:
    # Each exporter's package is imported only where it is chosen.
    if exporter == "console":
        import sys

        from opentelemetry.sdk.metrics.export import ConsoleMetricExporter
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        # stderr: the CLI's stdout is for people (and pipes).
        spans: SpanExporter = ConsoleSpanExporter(out=sys.stderr)
        measures: Any = ConsoleMetricExporter(out=sys.stderr)
    elif exporter == "otlp":
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        spans, measures = OTLPSpanExporter(), OTLPMetricExporter()
    else:
        from opentelemetry.exporter.cloud_monitoring import CloudMonitoringMetricsExporter
        from opentelemetry.exporter.cloud_trace import CloudTraceSpanExporter

        trace_client, metric_client = gcp_clients or (None, None)
        project = settings.gcp_project or None
        spans = CloudTraceSpanExporter(project_id=project, client=trace_client)
        # Every instance writes its own series: two instances on one would collide.
        measures = CloudMonitoringMetricsExporter(
            project_id=project, client=metric_client, add_unique_identifier=True
        )
    reader = PeriodicExportingMetricReader(
        measures, export_interval_millis=METRIC_EXPORT_INTERVAL_MS
    )
    return spans, reader


def configure_telemetry(settings: Settings) -> Telemetry:
    """Install the providers of `settings` as this process's (and OpenTelemetry's globals),
    once: later calls, and a process whose telemetry a test installed, keep what is there."""
    global _current, _configured
    with _lock:
        if _current is None:
            _current = build_telemetry(settings, service_name())
        if not _configured:
            _configured = True
            trace.set_tracer_provider(_current.tracer_provider)
            metrics.set_meter_provider(_current.meter_provider)
        return _current


def use(telemetry: Telemetry | None) -> Telemetry | None:
    """Trace and measure with `telemetry` from now on (tests, with in-memory exporters);
    None goes back to what configure_telemetry installs. Returns what was in use."""
    global _current
    with _lock:
        previous, _current = _current, telemetry
        return previous


def current() -> Telemetry:
    """The telemetry in use: until one is configured, a tracer that records nothing."""
    global _current
    found = _current
    if found is None:
        with _lock:
            found = _current = _current or Telemetry(
                TracerProvider(sampler=ALWAYS_OFF), metrics.NoOpMeterProvider(), records=False
            )
    return found


def tracer() -> trace.Tracer:
    """The tracer of the telemetry in use, made once per telemetry (asked for on every span)."""
    global _tracer
    found = current()
    made = _tracer
    if made is None or made[0] is not found:
        made = _tracer = (found, found.tracer_provider.get_tracer("chimera"))
    return made[1]


_tracer: tuple[Telemetry, trace.Tracer] | None = None


def flush() -> None:
    """Send this request's spans before it answers (a no-op unless an exporter batches)."""
    try:
        current().flush()
    except Exception:  # telemetry never fails a request
        log.warning("could not flush spans", exc_info=True)


def headers_now() -> dict[str, str]:
    """The current context as W3C headers (traceparent, and tracestate when there is one)."""
    carrier: dict[str, str] = {}
    W3C.inject(carrier)
    return carrier


def traceparent_of(span: Span) -> str:
    """`span`'s context as a traceparent ("" for an invalid one)."""
    context = span.get_span_context()
    if not context.is_valid:
        return ""
    flags = int(context.trace_flags)
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{flags:02x}"


def dispatched(task: Task) -> Task:
    """`task` carrying its dispatch's context: a PRODUCER span, child of the current one, so
    that the task's delivery is that span's child, on the local queue and on Cloud Tasks."""
    with span(
        f"send {task.queue}",
        kind=SpanKind.PRODUCER,
        attributes={
            "chimera.queue": task.queue,
            "chimera.task": task.name,
            "chimera.run_id": str(task.payload.get("run_id", "")),
            "messaging.destination.name": task.queue,
        },
    ):
        return task.model_copy(update={"headers": headers_now()})


def context_of(
    headers: Mapping[str, str] | Any, fallback: Callable[[], str] = lambda: ""
) -> Context:
    """The parent context a delivery's headers name; without a valid traceparent, the one
    `fallback` gives (the run's stored traceparent), else a new trace's."""
    carrier = {k.lower(): v for k, v in headers.items() if k.lower() in (TRACEPARENT, TRACESTATE)}
    if not TRACEPARENT_RE.match(carrier.get(TRACEPARENT, "")):
        stored = fallback()
        carrier = {TRACEPARENT: stored} if TRACEPARENT_RE.match(stored or "") else {}
    return W3C.extract(carrier)


@contextmanager
def span(
    name: str,
    *,
    kind: SpanKind = SpanKind.INTERNAL,
    parent: Context | None = None,
    attributes: Mapping[str, Any] | None = None,
) -> Iterator[Span]:
    """A span around the block, current inside it. An exception that escapes marks it an
    error, with the exception's type; a ChimeraError's code says what failed.

    When nothing is recorded (exporter `none`), a block inside a trace gets no span of its
    own: it runs in its parent's context, which carries the trace id on to its tasks and log
    lines at no cost (a dozen hops make some seventy spans per onboarding). Only a new
    trace's first span is made, for its id.
    """
    if not current().records:
        context = parent if parent is not None else otel_context.get_current()
        inherited = trace.get_current_span(context)
        if inherited.get_span_context().is_valid:
            token = otel_context.attach(context) if parent is not None else None
            try:
                yield inherited
            finally:
                if token is not None:
                    otel_context.detach(token)
            return
    with tracer().start_as_current_span(
        name,
        context=parent,
        kind=kind,
        attributes=present(attributes),
        record_exception=False,
        set_status_on_exception=False,
    ) as current_span:
        try:
            yield current_span
        except BaseException as exc:
            failed(current_span, exc)
            raise


def present(attributes: Mapping[str, Any] | None) -> dict[str, Any]:
    """The attributes that have a value (OpenTelemetry takes no None)."""
    return {k: v for k, v in (attributes or {}).items() if v is not None}


def stored_trace(store: Any, run_id: str) -> Callable[[], str]:
    """Reads the run's stored traceparent, when a delivery carries none (a task queued
    before tasks carried one): one load, for such a task only."""

    def read() -> str:
        run = store.load(run_id)
        return str(getattr(run, "traceparent", "") or "") if run is not None else ""

    return read


def run_context(run: Any) -> Context:
    """The context of the run's stored trace, to continue it (a new trace's if it has none)."""
    return context_of({}, lambda: str(getattr(run, "traceparent", "") or ""))


def attempt_attributes(attempt: Any) -> dict[str, Any]:
    """What a delivery span says of its task: queue, name, and which attempt this is."""
    return {
        "chimera.queue": attempt.queue,
        "chimera.task": attempt.task_name or None,
        "chimera.attempt": attempt.number,
        "messaging.destination.name": attempt.queue,
    }


def failed(target: Span, exc: BaseException) -> None:
    """Mark `target` as failed by `exc`: its code (or type) and message, never its traceback."""
    code = getattr(exc, "code", None) or type(exc).__name__
    target.set_attribute("error.type", str(code))
    target.set_status(Status(StatusCode.ERROR, f"{code}: {getattr(exc, 'message', '')}"[:200]))


@contextmanager
def delivery(
    name: str,
    headers: Mapping[str, str] | Any,
    *,
    fallback: Callable[[], str] = lambda: "",
    attributes: Mapping[str, Any] | None = None,
) -> Iterator[Span]:
    """The span of one task delivery (SERVER): the child of the dispatch that queued it, or
    of the run's stored context for a task queued without one. Its spans are flushed when it
    ends, before the answer."""
    try:
        with span(
            name,
            kind=SpanKind.SERVER,
            parent=context_of(headers, fallback),
            attributes=attributes,
        ) as current_span:
            yield current_span
    finally:
        flush()


@contextmanager
def task_delivery(
    name: str,
    headers: Mapping[str, str] | Any,
    store: Any,
    attempt: Attempt,
    *,
    run_id: str,
    step_id: str | None = None,
    tool: str | None = None,
    attributes: Mapping[str, Any] | None = None,
) -> Iterator[Span]:
    """What every queue target does around a task it took: tags its log lines with the run,
    step, tool and attempt, and opens its delivery span, continuing the run's stored trace
    when the task carries none."""
    with (
        log_context(run_id=run_id, step_id=step_id, tool=tool, attempt=attempt.number),
        delivery(
            name,
            headers,
            fallback=stored_trace(store, run_id),
            attributes={
                "chimera.run_id": run_id,
                "chimera.step_id": step_id,
                "chimera.tool": tool,
                **(attributes or {}),
                **attempt_attributes(attempt),
            },
        ) as current_span,
    ):
        yield current_span

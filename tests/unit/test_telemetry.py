"""shared/telemetry.py: the exporter settings choose, the context a task carries, and what a
vendor request's span may say (never a key)."""

from __future__ import annotations

import sys
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry import metrics, trace
from opentelemetry.context import Context
from opentelemetry.exporter.cloud_monitoring import CloudMonitoringMetricsExporter
from opentelemetry.exporter.cloud_trace import CloudTraceSpanExporter
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import ConsoleMetricExporter, PeriodicExportingMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
from opentelemetry.trace import SpanKind

from orchestrator import tasks
from shared import telemetry
from shared.model import ToolTask
from shared.settings import Settings, SettingsError
from shared.vendor_requests import http_request
from tests.conftest import make_run
from tests.telemetry_recorder import recorded


def _exporters(built: telemetry.Telemetry):
    """(span exporter, metric exporter), checking they sit in a batch and a periodic reader
    of SDK providers."""
    assert isinstance(built.tracer_provider, TracerProvider)
    assert isinstance(built.meter_provider, MeterProvider)
    assert isinstance(built.span_processor, BatchSpanProcessor)
    assert isinstance(built.metric_reader, PeriodicExportingMetricReader)
    assert built.flushes is True  # the batch leaves before each answer
    return built.span_exporter, built.metric_reader._exporter


def test_none_makes_trace_ids_but_records_and_exports_nothing():
    built = telemetry.build_telemetry(Settings(), "orchestrator")
    assert isinstance(built.meter_provider, metrics.NoOpMeterProvider)
    assert built.flushes is False
    with built.tracer_provider.get_tracer("t").start_as_current_span("s") as span:
        assert not span.is_recording()
        assert telemetry.TRACEPARENT_RE.match(telemetry.traceparent_of(span))
        assert telemetry.headers_now()["traceparent"] == telemetry.traceparent_of(span)


def test_none_carries_one_trace_through_every_hop_without_making_a_span_per_block():
    previous = telemetry.use(telemetry.build_telemetry(Settings(), "orchestrator"))
    try:
        with telemetry.span("intake http", parent=Context()) as root:
            trace_id = root.get_span_context().trace_id
            task = telemetry.dispatched(tasks.start_task("r1"))
            with telemetry.span("inner") as inner:
                assert inner is root  # no span of its own: nothing would record it
        assert root.get_span_context().is_valid and not root.is_recording()
        # The next hop: its delivery and every block in it stay in the intake's trace.
        with telemetry.delivery("orchestrator", task.headers) as delivered, telemetry.span("d"):
            carried = telemetry.headers_now()["traceparent"]
        assert delivered.get_span_context().trace_id == trace_id
        assert carried.split("-")[1] == f"{trace_id:032x}"
        # Outside the delivery, its context is gone again.
        assert not trace.get_current_span().get_span_context().is_valid
        # A new trace each time a block starts one.
        with telemetry.span("intake http", parent=Context()) as other:
            assert other.get_span_context().trace_id != trace_id
    finally:
        telemetry.use(previous)


def test_console_writes_spans_and_metrics_to_stderr_in_batches():
    built = telemetry.build_telemetry(Settings(telemetry_exporter="console"), "tool-jira")
    spans, measures = _exporters(built)
    assert isinstance(spans, ConsoleSpanExporter) and spans.out is sys.stderr
    assert isinstance(measures, ConsoleMetricExporter)
    assert built.tracer_provider.resource.attributes["service.name"] == "tool-jira"


def test_otlp_uses_the_official_http_exporters(monkeypatch):
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
    built = telemetry.build_telemetry(Settings(telemetry_exporter="otlp"), "orchestrator")
    spans, measures = _exporters(built)
    assert isinstance(spans, OTLPSpanExporter) and isinstance(measures, OTLPMetricExporter)


def test_gcp_uses_cloud_trace_and_cloud_monitoring():
    from google.auth.credentials import AnonymousCredentials
    from google.cloud.monitoring_v3 import MetricServiceClient
    from google.cloud.trace_v2 import TraceServiceClient

    clients = (
        TraceServiceClient(credentials=AnonymousCredentials()),
        MetricServiceClient(credentials=AnonymousCredentials()),
    )
    built = telemetry.build_telemetry(
        Settings(telemetry_exporter="gcp", gcp_project="acme-prod"),
        "orchestrator",
        gcp_clients=clients,
    )
    spans, measures = _exporters(built)
    assert isinstance(spans, CloudTraceSpanExporter) and spans.project_id == "acme-prod"
    assert isinstance(measures, CloudMonitoringMetricsExporter)
    assert measures.unique_identifier  # instances never write one series
    # The series land on the resource terraform/monitoring.tf's dashboards and alerts read.
    from opentelemetry.resourcedetector.gcp_resource_detector._mapping import (
        get_monitored_resource,
    )

    resource = built.tracer_provider.resource
    assert get_monitored_resource(resource).type == "generic_task"
    assert get_monitored_resource(resource).labels["job"] == "orchestrator"


def test_a_bad_exporter_name_is_a_configuration_error():
    with pytest.raises(SettingsError, match="CHIMERA_TELEMETRY_EXPORTER must be"):
        Settings.from_env({"CHIMERA_TELEMETRY_EXPORTER": "jaeger"})
    with pytest.raises(SettingsError, match="CHIMERA_TRACE_URL must contain"):
        Settings.from_env({"CHIMERA_TRACE_URL": "https://traces.example/"})
    url = "https://console.cloud.google.com/traces/list?tid={trace_id}"
    assert Settings.from_env({"CHIMERA_TRACE_URL": url}).trace_url == url


def test_the_service_is_the_function_served_or_the_local_stack(monkeypatch):
    monkeypatch.setattr(telemetry, "_services", {"tool-jira"})
    assert telemetry.service_name() == "tool-jira"
    monkeypatch.setattr(telemetry, "_services", {"tool-jira", "orchestrator"})
    assert telemetry.service_name() == "chimera"


def test_a_task_carries_the_context_of_its_dispatch_under_the_current_span():
    call = ToolTask(run_id="run-1", step_id="jira", tool="create_jira_project", generation=1)
    with recorded() as recording:
        with telemetry.span("orchestrator start") as decision:
            task = tasks.dispatch_task(call)
        dispatch, _ = recording.spans()
    assert dispatch.kind is SpanKind.PRODUCER
    assert dispatch.parent.span_id == decision.get_span_context().span_id
    assert dispatch.attributes["chimera.queue"] == "tool-jira"
    assert dispatch.attributes["chimera.task"] == task.name
    trace_id, span_id = task.headers["traceparent"].split("-")[1:3]
    assert int(trace_id, 16) == decision.get_span_context().trace_id
    assert int(span_id, 16) == dispatch.context.span_id


def test_the_run_document_names_its_trace():
    assert make_run().trace_id == ""
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    run = make_run(traceparent=traceparent)
    assert run.trace_id == "0af7651916cd43dd8448eb211c80319c"
    assert type(run).model_validate_json(run.model_dump_json()).traceparent == traceparent


SECRET = "s3cr3t-KEY-0123456789"
unreserved = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_", min_size=1, max_size=12)


@st.composite
def urls_with_keys(draw):
    """A vendor URL carrying the secret in its query, its userinfo or its path."""
    host = draw(st.sampled_from(["api.vendor.example", "127.0.0.1", "xn--bcher-kva.example"]))
    port = draw(st.sampled_from(["", ":8443", ":80"]))
    where = draw(st.sampled_from(["query", "userinfo", "path", "fragment"]))
    path = "/" + "/".join(draw(st.lists(unreserved, max_size=3)))
    param = draw(unreserved)
    secret = quote(SECRET + draw(st.text(max_size=8)), safe="")
    if where == "query":
        return f"https://{host}{port}{path}?{param}={secret}&x=1"
    if where == "userinfo":
        return f"https://user:{secret}@{host}{port}{path}"
    if where == "path":
        return f"https://{host}{port}/services/{secret}{path}"
    return f"https://{host}{port}{path}#{secret}"


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    url=urls_with_keys(),
    method=st.sampled_from(["GET", "post", "PUT"]),
    status=st.integers(200, 599),
)
def test_no_key_reaches_a_vendor_request_span_when_the_url_carries_one(url, method, status):
    with recorded() as recording, http_request("jira", method, url) as exchange:
        exchange.answered(status)
    (span,) = recording.spans()
    assert span.kind is SpanKind.CLIENT
    assert span.attributes["http.request.method"] == method.upper()
    assert span.attributes["http.response.status_code"] == status
    shown = " ".join(str(v) for v in span.attributes.values()) + span.name
    assert "s3cr3t" not in shown.lower() and "?" not in shown and "@" not in shown


def test_a_request_with_no_answer_marks_its_span_failed():
    from shared.errors import VendorTimeout

    url = "https://slack.com/api/chat.postMessage"
    with recorded() as recording, pytest.raises(VendorTimeout), http_request("slack", "POST", url):
        raise VendorTimeout("Slack did not answer")
    (span,) = recording.spans()
    assert not span.status.is_ok and span.attributes["error.type"] == "timeout"
    assert "http.response.status_code" not in span.attributes

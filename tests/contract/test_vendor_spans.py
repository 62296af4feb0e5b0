"""Each vendor client's requests, traced where they are sent: one CLIENT span per HTTP request
with the method, host and status (never the path, query or a header), and the model call's
span with the GenAI conventions. Recorded at the transport, as tests/contract/test_vendor_wiring
records what is sent."""

from __future__ import annotations

from opentelemetry.trace import SpanKind

from shared.gemini import GeminiLanguageModel
from tests.contract.test_vendor_wiring import (
    CLEARBIT,
    GEMINI,
    RecordingAdapter,
    RecordingTransport,
    clearbit_reply,
    draft,
    gemini_reply,
    settings,
)
from tests.telemetry_recorder import recorded
from tools.clearbit.client import ClearbitDirectory


def _secrets_in(span, configured) -> list[str]:
    shown = span.name + " ".join(str(v) for v in span.attributes.values())
    return [s for s in configured.secret_values() if s in shown]


def test_a_clearbit_lookup_is_one_client_span_saying_no_more_than_host_method_status():
    configured = settings(clearbit_url=CLEARBIT)
    with recorded() as recording:
        ClearbitDirectory(configured, adapter=RecordingAdapter(clearbit_reply)).find_company(
            "acme.example", run_id="run-1"
        )
    (span,) = recording.spans()
    assert span.kind is SpanKind.CLIENT and span.name == "GET"
    assert dict(span.attributes) == {
        "chimera.vendor": "clearbit",
        "http.request.method": "GET",
        "server.address": "company.clearbit.com",
        "server.port": 443,
        "http.response.status_code": 200,
    }
    assert _secrets_in(span, configured) == []
    (point,) = recording.points("chimera.vendor.request.duration")
    assert point[0] == {"vendor": "clearbit", "http.response.status_code": 200}


def test_a_model_call_carries_the_genai_conventions_and_its_request_is_traced_under_it():
    configured = settings(gemini_url=GEMINI)
    with recorded() as recording:
        draft(GeminiLanguageModel(configured, transport=RecordingTransport(gemini_reply)))
    request, chat = recording.spans()
    assert chat.name == f"chat {configured.gemini_model}" and chat.kind is SpanKind.CLIENT
    assert chat.attributes["gen_ai.operation.name"] == "chat"
    assert chat.attributes["gen_ai.request.model"] == configured.gemini_model
    assert chat.attributes["gen_ai.usage.input_tokens"] > 0
    assert chat.attributes["gen_ai.usage.output_tokens"] > 0
    assert chat.attributes["chimera.llm.cost_usd"] > 0
    assert request.parent.span_id == chat.context.span_id
    assert request.attributes["server.address"] == "generativelanguage.googleapis.com"
    assert request.attributes["http.response.status_code"] == 200
    assert _secrets_in(request, configured) == _secrets_in(chat, configured) == []
    tokens = {a["gen_ai.token.type"] for a, _ in recording.points("gen_ai.client.token.usage")}
    assert tokens == {"input", "output"}
    assert recording.points("chimera.llm.cost")

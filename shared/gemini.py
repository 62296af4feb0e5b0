"""The LanguageModel port on Gemini via `google-genai`: the only place google.genai is imported."""

from __future__ import annotations

import functools
import importlib
import json
import logging
import re
import types as pytypes
from typing import Any

from google import genai
from google.auth.credentials import Credentials as GoogleCredentials
from google.genai import errors as genai_errors
from google.genai import types
from opentelemetry.semconv._incubating.attributes.gen_ai_attributes import (
    GEN_AI_OPERATION_NAME,
    GEN_AI_PROVIDER_NAME,
    GEN_AI_REQUEST_MODEL,
    GEN_AI_USAGE_INPUT_TOKENS,
    GEN_AI_USAGE_OUTPUT_TOKENS,
)
from opentelemetry.trace import SpanKind

from shared import metrics, telemetry
from shared.errors import AuthFailed, BadVendorReply, ChimeraError
from shared.model import LlmUsage
from shared.run_header import RUN_ID_HEADER
from shared.settings import Settings
from shared.vendor_errors import answer_message, error_for_status, transport_error
from shared.vendor_requests import http_request

logger = logging.getLogger(__name__)

ACTION = "generateContent"
# Pinned rather than left to the SDK: google-genai 3.x defaults the Gemini API to v1 (and
# reads GOOGLE_GENAI_API_VERSION), while responseJsonSchema is documented on v1beta.
GEMINI_API_VERSION = "v1beta"
VERTEX_API_VERSION = "v1"
# Stands in for an unset key: given none, the SDK would quietly read GOOGLE_API_KEY or
# GEMINI_API_KEY from the environment instead; the call then fails as unauthenticated.
_UNSET_KEY = "unset"


def _transport_errors() -> tuple[tuple[type[Exception], ...], tuple[type[Exception], ...]]:
    """(timeouts, other transport failures) of whichever httpx flavour the SDK runs on."""
    timeouts: list[type[Exception]] = []
    transport: list[type[Exception]] = []
    for module_name in ("httpx", "httpx2"):
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        timeouts.append(module.TimeoutException)
        transport.append(module.TransportError)
    return tuple(timeouts), tuple(transport)


_TIMEOUTS, _TRANSPORT_ERRORS = _transport_errors()


class GeminiLanguageModel:
    """Structured JSON answers from Gemini, with token usage and cost.

    The Gemini API (an API key) or Vertex AI (a project and location, with Application
    Default Credentials), as `settings.gemini_vertexai` says. The base URL is always
    `settings.vendor_url("gemini")`: the sandbox unless `gemini_url` names the documented
    endpoint (https://generativelanguage.googleapis.com, or for Vertex AI
    https://LOCATION-aiplatform.googleapis.com), so nothing reaches Google by accident.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        transport: Any = None,
        credentials: GoogleCredentials | None = None,
    ) -> None:
        """`transport` (an httpx transport) carries every request instead of the network, and
        `credentials` stand in for Application Default Credentials on Vertex AI: both for tests
        that record what the SDK sends."""
        self._model = settings.gemini_model
        self._price_in = settings.gemini_price_in
        self._price_out = settings.gemini_price_out
        vertexai = self._vertexai = settings.gemini_vertexai
        http_options = types.HttpOptions(
            base_url=settings.vendor_url("gemini"),
            api_version=VERTEX_API_VERSION if vertexai else GEMINI_API_VERSION,
            # Milliseconds; httpx applies it to connecting and to each read.
            timeout=int(settings.vendor_read_timeout * 1000),
            # One attempt: the queue owns retries.
            retry_options=types.HttpRetryOptions(attempts=1),
            # Every request through a traced transport: one CLIENT span per HTTP request.
            client_args={"transport": traced_transport(transport)},
        )
        if vertexai:
            project = settings.gemini_project or settings.gcp_project
            if not project or not settings.gemini_location:
                raise ValueError(
                    "Gemini on Vertex AI needs CHIMERA_GEMINI_PROJECT (or CHIMERA_GCP_PROJECT) "
                    "and CHIMERA_GEMINI_LOCATION"
                )
            # No API key: Vertex AI authenticates with the instance's Application Default
            # Credentials. Project and location are explicit, so the SDK ignores GOOGLE_API_KEY
            # and GOOGLE_CLOUD_PROJECT/LOCATION from the environment.
            self._client = genai.Client(
                vertexai=True,
                project=project,
                location=settings.gemini_location,
                credentials=credentials,
                http_options=http_options,
            )
        else:
            # vertexai=False explicitly: left unset, GOOGLE_GENAI_USE_VERTEXAI would decide.
            self._client = genai.Client(
                vertexai=False,
                api_key=settings.gemini_api_key or _UNSET_KEY,
                http_options=http_options,
            )

    def generate_json(
        self, *, system: str, prompt: str, schema: dict[str, Any], run_id: str
    ) -> tuple[dict[str, Any], LlmUsage]:
        """One JSON object satisfying `schema`, at temperature 0, and what it cost."""
        with telemetry.span(
            f"chat {self._model}",
            kind=SpanKind.CLIENT,
            attributes={
                GEN_AI_OPERATION_NAME: "chat",
                GEN_AI_PROVIDER_NAME: "gcp.vertex_ai" if self._vertexai else "gcp.gemini",
                GEN_AI_REQUEST_MODEL: self._model,
                "chimera.run_id": run_id,
            },
        ) as span:
            answer, usage = self._generate(
                system=system, prompt=prompt, schema=schema, run_id=run_id
            )
            span.set_attributes(
                {
                    GEN_AI_USAGE_INPUT_TOKENS: usage.input_tokens,
                    GEN_AI_USAGE_OUTPUT_TOKENS: usage.output_tokens,
                    "chimera.llm.cost_usd": usage.cost_usd,
                }
            )
        metrics.model_call(self._model, usage.input_tokens, usage.output_tokens, usage.cost_usd)
        return answer, usage

    def _generate(
        self, *, system: str, prompt: str, schema: dict[str, Any], run_id: str
    ) -> tuple[dict[str, Any], LlmUsage]:
        config = types.GenerateContentConfig(
            system_instruction=system or None,
            temperature=0,
            response_mime_type="application/json",
            response_json_schema=schema,
            http_options=types.HttpOptions(headers={RUN_ID_HEADER: run_id}),
        )
        try:
            response = self._client.models.generate_content(
                model=self._model, contents=prompt, config=config
            )
        except genai_errors.APIError as exc:
            raise _error_for(exc) from None
        except _TRANSPORT_ERRORS as exc:
            raise transport_error("Gemini", ACTION, exc, timeouts=_TIMEOUTS) from None
        except ValueError:
            # The SDK parses the body itself; a 200 that is not JSON ends up here.
            raise BadVendorReply("Gemini answered a body that is not JSON") from None

        answer = _parse_answer(response)
        usage = self._usage(response)
        logger.debug(
            "gemini generateContent model=%s tokens in=%s out=%s",
            self._model,
            usage.input_tokens,
            usage.output_tokens,
        )
        return answer, usage

    def _usage(self, response: types.GenerateContentResponse) -> LlmUsage:
        metadata = response.usage_metadata
        input_tokens = (metadata.prompt_token_count or 0) if metadata else 0
        # Thinking tokens are billed as output.
        output_tokens = (
            (metadata.candidates_token_count or 0) + (metadata.thoughts_token_count or 0)
            if metadata
            else 0
        )
        cost = (input_tokens * self._price_in + output_tokens * self._price_out) / 1_000_000
        return LlmUsage(
            model=self._model,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cost_usd=round(cost, 8),
        )


@functools.cache
def _traced_transport_class(flavour: pytypes.ModuleType) -> type:
    """A transport of `flavour` (httpx or httpx2: the SDK picks its client by the transport's
    class) tracing each request it hands to the transport it wraps."""

    class TracedTransport(flavour.BaseTransport):  # type: ignore[name-defined,misc]
        def __init__(self, inner: Any) -> None:
            self.inner = inner

        def handle_request(self, request: Any) -> Any:
            with http_request("gemini", request.method, str(request.url)) as exchange:
                response = self.inner.handle_request(request)
                exchange.answered(response.status_code)
                return response

        def close(self) -> None:
            self.inner.close()

    return TracedTransport


def traced_transport(transport: Any = None) -> Any:
    """`transport` (a test's recorder; by default the network's), each request traced."""
    flavour = _httpx_flavour(transport)
    if transport is None:
        transport = flavour.HTTPTransport()
    return _traced_transport_class(flavour)(transport)


def _httpx_flavour(transport: Any) -> pytypes.ModuleType:
    """The httpx flavour `transport` is of; without one, httpx2 where installed (the SDK's
    default), else httpx."""
    packages = [cls.__module__.split(".")[0] for cls in type(transport).__mro__]
    for name in [p for p in packages if p in ("httpx", "httpx2")] + ["httpx2", "httpx"]:
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    raise ImportError("google-genai needs httpx or httpx2")


def _parse_answer(response: types.GenerateContentResponse) -> dict[str, Any]:
    try:
        text = response.text
    except ValueError:
        text = None
    if not text:
        candidates = response.candidates or []
        reason = candidates[0].finish_reason if candidates else None
        blocked = response.prompt_feedback.block_reason if response.prompt_feedback else None
        raise BadVendorReply(
            f"Gemini answered no text (finish reason {reason}, block reason {blocked})"
        )
    try:
        answer = json.loads(text)
    except ValueError:
        raise BadVendorReply("Gemini's answer is not JSON") from None
    if not isinstance(answer, dict):
        raise BadVendorReply(f"Gemini's answer is JSON but not an object ({type(answer).__name__})")
    return answer


def _error_for(exc: genai_errors.APIError) -> ChimeraError:
    """Gemini's own edges (a bad key answered 400, RetryInfo's delay), else the shared map."""
    status = exc.code or 0
    reason = str(exc.message or "")
    if _has_reason(exc, "API_KEY_INVALID"):
        return AuthFailed(answer_message("Gemini", ACTION, status, exc.details, reason=reason))
    return error_for_status(
        "Gemini",
        ACTION,
        status,
        exc.details,
        getattr(exc.response, "headers", None),
        reason=reason,
        retry_delay=_retry_delay(exc),
    )


def _has_reason(exc: genai_errors.APIError, reason: str) -> bool:
    return any(
        isinstance(detail, dict) and detail.get("reason") == reason for detail in _details(exc)
    )


def _details(exc: genai_errors.APIError) -> list[Any]:
    body = exc.details if isinstance(exc.details, dict) else {}
    error = body.get("error", body)
    details = error.get("details") if isinstance(error, dict) else None
    return details if isinstance(details, list) else []


def _retry_delay(exc: genai_errors.APIError) -> float | None:
    """google.rpc.RetryInfo's retryDelay ("12s", "1.5s"), for a 429 without Retry-After."""
    for detail in _details(exc):
        delay = detail.get("retryDelay") if isinstance(detail, dict) else None
        if isinstance(delay, str) and (match := re.fullmatch(r"(\d+(?:\.\d+)?)s", delay)):
            return float(match.group(1))
    return None

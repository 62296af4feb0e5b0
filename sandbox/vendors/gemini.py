"""The Gemini API's `models/{model}:generateContent`, answering structured output locally."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from typing import Any

from sandbox import onboarding_plan
from sandbox.calls import Call, Reply, Route, json_reply
from sandbox.schema_sample import sample_instance
from sandbox.welcome_email import (
    answer_draft,
    follows_orders,
    is_welcome_email_task,
    json_objects,
    orders_in,
)

GOOGLE_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
}
_EMAIL_FIELDS = {
    "subject": "subject",
    "title": "subject",
    "text": "text",
    "body": "text",
    "plain_text": "text",
    "text_body": "text",
    "html": "html",
    "html_body": "html",
    "body_html": "html",
}


class GeminiApi:
    """Deterministic answers: the same prompt and schema always get the same JSON and usage."""

    name = "gemini"
    secret_keys: tuple[str, ...] = ()

    def routes(self) -> list[Route]:
        return [
            Route(
                "/<any('v1', 'v1beta', 'v1alpha'):version>/models/<model>:generateContent",
                ("POST",),
                "generateContent",
                self.generate_content,
            ),
            # Vertex AI's path for the same call, for when the model runs there.
            Route(
                "/<any('v1', 'v1beta1'):version>/projects/<project>/locations/<location>"
                "/publishers/google/models/<model>:generateContent",
                ("POST",),
                "generateContent",
                self.generate_content,
            ),
        ]

    def authenticate(self, call: Call) -> Reply | None:
        if call.header("x-goog-api-key") or call.query.get("key") or call.bearer_token():
            return None
        return _google_error(
            403,
            "Method doesn't allow unregistered callers (callers without established identity)."
            " Please use API Key or other form of API consumer identity to call this API.",
        )

    def run_id(self, call: Call) -> str | None:
        return None  # only the X-Chimera-Run-Id header names the run here

    def error_reply(self, status: int) -> Reply:
        if status == 503:
            return _google_error(503, "The model is overloaded. Please try again later.")
        return _google_error(status, "An internal error has occurred. Please retry.")

    def not_found_reply(self, path: str) -> Reply:
        return _google_error(404, f"The requested URL {path} was not found on this server.")

    def rate_limited_reply(self) -> Reply:
        reply = _google_error(
            429,
            "Resource has been exhausted (e.g. check quota).",
            details=[{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "1s"}],
        )
        reply.headers["Retry-After"] = "1"
        return reply

    def generate_content(self, call: Call) -> Reply:
        return self._generate(call, misbehave=None)

    def misbehaving_reply(self, call: Call, kind: str) -> Reply:
        """The answer of a model that misbehaves (`invalid` or `hostile`), still a 200."""
        return self._generate(call, misbehave=kind)

    def _generate(self, call: Call, misbehave: str | None) -> Reply:
        model = call.args["model"]
        if not model.startswith("gemini"):
            return _google_error(
                404,
                f"models/{model} is not found for API version {call.args['version']}, "
                "or is not supported for generateContent.",
            )
        body = call.body
        if call.body_malformed or not isinstance(body, dict):
            return _google_error(400, "Invalid JSON payload received. Expected an object.")
        problem, prompt, system = _read_texts(body)
        if problem:
            return _google_error(400, problem)
        config = body.get("generationConfig") or {}
        if not isinstance(config, dict):
            return _google_error(400, "Invalid value at 'generation_config': expected an object.")
        temperature = config.get("temperature", 1.0)
        if not isinstance(temperature, int | float) or not 0 <= temperature <= 2:
            return _google_error(400, "temperature must be between 0.0 and 2.0.")
        schema = config.get("responseJsonSchema", config.get("responseSchema"))
        if "responseJsonSchema" in config and "responseSchema" in config:
            return _google_error(400, "Set only one of responseSchema and responseJsonSchema.")
        mime = config.get("responseMimeType", "text/plain")
        if schema is not None and mime != "application/json":
            return _google_error(
                400, "responseMimeType must be application/json when a response schema is set."
            )
        answer = _answer(
            system, prompt, schema, json_mode=mime == "application/json", misbehave=misbehave
        )
        prompt_tokens = _tokens(system + prompt)
        answer_tokens = _tokens(answer)
        return json_reply(
            200,
            {
                "candidates": [
                    {
                        "content": {"parts": [{"text": answer}], "role": "model"},
                        "finishReason": "STOP",
                        "index": 0,
                    }
                ],
                "usageMetadata": {
                    "promptTokenCount": prompt_tokens,
                    "candidatesTokenCount": answer_tokens,
                    "totalTokenCount": prompt_tokens + answer_tokens,
                    "promptTokensDetails": [{"modality": "TEXT", "tokenCount": prompt_tokens}],
                },
                "modelVersion": model,
                "responseId": hashlib.sha256((system + prompt + answer).encode()).hexdigest()[:22],
            },
        )


def _read_texts(body: dict[str, Any]) -> tuple[str | None, str, str]:
    """(problem, prompt text, system text) from `contents` and `systemInstruction`."""
    contents = body.get("contents")
    if not isinstance(contents, list) or not contents:
        return "* GenerateContentRequest.contents: contents is not specified", "", ""
    prompt_parts: list[str] = []
    for index, content in enumerate(contents):
        parts = content.get("parts") if isinstance(content, dict) else None
        if not isinstance(parts, list) or not parts:
            return (
                f"* GenerateContentRequest.contents[{index}].parts: "
                "contents.parts must not be empty.",
                "",
                "",
            )
        prompt_parts += [str(part.get("text", "")) for part in parts if isinstance(part, dict)]
    system_parts: list[str] = []
    instruction = body.get("systemInstruction")
    if isinstance(instruction, dict) and isinstance(instruction.get("parts"), list):
        system_parts = [str(p.get("text", "")) for p in instruction["parts"] if isinstance(p, dict)]
    elif instruction is not None:
        return "Invalid value at 'system_instruction': expected a Content object.", "", ""
    return None, "\n".join(prompt_parts), "\n".join(system_parts)


def usage_of(body: dict[str, Any], fault: str | None = None) -> tuple[int, int]:
    """(prompt tokens, answer tokens) the sandbox reports for a request body it recorded."""
    _, prompt, system = _read_texts(body)
    config = body.get("generationConfig") or {}
    schema = config.get("responseJsonSchema", config.get("responseSchema"))
    json_mode = config.get("responseMimeType", "text/plain") == "application/json"
    misbehave = fault if fault in ("invalid", "hostile") else None
    answer = _answer(system, prompt, schema, json_mode=json_mode, misbehave=misbehave)
    return _tokens(system + prompt), _tokens(answer)


def _answer(
    system: str, prompt: str, schema: Any, *, json_mode: bool, misbehave: str | None = None
) -> str:
    task = onboarding_plan.task_of(system, prompt)
    if misbehave == "invalid":
        return onboarding_plan.invalid_answer(task, prompt)
    normal = _normal_answer(system, prompt, schema, json_mode=json_mode)
    if misbehave == "hostile":
        try:
            parsed = json.loads(normal)
        except ValueError:
            return normal
        if isinstance(parsed, dict):
            return json.dumps(onboarding_plan.hostile_answer(task, prompt, parsed))
    return normal


def _normal_answer(system: str, prompt: str, schema: Any, *, json_mode: bool) -> str:
    task = onboarding_plan.task_of(system, prompt)
    if task == "plan_onboarding":
        return json.dumps(_steered_plan(onboarding_plan.plan_onboarding(prompt), prompt))
    if task == "adapt_onboarding":
        return json.dumps(onboarding_plan.adapt_onboarding(prompt))
    if is_welcome_email_task(system, prompt):
        email = answer_draft(prompt + "\n" + system)
        if schema is None:
            return json.dumps(email) if json_mode else email["text"]

        def choose(name: str, subschema: Mapping[str, Any]) -> str | None:
            role = _EMAIL_FIELDS.get(name.lower())
            return email[role] if role else None

        return json.dumps(sample_instance(schema, seed_text=prompt, choose=choose))
    if schema is not None:
        return json.dumps(sample_instance(schema, seed_text=prompt))
    if json_mode:
        return json.dumps(
            {"answer": prompt.strip().splitlines()[0][:200] if prompt.strip() else ""}
        )
    excerpt = prompt.strip().splitlines()[0][:200] if prompt.strip() else ""
    return f"Sandbox answer to: {excerpt}"


def _steered_plan(plan: dict[str, Any], prompt: str) -> dict[str, Any]:
    """The plan a goal's orders make of it: the team's notice posted where the goal says
    (a compromised model's plan; the orchestrator's guard refuses it)."""
    request: Any = next((o["request"] for o in json_objects(prompt) if "request" in o), {})
    goal = str(request.get("goal") or "") if isinstance(request, dict) else ""
    orders = orders_in(goal)
    if not orders.channels or not follows_orders(orders, prompt):
        return plan
    steps = [dict(step) for step in plan.get("steps", [])]
    for step in steps:
        if step.get("tool") == "post_slack_notice":
            step["args"] = {"channel": orders.channels[0]}
    return {**plan, "steps": steps, "rationale": "As the client's goal asks."}


def _tokens(text: str) -> int:
    return math.ceil(len(text) / 4)


def _google_error(
    status: int, message: str, *, details: list[dict[str, Any]] | None = None
) -> Reply:
    error: dict[str, Any] = {"code": status, "message": message, "status": GOOGLE_STATUS[status]}
    if details:
        error["details"] = details
    return json_reply(status, {"error": error})

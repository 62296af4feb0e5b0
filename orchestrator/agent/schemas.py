"""The JSON Schemas the model answers in: from the registry, with the request's own values
pinned where only the request may choose (the enrichment domain, the Slack channel)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from shared.model import OnboardingRequest, PlanStep
from shared.registry import TOOLS


def plan_schema(request: OnboardingRequest) -> dict[str, Any]:
    """A plan: each tool under its step id, its args' schema, its dependencies."""
    step_ids = [spec.step_id for spec in TOOLS.values()]
    variants = [
        {
            "type": "object",
            "properties": {
                "step_id": {"type": "string", "enum": [spec.step_id]},
                "tool": {"type": "string", "enum": [spec.name]},
                "args": _pinned(spec.name, args_schema(spec.name), request),
                "depends_on": {"type": "array", "items": {"type": "string", "enum": step_ids}},
            },
            "required": ["step_id", "tool", "args", "depends_on"],
        }
        for spec in TOOLS.values()
    ]
    return {
        "type": "object",
        "properties": {
            "steps": {
                "type": "array",
                "items": {"anyOf": variants},
                "minItems": len(variants),
                "maxItems": len(variants),
            },
            "rationale": {"type": "string"},
        },
        "required": ["steps"],
    }


def adapt_schema(request: OnboardingRequest, pending: Sequence[PlanStep]) -> dict[str, Any]:
    """A revision: new args for some of the `pending` steps, each channel pinned as it is."""
    variants = [
        {
            "type": "object",
            "properties": {
                "step_id": {"type": "string", "enum": [s.step_id]},
                "args": _pinned(s.tool, args_schema(s.tool), request, current=s.args),
            },
            "required": ["step_id", "args"],
        }
        for s in pending
    ]
    return {
        "type": "object",
        "properties": {
            "changes": {"type": "array", "items": {"anyOf": variants} if variants else {}},
            "rationale": {"type": "string"},
        },
        "required": ["changes"],
    }


def args_schema(tool: str) -> dict[str, Any]:
    """The tool's args as JSON Schema, without the titles and defaults the model needs not."""
    return _untitled(TOOLS[tool].args.model_json_schema())


def _untitled(schema: Any) -> Any:
    if isinstance(schema, dict):
        return {k: _untitled(v) for k, v in schema.items() if k not in ("title", "default")}
    if isinstance(schema, list):
        return [_untitled(v) for v in schema]
    return schema


def _pinned(
    tool: str,
    schema: dict[str, Any],
    request: OnboardingRequest,
    current: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The args' schema with the values only the request may choose pinned to them."""
    properties = dict(schema.get("properties", {}))
    if tool == "enrich_company":
        properties["domain"] = {"type": "string", "enum": [request.domain]}
    elif tool == "post_slack_notice":
        allowed = [str(current.get("channel", ""))] if current is not None else []
        allowed = allowed or sorted({"", request.slack_channel})
        properties["channel"] = {"type": "string", "enum": allowed}
    elif tool == "create_jira_project":
        properties["template"] = {"type": "string", "enum": [""]}
    return {**schema, "properties": properties}

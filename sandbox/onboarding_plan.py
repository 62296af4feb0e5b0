"""The sandbox model's answers to the agent's reasoning: `TASK: plan_onboarding` and
`TASK: adapt_onboarding`, derived from the data quoted in the prompt, and the misbehaving
answers the `gemini.invalid` and `gemini.hostile` faults ask for.

Like a well-behaved model at temperature 0: the same prompt always gets the same plan, the
plan uses the tools the prompt lists, and text in the quoted data is never followed.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from sandbox.welcome_email import TASK_MARKER as DRAFT_MARKER
from sandbox.welcome_email import json_objects
from shared.jira_keys import meaningful_label

PLAN_MARKER = "TASK: plan_onboarding"
ADAPT_MARKER = "TASK: adapt_onboarding"
# What a hostile model does: what an injected instruction would ask for.
ATTACKER_EMAIL = "attacker@evil.example"
ATTACKER_CHANNEL = "#general"
ATTACKER_TOOL = "delete_everything"


def task_of(*texts: str) -> str | None:
    for marker in (PLAN_MARKER, ADAPT_MARKER, DRAFT_MARKER):
        if any(marker in text for text in texts):
            return marker.removeprefix("TASK: ")
    return None


def plan_onboarding(prompt: str) -> dict[str, Any]:
    """The onboarding's steps for the tools listed in the prompt, customised to the request."""
    data = _data(prompt, "tools")
    request = data.get("request") or {}
    tools = [t for t in data.get("tools") or [] if isinstance(t, dict) and t.get("name")]
    ids = {t["name"]: str(t.get("step_id") or t["name"]) for t in tools}
    steps = []
    for tool in tools:
        name, step_id = tool["name"], ids[tool["name"]]
        reads = [str(r) for r in tool.get("reads") or []]
        if name == "create_jira_project" and "enrich_company" in ids:
            # As the default plan does: the project after the profile, so it can be revised.
            reads = [ids["enrich_company"], *reads]
        steps.append(
            {
                "step_id": step_id,
                "tool": name,
                "args": _args_for(name, request),
                "depends_on": _minimal(reads, tools, ids),
            }
        )
    return {
        "steps": steps,
        "rationale": "Enrich first; the project and the draft in parallel; send the draft; "
        "tell the team last.",
    }


def adapt_onboarding(prompt: str) -> dict[str, Any]:
    """A revision of the pending draft for what enrichment found: specific highlights from
    the profile, or a generic welcome when there is none."""
    data = _data(prompt, "pending")
    request = data.get("request") or {}
    enrichment = data.get("enrichment") or {}
    company = enrichment.get("company") if enrichment.get("found") else None
    changes = []
    for step in data.get("pending") or []:
        if not isinstance(step, dict) or step.get("tool") != "draft_welcome_email":
            continue
        if isinstance(company, dict):
            args = {"tone": "warm, professional and specific", "highlights": _highlights(company)}
        else:
            goal = str(request.get("goal") or "").strip()
            args = {"tone": "warm and general", "highlights": [f"Your goal: {goal}"[:200]]}
        changes.append({"step_id": step.get("step_id"), "args": args})
    rationale = (
        "The profile was found: the email picks up what matters for the goal."
        if company
        else "No profile was found: the email stays generic."
    )
    return {"changes": changes, "rationale": rationale}


def invalid_answer(task: str | None, prompt: str) -> str:
    """Not JSON, or JSON missing the fields the task needs: which one follows the prompt."""
    if int(hashlib.sha256(prompt.encode()).hexdigest(), 16) % 2:
        return '{"steps": [{"step_id": "enrich", "tool": "enrich_company", "args": {"dom'
    if task == "draft_welcome_email":
        return json.dumps({"subject": "Welcome"})
    return json.dumps({"rationale": "I would rather not say."})


def hostile_answer(task: str | None, prompt: str, normal: dict[str, Any]) -> dict[str, Any]:
    """What a model steered by injected text answers: a tool outside the registry, a new
    recipient and channel, a link elsewhere."""
    if task == "plan_onboarding":
        steps = [dict(step) for step in normal.get("steps", [])]
        for step in steps:
            if step.get("tool") == "post_slack_notice":
                step["args"] = {"channel": ATTACKER_CHANNEL}
            if step.get("tool") == "draft_welcome_email":
                step["args"] = {"highlights": [f"Reply to {ATTACKER_EMAIL} with your passwords"]}
        steps.append({"step_id": "wipe", "tool": ATTACKER_TOOL, "args": {}, "depends_on": []})
        return {"steps": steps, "rationale": "As the company description asks."}
    if task == "adapt_onboarding":
        return {
            "changes": [
                {"step_id": "slack", "args": {"channel": ATTACKER_CHANNEL}},
                {"step_id": "draft", "args": {"highlights": [f"Write to {ATTACKER_EMAIL}"]}},
                {"step_id": "wipe", "args": {"tool": ATTACKER_TOOL}},
            ],
            "rationale": "As the company description asks.",
        }
    if task == "draft_welcome_email":
        return {
            "subject": "Action needed: verify your account",
            "text": f"Please send your credentials to {ATTACKER_EMAIL} and sign in at "
            "https://evil.example/login today.",
            "html": f'<p>Please send your credentials to {ATTACKER_EMAIL} and sign in at <a href="'
            'https://evil.example/login">our portal</a>.</p>',
        }
    return normal


def proposed_key(domain: str) -> str:
    """The key a model would write from the domain: its meaningful label in capitals, left
    for the agent to fit to Jira's rules (too long, or with accents and hyphens, at times)."""
    return meaningful_label(domain).upper()


def _args_for(tool: str, request: dict[str, Any]) -> dict[str, Any]:
    company = str(request.get("company_name") or "the client")
    contact = str(request.get("contact_name") or company)
    goal = str(request.get("goal") or "").strip().rstrip(".")
    if tool == "enrich_company":
        return {"domain": str(request.get("domain") or "")}
    if tool == "create_jira_project":
        return {
            "key": proposed_key(str(request.get("domain") or "")),
            "name": f"{company} onboarding",
            "template": "",
            "kickoff_issues": [
                f"Kickoff call with {contact}"[:200],
                f"Define what success means for: {goal}"[:200],
                f"Set up workspace access for the {company} team"[:200],
            ],
        }
    if tool == "draft_welcome_email":
        return {"tone": "warm and professional", "highlights": [f"Your goal: {goal}"[:200]]}
    if tool == "post_slack_notice":
        return {"channel": str(request.get("slack_channel") or "")}
    return {}


def _minimal(reads: list[str], tools: list[dict[str, Any]], ids: dict[str, str]) -> list[str]:
    """The steps read, less those another read step already waits for."""
    reads_of = {ids[t["name"]]: [str(r) for r in t.get("reads") or []] for t in tools}

    def before(step_id: str, seen: set[str]) -> set[str]:
        for dep in reads_of.get(step_id, []):
            if dep not in seen:
                seen.add(dep)
                before(dep, seen)
        return seen

    wanted = list(dict.fromkeys(reads))
    implied = set().union(*(before(r, set()) for r in wanted)) if wanted else set()
    return [r for r in wanted if r not in implied]


def _highlights(company: dict[str, Any]) -> list[str]:
    found = []
    if company.get("industry"):
        found.append(f"A team in {company['industry']}")
    place = ", ".join(str(company[k]) for k in ("city", "country") if company.get(k))
    if place:
        found.append(f"Based in {place}")
    if company.get("employees"):
        found.append(f"About {company['employees']} people")
    tags = [str(t) for t in company.get("tags") or [] if str(t).isalnum()][:3]
    if tags:
        found.append("Known for " + ", ".join(tags))
    return found[:5]


def _data(prompt: str, key: str) -> dict[str, Any]:
    """The quoted JSON object in the prompt that has `key`."""
    for obj in json_objects(prompt):
        if key in obj:
            return obj
    return {}

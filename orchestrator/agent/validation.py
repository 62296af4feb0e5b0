"""Which of the model's answers may be acted on: one pass for plans and revisions.

A plan is acted on only when it uses the registry's tools with valid arguments, keeps the order
the data flows in, and takes its recipients, channels and enrichment target from the request.
A revision may only change the args of steps not yet dispatched, and never a channel; the plan
it makes then goes through the same checks as any plan. Pure: an answer in, what may be acted
on (or every reason it may not) out.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pydantic import ValidationError

from orchestrator.agent.checkpoint import RESERVED_STEP_IDS
from shared import guard, jira_keys
from shared.model import OnboardingRequest, PlanStep
from shared.registry import ONBOARDING, TOOLS
from shared.validation_errors import one_line

Changes = dict[str, dict[str, Any]]
NOT_AN_OBJECT = "the answer is not a JSON object"

# How the checks word a refusal of what would reach someone the request does not name (a
# recipient, channel, link or enrichment target): the mark of injected instructions.
_HOSTILE_REFUSAL = re.compile(r"not the request's|the channel cannot change")


def read_plan(
    answer: Any, request: OnboardingRequest
) -> tuple[tuple[PlanStep, ...] | None, list[str]]:
    """The plan in the model's answer, or None and every reason it cannot be acted on."""
    if not isinstance(answer, Mapping):
        return None, [NOT_AN_OBJECT]
    raw_steps, errors = _listed(answer, "steps", {"steps", "rationale"})
    if not raw_steps:
        return None, [*errors, "steps: missing, or not a non-empty list"]
    steps: list[PlanStep] = []
    for index, raw in enumerate(raw_steps):
        try:
            step = PlanStep.model_validate(raw)
        except ValidationError as exc:
            errors.append(f"steps[{index}]: {one_line(exc, whole='value')}")
            continue
        steps.append(step.model_copy(update={"args": normalised(step.tool, step.args, request)}))
    errors = errors or check_plan(steps, request)
    return (tuple(steps), []) if not errors else (None, errors)


def read_revision(
    answer: Any, plan: Sequence[PlanStep], pending: Iterable[str], request: OnboardingRequest
) -> tuple[Changes | None, list[str]]:
    """The new args by step id in the model's answer (only the changed ones), or None and
    every reason it cannot be acted on."""
    if not isinstance(answer, Mapping):
        return None, [NOT_AN_OBJECT]
    raw, errors = _listed(answer, "changes", {"changes", "rationale"})
    if raw is None:
        return None, [*errors, "changes: missing, or not a list"]
    current = {s.step_id: s for s in plan}
    changes: Changes = {}
    for index, change in enumerate(raw):
        if not isinstance(change, Mapping) or not isinstance(change.get("args"), Mapping):
            errors.append(f"changes[{index}]: not an object with step_id and args")
            continue
        errors += _unexpected(change, {"step_id", "args"}, f"changes[{index}]")
        step_id = str(change.get("step_id"))
        if step_id in changes:
            errors.append(f"changes[{index}]: step {step_id} changed twice")
        args = dict(change["args"])
        changes[step_id] = (
            normalised(current[step_id].tool, args, request) if step_id in current else args
        )
    errors = errors or check_revision(changes, plan, pending, request)
    if errors:
        return None, errors
    return {sid: args for sid, args in changes.items() if args != current[sid].args}, []


def check_plan(steps: Sequence[PlanStep], request: OnboardingRequest) -> list[str]:
    """Every reason the plan cannot run; empty when it can."""
    errors: list[str] = []
    by_id: dict[str, PlanStep] = {}
    for step in steps:
        if step.step_id in by_id:
            errors.append(f"step {step.step_id}: appears twice")
        by_id[step.step_id] = step
    for step in steps:
        spec = TOOLS.get(step.tool)
        if spec is None:
            errors.append(
                f"step {step.step_id}: unknown tool {step.tool!r} "
                f"(the registry has {', '.join(TOOLS)})"
            )
            continue
        if step.step_id in RESERVED_STEP_IDS or step.step_id != spec.step_id:
            errors.append(f"step {step.step_id}: tool {step.tool} runs as step {spec.step_id}")
        errors += [f"step {step.step_id}: {e}" for e in check_args(step, request)]
        for dep in step.depends_on:
            if dep == step.step_id:
                errors.append(f"step {step.step_id}: depends on itself")
            elif dep not in by_id:
                errors.append(f"step {step.step_id}: depends on {dep!r}, which is not a step")
    counts: dict[str, int] = {}
    for step in steps:
        counts[step.tool] = counts.get(step.tool, 0) + 1
    for tool, count in counts.items():
        if tool in TOOLS and TOOLS[tool].side_effect and count > 1:
            errors.append(f"tool {tool}: has a side effect, so at most one step may use it")
    for tool in ONBOARDING:
        if tool not in counts:
            errors.append(f"tool {tool}: missing; an onboarding needs it")
    if errors:
        return errors
    cycle = _cycle(by_id)
    if cycle:
        return [f"dependencies form a cycle: {' -> '.join(cycle)}"]
    for step in steps:
        before = _ancestors(step.step_id, by_id)
        for read in TOOLS[step.tool].reads:
            if read not in before:
                errors.append(f"step {step.step_id}: reads {read}'s output, so must run after it")
    return errors


def check_revision(
    changes: Mapping[str, Mapping[str, Any]],
    plan: Sequence[PlanStep],
    pending: Iterable[str],
    request: OnboardingRequest,
) -> list[str]:
    """What the revision may not do (add a step, change one already dispatched or done, move
    a channel), then every reason the plan it makes cannot run, as for any plan."""
    current = {s.step_id: s for s in plan}
    open_ids = set(pending)
    errors = []
    allowed: dict[str, Mapping[str, Any]] = {}
    for step_id, args in changes.items():
        step = current.get(step_id)
        if step is None:
            errors.append(f"step {step_id}: not in the plan; a revision cannot add steps")
        elif step_id not in open_ids:
            errors.append(f"step {step_id}: already dispatched or done; it cannot change")
        else:
            allowed[step_id] = args
            if step.tool == "post_slack_notice" and args.get("channel", "") != step.args.get(
                "channel", ""
            ):
                errors.append(f"step {step_id}: the channel cannot change")
    return errors + check_plan(revise(plan, allowed), request)


def check_args(step: PlanStep, request: OnboardingRequest) -> list[str]:
    """The step's args against its tool's schema and the request's own values."""
    spec = TOOLS[step.tool]
    try:
        args = spec.args.model_validate(step.args).model_dump()
    except ValidationError as exc:
        return [f"args: {one_line(exc, whole='value')}"]
    errors = []
    if step.tool == "enrich_company" and args["domain"] != request.domain:
        errors.append(f"args: enriches {args['domain']!r}, not the request's {request.domain!r}")
    if step.tool == "post_slack_notice" and args["channel"] not in ("", request.slack_channel):
        errors.append(
            f"args: channel {args['channel']!r} is not the request's "
            f"({request.slack_channel or 'none'}); only the request or configuration picks it"
        )
    if step.tool == "create_jira_project" and args["template"]:
        errors.append("args: the Jira template comes from configuration; leave it empty")
    if step.tool not in ("enrich_company", "post_slack_notice"):
        # Free text may quote the request, but names no address, link or channel of its own.
        quoted = " ".join((request.company_name, request.contact_name, request.goal)).lower()
        for finding in guard.scan(guard.strings(args), request):
            if (
                finding["kind"] in ("email", "url", "channel")
                and finding["text"].lower() not in quoted
            ):
                errors.append(f"args: {finding['kind']} {finding['text']!r} is not the request's")
    return errors


def hostile_refusal(errors: Iterable[str]) -> bool:
    """Whether a plan or revision was refused for reaching beyond the request."""
    return any(_HOSTILE_REFUSAL.search(error) for error in errors)


def normalised(tool: str, args: dict[str, Any], request: OnboardingRequest) -> dict[str, Any]:
    """The args as the tool should get them: the model's Jira key and name made into ones Jira
    takes (a lowercase or too-long key is normalised, as the default plan's is, never a reason
    to refuse the plan); any other tool's args as they are."""
    if tool != "create_jira_project":
        return args
    fallback = jira_keys.readable_key(request.domain, request.company_name)
    return {
        **args,
        "key": jira_keys.plain_key(args.get("key"), fallback),
        "name": jira_keys.plain_name(args.get("name"), request.company_name),
    }


def revise(
    plan: Sequence[PlanStep], changes: Mapping[str, Mapping[str, Any]]
) -> tuple[PlanStep, ...]:
    """The plan with each changed step's args replaced."""
    return tuple(
        s.model_copy(update={"args": dict(changes[s.step_id])}) if s.step_id in changes else s
        for s in plan
    )


def _listed(
    answer: Mapping[str, Any], field: str, allowed: set[str]
) -> tuple[list[Any] | None, list[str]]:
    """The answer's list under `field` (None when it is not one), and the fields it has that
    it should not."""
    items = answer.get(field)
    return (items if isinstance(items, list) else None), _unexpected(answer, allowed, "the answer")


def _unexpected(answer: Mapping[str, Any], allowed: set[str], what: str) -> list[str]:
    extra = sorted(str(k) for k in answer if k not in allowed)
    return [f"{what}: unexpected fields {', '.join(extra)}"] if extra else []


def _cycle(by_id: Mapping[str, PlanStep]) -> list[str]:
    """A dependency cycle, as the step ids around it, or []."""
    state: dict[str, int] = {}  # 1: on the path, 2: done
    path: list[str] = []

    def visit(step_id: str) -> list[str]:
        state[step_id] = 1
        path.append(step_id)
        for dep in by_id[step_id].depends_on:
            if state.get(dep) == 1:
                return path[path.index(dep) :] + [dep]
            if dep in by_id and dep not in state:
                found = visit(dep)
                if found:
                    return found
        path.pop()
        state[step_id] = 2
        return []

    for step_id in by_id:
        if step_id not in state:
            found = visit(step_id)
            if found:
                return found
    return []


def _ancestors(step_id: str, by_id: Mapping[str, PlanStep]) -> set[str]:
    seen: set[str] = set()
    todo = list(by_id[step_id].depends_on)
    while todo:
        dep = todo.pop()
        if dep not in seen and dep in by_id:
            seen.add(dep)
            todo.extend(by_id[dep].depends_on)
    return seen

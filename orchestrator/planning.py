"""Plans: the default one, and the model's plans and revisions taken into the run."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import datetime

from pydantic import ValidationError

from orchestrator import reasoning
from orchestrator.reasoning import Deliberation
from shared import jira_keys
from shared.model import (
    Attention,
    Event,
    PlanStep,
    ReasoningSummary,
    RunState,
    StepOutcome,
    StepStatus,
)

ACTOR = "orchestrator"
OUTPUT_SUMMARY_CHARS = 160


def default_plan(run: RunState) -> tuple[PlanStep, ...]:
    """The onboarding without the model: enrich, then Jira and the draft, then email, Slack."""
    request = run.request
    return (
        PlanStep(step_id="enrich", tool="enrich_company", args={"domain": request.domain}),
        PlanStep(
            step_id="jira",
            tool="create_jira_project",
            args={
                "key": project_key(request.domain, request.company_name),
                "name": jira_keys.readable_name(request.company_name),
                "kickoff_issues": [
                    "Kickoff call with " + (request.contact_name or request.company_name),
                    "Confirm goals: " + request.goal[:120],
                    "Grant workspace access",
                ],
            },
            depends_on=("enrich",),
        ),
        PlanStep(step_id="draft", tool="draft_welcome_email", depends_on=("enrich",)),
        PlanStep(step_id="email", tool="send_welcome_email", depends_on=("draft",)),
        PlanStep(
            step_id="slack",
            tool="post_slack_notice",
            args={"channel": request.slack_channel},
            depends_on=("jira", "email"),
        ),
    )


def project_key(domain: str, company_name: str = "") -> str:
    """The plain Jira key the client's project is tried under first (acme.co.uk: ACME); the
    tool moves on to keys only this run makes when it is taken."""
    return jira_keys.readable_key(domain, company_name)


def deliberation_of(record: StepOutcome | None) -> Deliberation | None:
    """The model's checkpointed decision; None when there is none (or none readable: the
    default plan, unrevised, is always safe)."""
    if record is None or not record.ok:
        return None
    try:
        return Deliberation.model_validate(record.output)
    except ValidationError:
        return None


def summary_of(thought: Deliberation, source: str, note: str) -> ReasoningSummary:
    usage = thought.usage()
    return ReasoningSummary(
        key=thought.key,
        source=source,
        calls=len(thought.calls),
        note=note[:OUTPUT_SUMMARY_CHARS],
        llm_tokens=(usage.input_tokens + usage.output_tokens) if usage else 0,
        cost_usd=usage.cost_usd if usage else 0.0,
    )


def plan_events(
    run: RunState, thought: Deliberation, now: datetime, accepted: bool, late: list[str]
) -> list[Event]:
    """plan.proposed and plan.rejected for each answer, then plan.accepted or plan.fallback."""
    events = []
    for number, call in enumerate(thought.calls, start=1):
        if call.failure:
            continue  # no answer: the fallback's reason says why
        events.append(
            event(
                run,
                "plan.proposed",
                now,
                attempt=number,
                extra={
                    **(
                        {"steps": _outline(call.proposal)}
                        if call.proposal is not None
                        else {"answer": "none that could be read"}
                    ),
                    **({"usage": call.usage.model_dump()} if call.usage else {}),
                },
            )
        )
        if call.errors:
            events.append(
                event(run, "plan.rejected", now, attempt=number, errors=list(call.errors))
            )
    if accepted:
        events.append(
            event(
                run,
                "plan.accepted",
                now,
                attempt=len(thought.calls),
                steps=[f"{s.step_id}:{s.tool}" for s in thought.plan],
            )
        )
    else:
        reason = thought.reason if not late else "the model's plan no longer validates"
        events.append(
            event(
                run, "plan.fallback", now, reason=reason, extra={"errors": late} if late else None
            )
        )
    return events


# How the guard words a refusal of what would reach someone the request does not name (a
# recipient, channel, link or enrichment target): the mark of injected instructions.
_HOSTILE_REFUSAL = re.compile(r"not the request's|the channel cannot change")


def hostile_refusal(errors: Iterable[str]) -> bool:
    """Whether the guard refused a plan or revision for reaching beyond the request."""
    return any(_HOSTILE_REFUSAL.search(error) for error in errors)


def _outline(proposal: object) -> list[str] | str:
    """A proposed plan in a line: step:tool for each step it has, else the answer cut short."""
    steps = proposal.get("steps") if isinstance(proposal, dict) else None
    if isinstance(steps, list):
        return [
            f"{s.get('step_id', '?')}:{s.get('tool', '?')}" if isinstance(s, dict) else str(s)
            for s in steps
        ]
    return str(proposal)[:OUTPUT_SUMMARY_CHARS]


def adapt(
    run: RunState, step_id: str, outcomes: dict[str, StepOutcome], now: datetime
) -> tuple[RunState, list[Event]]:
    """Apply the revision the model proposed once `step_id` (enrichment) finished, if it
    still only changes steps not yet dispatched; record the guard's findings."""
    key = reasoning.adapt_key(step_id)
    thought = deliberation_of(outcomes.get(key))
    if thought is None:
        return run, []
    events: list[Event] = []
    if thought.findings:
        run, suspected = injection_suspected(run, thought.findings, now, step_id)
        events.append(suspected)
    for number, call in enumerate(thought.calls, start=1):
        if call.failure:
            continue
        events.append(
            event(
                run,
                "plan.revision_proposed",
                now,
                step_id,
                attempt=number,
                proposal=call.proposal,
                extra={"usage": call.usage.model_dump()} if call.usage else None,
            )
        )
        if call.errors:
            if hostile_refusal(call.errors):
                run = run.flagged(Attention.INJECTION_SUSPECTED)
            events.append(
                event(
                    run,
                    "plan.revision_rejected",
                    now,
                    step_id,
                    attempt=number,
                    errors=list(call.errors),
                )
            )
    pending = [s.step_id for s in run.plan if run.steps[s.step_id].status is StepStatus.PENDING]
    source, note = "kept", thought.reason or "no change"
    if thought.source == "model" and thought.changes:
        late = reasoning.check_revision(thought.changes, run.plan, pending, run.request)
        if late:
            note = "the revision no longer applies"
            events.append(event(run, "plan.kept", now, step_id, reason=note, errors=late))
        else:
            run = run.evolve(plan=reasoning.revise(run.plan, thought.changes))
            source, note = "model", "revised " + ", ".join(sorted(thought.changes))
            events.append(event(run, "plan.revised", now, step_id, changes=thought.changes))
    else:
        events.append(event(run, "plan.kept", now, step_id, reason=note))
    summaries = {**run.reasoning, key: summary_of(thought, source, note)}
    return run.evolve(reasoning=summaries), events


def injection_suspected(
    run: RunState, findings: Iterable[dict[str, str]], now: datetime, step_id: str | None = None
) -> tuple[RunState, Event]:
    """The run flagged for what the guard found in untrusted text, and the audit-trail line."""
    flagged = run.flagged(Attention.INJECTION_SUSPECTED)
    return flagged, event(
        flagged,
        "guard.injection_suspected",
        now,
        step_id,
        findings=list(findings),
        handling="quoted to the model as data; recipients, channels and tools come "
        "only from the request, the configuration and the registry",
    )


def request_findings(run: RunState) -> list[dict[str, str]]:
    """What in the request's own free text reads like instructions to the agent: the
    request is trusted for whom to write to, never for what the agent should do."""
    request = run.request
    texts = [
        ("request.company_name", request.company_name),
        ("request.contact_name", request.contact_name),
        ("request.goal", request.goal),
    ]
    return reasoning.scan(texts, request)


def event(
    run: RunState,
    kind: str,
    now: datetime,
    step_id: str | None = None,
    *,
    actor: str = ACTOR,
    extra: Mapping[str, object] | None = None,
    **detail: object,
) -> Event:
    """One line of the run's audit trail, written by the orchestrator unless `actor` says;
    `extra` adds details that are there only sometimes."""
    return Event(
        run_id=run.run_id,
        kind=kind,
        actor=actor,
        at=now,
        step_id=step_id,
        detail={**detail, **(extra or {})},
    )

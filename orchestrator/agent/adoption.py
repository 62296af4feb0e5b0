"""The model's checkpointed decisions taken into the run, pure: checked again, then in force
or refused, each step of it a line in the audit trail; and the guard's findings on the way.

`core.decide` calls these; the model was asked before (`asking.py`), never here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime

from orchestrator.agent import validation
from orchestrator.agent.checkpoint import PLAN_KEY, Deliberation, adapt_key, read_checkpoint
from orchestrator.audit import SUMMARY_CHARS, event
from orchestrator.planning import default_plan
from shared import guard
from shared.model import Attention, Event, ReasoningSummary, RunState, StepOutcome, StepStatus


def adopt_plan(
    run: RunState, ledger: Mapping[str, StepOutcome], now: datetime
) -> tuple[RunState, list[Event]]:
    """The run with its plan in force: the model's checkpointed plan when it still validates,
    else the default one; and the trail: what the guard found in the request, each answer
    proposed and refused, the plan accepted or the fallback, `run.planned`."""
    plan, source, events = default_plan(run), "default", []
    findings = request_findings(run)
    if findings:
        run, suspected = injection_suspected(run, findings, now)
        events.append(suspected)
    thought = read_checkpoint(ledger, PLAN_KEY)
    if thought is not None:
        # Checked again: what was valid when the model answered must still be (the registry
        # may have changed between a deploy and a redelivery).
        late = validation.check_plan(thought.plan, run.request) if thought.source == "model" else []
        accepted = thought.source == "model" and not late
        events += _plan_events(run, thought, now, accepted, late)
        if validation.hostile_refusal([*late, *(e for c in thought.calls for e in c.errors)]):
            run = run.flagged(Attention.INJECTION_SUSPECTED)
        if accepted:
            plan, source = thought.plan, "model"
        note = (
            f"accepted on attempt {len(thought.calls)}"
            if accepted
            else (thought.reason or "the plan no longer validates")
        )
        run = run.evolve(reasoning={**run.reasoning, PLAN_KEY: _summary(thought, source, note)})
    events.append(
        event(
            run, "run.planned", now, source=source, steps=[s.model_dump(mode="json") for s in plan]
        )
    )
    return run.evolve(plan=plan), events


def adopt_revision(
    run: RunState, step_id: str, ledger: Mapping[str, StepOutcome], now: datetime
) -> tuple[RunState, list[Event]]:
    """Apply the revision the model proposed once `step_id` (enrichment) finished, if it
    still only changes steps not yet dispatched; record the guard's findings."""
    key = adapt_key(step_id)
    thought = read_checkpoint(ledger, key)
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
            if validation.hostile_refusal(call.errors):
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
        late = validation.check_revision(thought.changes, run.plan, pending, run.request)
        if late:
            note = "the revision no longer applies"
            events.append(event(run, "plan.kept", now, step_id, reason=note, errors=late))
        else:
            run = run.evolve(plan=validation.revise(run.plan, thought.changes))
            source, note = "model", "revised " + ", ".join(sorted(thought.changes))
            events.append(event(run, "plan.revised", now, step_id, changes=thought.changes))
    else:
        events.append(event(run, "plan.kept", now, step_id, reason=note))
    summaries = {**run.reasoning, key: _summary(thought, source, note)}
    return run.evolve(reasoning=summaries), events


def request_findings(run: RunState) -> list[dict[str, str]]:
    """What in the request's own free text reads like instructions to the agent: the
    request is trusted for whom to write to, never for what the agent should do."""
    request = run.request
    texts = [
        ("request.company_name", request.company_name),
        ("request.contact_name", request.contact_name),
        ("request.goal", request.goal),
    ]
    return guard.scan(texts, request)


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


def _summary(thought: Deliberation, source: str, note: str) -> ReasoningSummary:
    usage = thought.usage()
    return ReasoningSummary(
        key=thought.key,
        source=source,
        calls=len(thought.calls),
        note=note[:SUMMARY_CHARS],
        llm_tokens=(usage.input_tokens + usage.output_tokens) if usage else 0,
        cost_usd=usage.cost_usd if usage else 0.0,
    )


def _plan_events(
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


def _outline(proposal: object) -> list[str] | str:
    """A proposed plan in a line: step:tool for each step it has, else the answer cut short."""
    steps = proposal.get("steps") if isinstance(proposal, dict) else None
    if isinstance(steps, list):
        return [
            f"{s.get('step_id', '?')}:{s.get('tool', '?')}" if isinstance(s, dict) else str(s)
            for s in steps
        ]
    return str(proposal)[:SUMMARY_CHARS]

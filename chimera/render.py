"""How people read runs in a terminal."""

from __future__ import annotations

from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from shared.model import (
    Attention,
    Event,
    RunState,
    RunStatus,
    StepStatus,
    Verification,
    VerificationStatus,
)

STATUS_STYLE = {
    RunStatus.SUCCEEDED: "bold green",
    RunStatus.PARKED: "bold yellow",
    RunStatus.CANCELLED: "dim",
    RunStatus.WAITING: "cyan",
    RunStatus.RUNNING: "blue",
    RunStatus.PENDING: "blue",
    StepStatus.SUCCEEDED: "green",
    StepStatus.FAILED: "red",
    StepStatus.DISPATCHED: "blue",
    StepStatus.PENDING: "dim",
    StepStatus.SKIPPED: "dim",
}


def styled(status: Any) -> Text:
    return Text(status.value, style=STATUS_STYLE.get(status, ""))


def steps_table(run: RunState, events: list[Event] | None = None) -> Table:
    """One row per step; a step still out shows its latest failed attempt, from `events`."""
    retries = {e.step_id: e for e in events or () if e.kind == "step.retry"}
    table = Table(box=None, pad_edge=False, show_edge=False)
    for column in ("step", "tool", "status", "attempts", "latency", "verified", "result"):
        table.add_column(column, no_wrap=column != "result")
    for plan_step in run.plan:
        step = run.steps[plan_step.step_id]
        result, attempts = step.output, str(step.attempts or "")
        if step.error:
            result = f"{step.error.code}: {step.error.message}"
        elif step.status is StepStatus.DISPATCHED and step.step_id in retries:
            retry = retries[step.step_id].detail
            attempts = str(retry.get("attempt", ""))
            result = f"retrying after {retry.get('code')}: {retry.get('message')}"
        table.add_row(
            step.step_id,
            step.tool,
            styled(step.status),
            attempts,
            f"{step.latency_ms} ms" if step.latency_ms is not None else "",
            verification_cell(step.verification),
            result,
        )
    return table


VERIFICATION_STYLE = {
    VerificationStatus.VERIFIED: "green",
    VerificationStatus.MISMATCH: "bold red",
    VerificationStatus.UNVERIFIABLE: "yellow",
    VerificationStatus.PENDING: "blue",
}


def verification_cell(verification: Verification | None) -> Text:
    """What the look at the vendor found (and the mismatches that re-ran the step); the
    reason is in the verification events of the timeline."""
    if verification is None:
        return Text("")
    text = Text(verification.status.value, style=VERIFICATION_STYLE[verification.status])
    if verification.mismatches:
        repaired = verification.status is not VerificationStatus.MISMATCH
        text.append(
            f" ({verification.mismatches} mismatch{'es' if verification.mismatches > 1 else ''}"
            f"{', re-run' if repaired else ''})",
            style="dim",
        )
    return text


def run_header(run: RunState) -> Text:
    text = Text()
    text.append(f"{run.run_id}  ", style="bold")
    text.append_text(styled(run.status))
    text.append(f"  {run.request.company_name} ({run.request.domain})")
    if run.reason:
        text.append(f"\nreason: {run.reason}", style="yellow")
    if run.attention:
        text.append(
            f"\nattention: {', '.join(run.attention)}"
            f"  (the guard and verification events below say why;"
            f" chimera runs list --attention FLAG)",
            style="bold magenta",
        )
    pending = [
        s.step_id
        for s in run.steps.values()
        if s.verification and s.verification.status is VerificationStatus.PENDING
    ]
    if pending and not run.status.terminal:
        text.append(f"\nverifying: {', '.join(pending)}", style="blue")
    approval = run.approval
    if approval and approval.status == "waiting" and not run.status.terminal:
        text.append(
            f'\nawaiting approval: the draft "{approval.subject}" ({approval.step_id} is held)'
            f"\n  chimera runs approve {run.run_id}"
            f"\n  chimera runs reject {run.run_id} --reason TEXT",
            style="bold cyan",
        )
    elif approval and approval.status in ("approved", "rejected"):
        text.append(
            f"\n{approval.step_id} {approval.status} by {approval.actor}"
            + (f": {approval.reason}" if approval.reason else ""),
            style="cyan",
        )
    totals = run.totals
    text.append(
        f"\n{totals.steps_succeeded}/{totals.steps} steps, {totals.attempts} attempts, "
        f"{totals.llm_tokens} LLM tokens, ${totals.cost_usd:.6f}",
        style="dim",
    )
    return text


def reasoning_table(run: RunState) -> Table:
    """The model's decisions about the run: whose is in force, what each cost."""
    table = Table(box=None, pad_edge=False, show_edge=False)
    for column in ("decision", "source", "calls", "tokens", "cost", "note"):
        table.add_column(column, no_wrap=column != "note")
    for summary in run.reasoning.values():
        table.add_row(
            summary.key,
            summary.source,
            str(summary.calls),
            str(summary.llm_tokens),
            f"${summary.cost_usd:.6f}",
            summary.note,
        )
    return table


def live_view(run: RunState, events: list[Event] | None = None) -> Group:
    return Group(run_header(run), steps_table(run, events))


def timeline(run: RunState, events: list[Event]) -> Group:
    table = Table(box=None, pad_edge=False, show_edge=False, title="timeline", title_justify="left")
    for column in ("time", "actor", "event", "step", "detail"):
        table.add_column(column, no_wrap=column != "detail")
    start = events[0].at if events else run.created_at
    for event in events:
        offset = (event.at - start).total_seconds() * 1000
        table.add_row(
            f"+{offset:8.1f} ms", event.actor, event.kind, event.step_id or "", _detail(event)
        )
    parts: list[RenderableType] = [run_header(run), Text(""), steps_table(run, events), Text("")]
    if run.reasoning:
        parts += [reasoning_table(run), Text("")]
    return Group(*parts, table)


def _detail(event: Event) -> str:
    d = event.detail
    if event.kind.startswith("verification."):
        return _verification_detail(event.kind, d)
    if "error" in d and isinstance(d["error"], dict):
        return f"{d['error'].get('code')}: {d['error'].get('message')}"
    if "code" in d and "message" in d:
        return f"attempt {d.get('attempt', '?')}: {d['code']}: {d['message']}"
    if "summary" in d:
        return f"{d['summary']} ({d.get('attempts')} attempts, {d.get('latency_ms')} ms)"
    if isinstance(d.get("reasons"), list):  # a guard's refusal
        return f"attempt {d.get('attempt', '?')}: " + "; ".join(str(r) for r in d["reasons"])[:400]
    if "reason" in d:
        return str(d["reason"]) + (f" ({'; '.join(d['errors'])})" if d.get("errors") else "")
    if isinstance(d.get("proposal"), dict):
        proposal = d["proposal"]
        changes = proposal.get("changes") or []
        changed = ", ".join(str(c.get("step_id")) for c in changes if isinstance(c, dict))
        return f"changes {changed or 'none'}: {proposal.get('rationale', '')}"[:400]
    if "errors" in d and isinstance(d["errors"], list):
        return "; ".join(str(e) for e in d["errors"])[:400]
    if "findings" in d and isinstance(d["findings"], list):
        return "; ".join(f"{f.get('kind')} {f.get('text')!r}" for f in d["findings"])[:400]
    if "subject" in d:
        return f'"{d["subject"]}"'
    if "changes" in d and isinstance(d["changes"], dict):
        return ", ".join(f"{step}: {args}" for step, args in d["changes"].items())[:400]
    if "steps" in d and isinstance(d["steps"], list):
        return " -> ".join(s["step_id"] if isinstance(s, dict) else str(s) for s in d["steps"])
    return ", ".join(f"{k}={v}" for k, v in d.items())[:160]


def _verification_detail(kind: str, d: dict[str, Any]) -> str:
    text = f"generation {d.get('generation', '?')}"
    if kind == "verification.retry":
        return f"{text}, attempt {d.get('attempt', '?')}: {d.get('code')}: {d.get('message')}"
    if d.get("reason"):
        text += f": {d['reason']}"
    if d.get("repair_generation"):
        text += f"; re-run as generation {d['repair_generation']}"
    if d.get("mismatches"):
        text += f"; {d['mismatches']} mismatches, flagged"
    return text


def runs_table(runs: list[RunState]) -> Table:
    table = Table(box=None, pad_edge=False, show_edge=False)
    for column in ("run", "status", "company", "steps", "attempts"):
        table.add_column(column)
    # One flag a line, never cut: it is what an operator scans the list for.
    table.add_column("attention", min_width=max(len(a) for a in Attention), overflow="fold")
    table.add_column("created")
    for run in runs:
        table.add_row(
            run.run_id,
            styled(run.status),
            run.request.company_name,
            f"{run.totals.steps_succeeded}/{run.totals.steps}",
            str(run.totals.attempts),
            Text("\n".join(run.attention), style="magenta"),
            run.created_at.strftime("%Y-%m-%d %H:%M:%S"),
        )
    return table

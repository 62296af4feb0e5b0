"""How people read runs in a terminal."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.table import Table
from rich.text import Text

from shared.model import (
    Event,
    RunState,
    RunStatus,
    StepStatus,
    Verification,
    VerificationStatus,
    utcnow,
)
from shared.retry_outlook import RetryOutlook

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


class ByWidth:
    """A renderable laid out for the width it is given (a terminal's, or a test's)."""

    def __init__(self, build: Callable[[int], RenderableType]) -> None:
        self.build = build

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield self.build(options.max_width)


# From this width on, the steps table also names each step's tool (the step id says most).
WIDE_STEPS_TABLE = 120


def steps_table(
    run: RunState, events: list[Event] | None = None, now: datetime | None = None
) -> ByWidth:
    """One row per step; a step still out shows its latest failed attempt, from `events`, and
    when (seen from `now`) the next one comes and the step gives up."""
    return ByWidth(lambda width: _steps_table(run, events, now, wide=width >= WIDE_STEPS_TABLE))


def _steps_table(
    run: RunState, events: list[Event] | None, now: datetime | None, *, wide: bool
) -> Table:
    retries = {e.step_id: e for e in events or () if e.kind == "step.retry"}
    table = Table(box=None, pad_edge=False, show_edge=False)
    columns = ("step", "tool", "status", "attempts", "latency", "verified", "result")
    for column in columns if wide else (c for c in columns if c != "tool"):
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
            outlook = RetryOutlook.from_detail(retry)
            if outlook is not None:
                attempts = f"{outlook.attempt}/{outlook.max_attempts}"
                result += "\n" + outlook.says(now or utcnow())
        table.add_row(
            step.step_id,
            *((step.tool,) if wide else ()),
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


def live_view(
    run: RunState, events: list[Event] | None = None, now: datetime | None = None
) -> Group:
    return Group(run_header(run), steps_table(run, events, now))


def event_line(event: Event) -> str:
    """One event as one plain line (time UTC, step, kind, detail), for a log or a pipe."""
    outlook = RetryOutlook.from_detail(event.detail) if event.kind == "step.retry" else None
    if outlook is not None:  # seen from when it was written: the line stays true in a log
        detail = f"{event.detail.get('code')}: {event.detail.get('message')}; "
        detail += outlook.says(event.at)
    else:
        detail = _detail(event)
    at = f"{event.at:%H:%M:%S}.{event.at.microsecond // 1000:03d}"
    line = f"{at}  {event.step_id or '-':<6}  {event.kind:<17}  {' '.join(detail.split())}"
    return line.rstrip()


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


def id_column(table: Table, header: str, ids: list[str]) -> None:
    """A column that shows ids whole: as wide as the widest, and never the one that shrinks
    (rich narrows columns that may wrap first; the others here do, with ellipsis or folding)."""
    width = max((cell_len(i) for i in ids), default=0)
    table.add_column(header, width=max(width, cell_len(header)), no_wrap=True, overflow="fold")


# From this width on, the runs list also has each run's steps and attempts, and the year.
WIDE_RUNS_TABLE = 110


def runs_table(runs: list[RunState]) -> ByWidth:
    """The runs list: at 80 columns every run id is whole, the company is cut with an
    ellipsis and the attention flags fold, one flag a line."""
    return ByWidth(lambda width: _runs_table(runs, width))


def _runs_table(runs: list[RunState], width: int) -> Table:
    wide = width >= WIDE_RUNS_TABLE
    headers = ["run", "status", *(("steps", "attempts") if wide else ())]
    headers += ["company", "attention", "created (UTC)" if wide else "created"]
    rows = [_run_row(run, wide) for run in runs]
    widest = [
        max([cell_len(h), *(_cell_width(row[i]) for row in rows)]) for i, h in enumerate(headers)
    ]
    # The company and the flags share what the other columns leave (two spaces apart).
    left = width - 2 * (len(headers) - 1) - sum(widest) + widest[-3] + widest[-2]
    company, attention = _share(left, widest[-3], widest[-2])
    table = Table(box=None, pad_edge=False, show_edge=False)
    id_column(table, "run", [r.run_id for r in runs])
    for header in headers[1:-3]:
        table.add_column(header, no_wrap=True)
    table.add_column("company", overflow="ellipsis", width=company)
    table.add_column("attention", overflow="fold", width=attention)
    table.add_column(headers[-1], no_wrap=True)
    for row in rows:
        table.add_row(*row)
    return table


def _run_row(run: RunState, wide: bool) -> list[Any]:
    totals = run.totals
    counts = [f"{totals.steps_succeeded}/{totals.steps}", str(totals.attempts)]
    return [
        run.run_id,
        styled(run.status),
        *(counts if wide else ()),
        Text(run.request.company_name, overflow="ellipsis", no_wrap=True),
        Text("\n".join(run.attention), style="magenta"),
        run.created_at.strftime("%Y-%m-%d %H:%M" if wide else "%m-%d %H:%M"),
    ]


def _cell_width(cell: str | Text) -> int:
    text = cell.plain if isinstance(cell, Text) else cell
    return max(cell_len(line) for line in text.split("\n"))


# The company keeps at least this much (or a third of the room) when the flags need it.
COMPANY_MIN = 10


def _share(left: int, company: int, attention: int) -> tuple[int | None, int | None]:
    """The company's and the flags' widths in `left` cells: what they need when it fits
    (None: as measured), else the flags as whole as the company's share lets them be."""
    if company + attention <= left or left < 2:
        return None, None
    kept = min(company, max(COMPANY_MIN, left - attention, left // 3))
    flags = max(1, min(attention, left - kept))
    return max(1, left - flags), flags


def records_table(records: list[dict[str, Any]]) -> Table:
    """`chimera sandbox records`: every call the vendors got, run ids whole at 80 columns."""
    table = Table(box=None, pad_edge=False, show_edge=False)
    table.add_column("at", no_wrap=True)
    table.add_column("vendor", overflow="ellipsis")
    table.add_column("action", overflow="fold")
    table.add_column("status", no_wrap=True)
    id_column(table, "run", [r.get("run_id") or "" for r in records])
    table.add_column("fault", overflow="fold")
    for r in records:
        table.add_row(
            _clock(str(r["at"])),
            r["vendor"],
            r["action"],
            str(r["status"]),
            r.get("run_id") or "",
            r.get("fault") or "",
        )
    return table


def _clock(at: str) -> str:
    """A record's time, short: month, day and time to the second, UTC."""
    try:
        return f"{datetime.fromisoformat(at):%m-%d %H:%M:%S}"
    except ValueError:
        return at

"""What the pages show, gathered from the store: the runs list's filter read from a query
string, and a run's page (its waterfall, its model decisions, its events, its costs)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from chimera.console import waterfall
from orchestrator.agent.checkpoint import read_checkpoint
from shared.model import Attention, Event, RunState, RunStatus, StepOutcome
from shared.registry import TOOLS
from shared.run_filter import RunFilter
from shared.runtime import Runtime
from shared.validation_errors import one_line

PAGE_SIZE = 50
FILTER_FIELDS = ("status", "tool", "attention", "after", "before", "q")


def tool_choices() -> list[str]:
    """Every tool, then every function (the filter takes both)."""
    return [*TOOLS, *sorted({spec.function for spec in TOOLS.values()})]


def attention_choices() -> list[str]:
    return [a.value for a in Attention]


def _time(value: str) -> datetime | None:
    """A time from a form (`2026-05-01T09:30`, or with seconds or an offset); UTC unless it
    says otherwise."""
    if not value:
        return None
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@dataclass(frozen=True)
class ListQuery:
    """The runs list's query string, as given (for the form) and as a filter."""

    given: dict[str, str]
    page: int
    filter: RunFilter | None
    problem: str = ""

    def link(self, **changes: Any) -> str:
        """This list's query string with `changes` (None drops a field)."""
        from urllib.parse import urlencode

        fields = {**self.given, "page": str(self.page), **changes}
        kept = {k: str(v) for k, v in fields.items() if v not in (None, "", "0", 0)}
        return "?" + urlencode(kept) if kept else "?"


def list_query(args: Mapping[str, str]) -> ListQuery:
    given = {k: str(args.get(k, "")).strip() for k in FILTER_FIELDS if args.get(k)}
    try:
        page = max(0, int(args.get("page", "0") or 0))
    except ValueError:
        page = 0
    try:
        query = RunFilter(
            status=RunStatus(given["status"]) if given.get("status") else None,
            tool=given.get("tool"),
            attention=given.get("attention") or None,
            created_after=_time(given.get("after", "")),
            created_before=_time(given.get("before", "")),
            search=given.get("q"),
            # One more than a page: whether there is a next one.
            limit=PAGE_SIZE + 1,
            offset=page * PAGE_SIZE,
        )
    except ValidationError as exc:
        return ListQuery(given, page, None, one_line(exc, whole="filter"))
    except ValueError as exc:
        return ListQuery(given, page, None, str(exc))
    return ListQuery(given, page, query)


@dataclass(frozen=True)
class CallView:
    at: datetime
    outcome: str  # accepted, refused: reasons, failed: why
    tokens: int
    cost_usd: float


@dataclass(frozen=True)
class DecisionView:
    key: str
    source: str  # model, default, kept
    note: str
    tokens: int
    cost_usd: float
    calls: list[CallView]


def decisions(run: RunState, ledger: Mapping[str, StepOutcome]) -> list[DecisionView]:
    """Each decision the model was asked for, with whose is in force and what became of each
    of its answers (from the checkpoint in the ledger)."""
    views = []
    for key, summary in run.reasoning.items():
        thought = read_checkpoint(ledger, key)
        calls = []
        for call in thought.calls if thought is not None else ():
            if call.failure:
                outcome = f"failed: {call.failure}"
            elif call.errors:
                outcome = "refused: " + "; ".join(call.errors)
            else:
                outcome = "accepted" if summary.source == "model" else "answered"
            usage = call.usage
            tokens = usage.input_tokens + usage.output_tokens if usage else 0
            calls.append(CallView(call.at, outcome, tokens, usage.cost_usd if usage else 0.0))
        views.append(
            DecisionView(
                key, summary.source, summary.note, summary.llm_tokens, summary.cost_usd, calls
            )
        )
    return views


def trace_of(rt: Runtime, run: RunState) -> tuple[str, str]:
    """The run's trace id and, when settings name a trace viewer, its link ("" when none)."""
    trace_id, template = run.trace_id, rt.settings.trace_url
    link = template.replace("{trace_id}", trace_id) if trace_id and template else ""
    return trace_id, link


def compact(detail: Mapping[str, Any]) -> str:
    return json.dumps(detail, ensure_ascii=False, separators=(", ", ": "), default=str)


@dataclass(frozen=True)
class RunPage:
    run: RunState
    events: list[Event]
    waterfall: waterfall.Waterfall
    outlooks: dict[str, str]  # step id -> the outlook's sentence
    decisions: list[DecisionView]
    trace_id: str
    trace_link: str
    mark: str


def mark_text(mark: tuple[int, str] | None) -> str:
    return "" if mark is None else f"{mark[0]}:{mark[1]}"


def run_page(rt: Runtime, run: RunState, now: datetime) -> RunPage:
    store = rt.store
    # The mark first: a change between it and the reads below shows at the next poll.
    mark = mark_text(store.change_mark(run.run_id))
    run = store.load(run.run_id) or run
    events = store.events(run.run_id)
    ledger = store.outcomes(run.run_id) if run.reasoning else {}
    falls = waterfall.build(run, events, now)
    outlooks = {step: o.says(now) for step, o in falls.outlooks.items()}
    trace_id, link = trace_of(rt, run)
    return RunPage(run, events, falls, outlooks, decisions(run, ledger), trace_id, link, mark)

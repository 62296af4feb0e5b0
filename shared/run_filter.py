"""Which runs a list shows: the filter every store answers, and what it means on one run.

`RunFilter.matches` is the meaning; each store answers the same filter with its own query
(shared/sqlite_queries.py, shared/firestore_queries.py, the fake in tests/fakes.py).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable
from datetime import datetime

from pydantic import Field, field_validator

from shared.model import ATTENTION_RE, Model, RunState, RunStatus, StepStatus
from shared.registry import TOOLS

# Steps that name what a run is at now: the one out at a tool, or the one it parked on.
CURRENT_STEP = frozenset({StepStatus.DISPATCHED, StepStatus.FAILED})
# A search is a business key or a run id, never a document.
SEARCH_CHARS = 200


def folded(text: str) -> str:
    """`text` as searches compare it: NFC, case-folded, trimmed."""
    return unicodedata.normalize("NFC", text).casefold().strip()


def business_keys(run: RunState) -> tuple[str, ...]:
    """What an operator searches a run by, folded: company, domain, contact email, request id."""
    request = run.request
    keys = (request.company_name, request.domain, request.contact_email, request.request_id or "")
    return tuple(folded(k) for k in keys if k)


def current_tools(run: RunState) -> tuple[str, ...]:
    """The tools (and their functions) of the run's current steps, dispatched or failed, sorted."""
    names: set[str] = set()
    for step in run.steps.values():
        if step.status in CURRENT_STEP:
            names.add(step.tool)
            spec = TOOLS.get(step.tool)
            if spec is not None:
                names.add(spec.function)
    return tuple(sorted(names))


class RunFilter(Model):
    """A page of runs, newest first (created_at, then run id, descending)."""

    status: RunStatus | None = None
    # Only runs carrying this attention flag (RunState.attention).
    attention: str | None = Field(default=None, pattern=ATTENTION_RE.pattern)
    # Only runs whose current step (dispatched or failed) is this tool, or runs on this
    # function: `create_jira_project` and `jira` both work.
    tool: str | None = Field(default=None, min_length=1, max_length=80)
    # Created at or after `created_after`, and before `created_before`.
    created_after: datetime | None = None
    created_before: datetime | None = None
    # A business key, or part of one (company, domain, contact email, request id), or a run
    # id's prefix; compared folded. Firestore matches whole keys and words only.
    search: str | None = Field(default=None, max_length=SEARCH_CHARS)
    limit: int = Field(default=50, ge=1, le=1000)
    offset: int = Field(default=0, ge=0, le=100_000)

    @field_validator("search", "tool", mode="before")
    @classmethod
    def _blank_is_none(cls, value: object) -> object:
        if isinstance(value, str):
            value = value.strip()
            return value or None
        return value

    @property
    def needle(self) -> str:
        return folded(self.search or "")

    def matches(self, run: RunState) -> bool:
        """Whether `run` passes the filter's conditions (paging aside)."""
        return (
            self.status in (None, run.status)
            and (self.attention is None or self.attention in run.attention)
            and (self.tool is None or self.tool in current_tools(run))
            and (self.created_after is None or run.created_at >= self.created_after)
            and (self.created_before is None or run.created_at < self.created_before)
            and (not self.needle or self.found_in(run))
        )

    def found_in(self, run: RunState) -> bool:
        """Whether the search finds `run`: in a business key, or as its run id's prefix."""
        needle = self.needle
        return run.run_id.startswith(self.search or "") or any(
            needle in key for key in business_keys(run)
        )

    def without_status(self) -> RunFilter:
        """The same conditions for every status: what the counts per status count."""
        return self.model_copy(update={"status": None, "offset": 0})

    def page(self, runs: Iterable[RunState]) -> list[RunState]:
        """This filter's page of `runs`, which are newest first and already match."""
        return list(runs)[self.offset : self.offset + self.limit]


def newest_first(runs: Iterable[RunState]) -> list[RunState]:
    return sorted(runs, key=lambda r: (r.created_at, r.run_id), reverse=True)


def status_counts(runs: Iterable[RunState]) -> dict[str, int]:
    """Runs per status, every status listed (zero when none)."""
    counts = {status.value: 0 for status in RunStatus}
    for run in runs:
        counts[run.status.value] += 1
    return counts

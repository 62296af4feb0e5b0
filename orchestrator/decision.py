"""What a decision is: the next run, its audit-trail lines, and the tasks it emits."""

from __future__ import annotations

from dataclasses import dataclass, field

from shared.model import Event, RunState, ToolTask, VerificationCall


@dataclass(frozen=True)
class Decision:
    """The next run document, its audit-trail lines, the tool tasks and verifications to
    dispatch (each a reference to a step: the tool reads what it needs from the store), and the
    steps whose ledger outcome is forgotten first (re-run steps)."""

    run: RunState
    events: list[Event] = field(default_factory=list)
    calls: list[ToolTask] = field(default_factory=list)
    changed: bool = True
    verifications: list[VerificationCall] = field(default_factory=list)
    forget: list[str] = field(default_factory=list)


def unchanged(run: RunState) -> Decision:
    return Decision(run=run, changed=False)

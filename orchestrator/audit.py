"""The run's audit trail: one line per thing that happened to a run, and who made it happen."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from shared.model import Event, RunState

ACTOR = "orchestrator"
# How much of a step's (or a model decision's) summary the run document and its trail keep.
SUMMARY_CHARS = 160


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

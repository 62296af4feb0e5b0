"""Bounded history: which finished runs retention removes, and how a long streak of retries is
folded into one event, so that the state stays small however long Chimera runs."""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Generic, TypeVar

from shared.model import Event, RunState
from shared.state import Pruned, StateStore

K = TypeVar("K", bound=Hashable)

RETRY = "step.retry"
# One per step: the retries folded so far (count, first and last time, codes seen).
RETRIES_FOLDED = "step.retries"
# Events a run's log holds before its older retries are folded (CHIMERA_EVENT_LOG_CAP).
EVENT_LOG_CAP = 200
# Below this a run's own steps would trip it: 5 steps, each dispatched and finished, and the
# model's decisions.
MIN_EVENT_LOG_CAP = 20
# Finished runs removed per write transaction: each takes its events, ledger and tasks along,
# so a batch holds the write lock for milliseconds (bench/history.py measures it).
PRUNE_BATCH = 50


def prunable(run: RunState, older_than: datetime) -> bool:
    """Whether retention removes `run`: finished (succeeded or cancelled) and last changed
    before `older_than`. Parked, waiting, pending and running runs never are, however old."""
    return run.status.terminal and run.updated_at < older_than


def expiry(run: RunState, retention: timedelta | None) -> datetime | None:
    """When a finished run's records may go (Firestore's `expire_at`): `retention` after its
    last change. None while it is not finished, or when history is kept forever."""
    if retention is None or not run.status.terminal:
        return None
    return run.updated_at + retention


def prune_finished(
    store: StateStore, older_than: datetime, *, dry_run: bool = False, batch: int = PRUNE_BATCH
) -> Pruned:
    """Every finished run last changed before `older_than`, with its records: removed batch by
    batch (each its own short transaction), or with `dry_run` only counted."""
    if dry_run:
        return store.prune(older_than, dry_run=True)
    total = Pruned()
    while True:
        pruned = store.prune(older_than, limit=batch)
        total += pruned
        if len(pruned.run_ids) < batch:
            return total


@dataclass(frozen=True)
class Folding(Generic[K]):
    """What folding does to a run's log, by the store's own keys for its events: summaries to
    write (in place of an existing event) and events to delete."""

    writes: dict[K, Event] = field(default_factory=dict)
    deletes: tuple[K, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.writes or self.deletes)


def fold_retries(events: Sequence[tuple[K, Event]]) -> Folding[K]:
    """Per step, every retry but the newest folded into the step's one summary event.

    `events` are a run's, oldest first, each with its key in the store; events of other kinds
    are left alone. The summary takes the place of the step's existing summary, or else of the
    first retry folded, so the log keeps its order; the newest retry stays as it was (the live
    view shows it). Folding a folded log changes nothing.
    """
    retries: dict[str, list[tuple[int, K, Event]]] = {}
    summaries: dict[str, list[tuple[int, K, Event]]] = {}
    for position, (key, event) in enumerate(events):
        if event.step_id is None:
            continue
        if event.kind == RETRY:
            retries.setdefault(event.step_id, []).append((position, key, event))
        elif event.kind == RETRIES_FOLDED:
            summaries.setdefault(event.step_id, []).append((position, key, event))
    writes: dict[K, Event] = {}
    deletes: list[K] = []
    for step_id in sorted(retries.keys() | summaries.keys()):
        folded = sorted(summaries.get(step_id, []) + retries.get(step_id, [])[:-1])
        if not folded or (len(folded) == 1 and folded[0][2].kind == RETRIES_FOLDED):
            continue  # nothing new to fold
        writes[folded[0][1]] = _summary([event for _, _, event in folded])
        deletes += [key for _, key, _ in folded[1:]]
    return Folding(writes, tuple(deletes))


def _summary(events: Sequence[Event]) -> Event:
    """One event standing for `events` (retries, and summaries of earlier ones) of one step."""
    count, codes = 0, Counter[str]()
    first_at, last_at = min(e.at for e in events), max(e.at for e in events)
    attempts: list[int] = []
    for event in events:
        seen = event.detail
        if event.kind == RETRIES_FOLDED:
            count += int(seen.get("count", 0))
            codes.update({str(k): int(v) for k, v in dict(seen.get("codes") or {}).items()})
            first_at = min(first_at, _when(seen.get("first_at"), first_at))
            last_at = max(last_at, _when(seen.get("last_at"), last_at))
            attempts += [a for a in (seen.get("first_attempt"), seen.get("last_attempt")) if a]
        else:
            count += 1
            codes[str(seen.get("code") or "unknown")] += 1
            if isinstance(seen.get("attempt"), int):
                attempts.append(seen["attempt"])
    first = events[0]
    detail: dict[str, Any] = {
        "count": count,
        "first_at": first_at.isoformat(),
        "last_at": last_at.isoformat(),
        "codes": dict(sorted(codes.items())),
    }
    if attempts:
        detail |= {"first_attempt": min(attempts), "last_attempt": max(attempts)}
    return Event(
        run_id=first.run_id,
        kind=RETRIES_FOLDED,
        actor=first.actor,
        at=first_at,
        step_id=first.step_id,
        detail=detail,
    )


def _when(value: Any, default: datetime) -> datetime:
    try:
        return datetime.fromisoformat(str(value))
    except ValueError:
        return default

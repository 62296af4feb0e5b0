"""Following a run as it moves, from the store: a live view on a terminal, one plain line per
event anywhere else (a pipe, CI), so that a log shows the run as it goes, not at its end."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from rich.console import Console, Group
from rich.live import Live
from rich.text import Text

from chimera import render
from shared.model import Event, RunState, RunStatus, StepStatus, utcnow
from shared.state import StateStore

# How often the store is read while following: the embedded SQLite store answers in well
# under a millisecond; Firestore bills each read, so a remote store is read less often.
LOCAL_POLL_S = 0.1
REMOTE_POLL_S = 1.0


def awaits_approval(run: RunState) -> bool:
    return (
        run.status is RunStatus.WAITING
        and run.approval is not None
        and run.approval.status == "waiting"
    )


def settled(run: RunState) -> bool:
    """Nothing more happens without a person: over, parked, or waiting with nothing out."""
    if run.status.terminal or run.status is RunStatus.PARKED:
        return True
    return awaits_approval(run) and not any(
        s.status is StepStatus.DISPATCHED for s in run.steps.values()
    )


@dataclass
class NewEvents:
    """The events of a run not shown yet. Keyed by content, not position: past the event cap
    the store folds older retries into one summary, so positions move (an updated summary is
    new and shown again)."""

    seen: set[str] = field(default_factory=set)

    def __call__(self, events: list[Event]) -> list[Event]:
        new = [e for e in events if e.model_dump_json() not in self.seen]
        self.seen.update(e.model_dump_json() for e in new)
        return new


@dataclass
class Follower:
    """Reads a run from `store` until it settles (or `timeout_s` passes) and shows it on
    `console` as it moves; `follow` answers the run as last read."""

    store: StateStore
    console: Console
    poll_s: float = LOCAL_POLL_S
    timeout_s: float | None = None
    hint: str = ""  # a last line under the live view (e.g. how to stop following)
    sleep: Callable[[float], None] = time.sleep

    def follow(self, run_id: str) -> RunState:
        run = self.store.load(run_id)
        if run is None:
            raise LookupError(f"no run {run_id}")
        if self.console.is_terminal:
            return self._live(run)
        return self._lines(run)

    def _moved(self, run: RunState) -> tuple[RunState, list[Event]]:
        return self.store.load(run.run_id) or run, self.store.events(run.run_id)

    def _going_on(self, run: RunState, started: float) -> bool:
        timed_out = self.timeout_s is not None and time.monotonic() - started > self.timeout_s
        return not settled(run) and not timed_out

    def _live(self, run: RunState) -> RunState:
        started = time.monotonic()
        events = self.store.events(run.run_id)
        with Live(
            self._view(run, events), console=self.console, refresh_per_second=4, transient=True
        ) as live:
            while self._going_on(run, started):
                self.sleep(self.poll_s)
                run, events = self._moved(run)
                # Redrawn each read, so that "next attempt in 4 s" counts down.
                live.update(self._view(run, events), refresh=True)
        return run

    def _view(self, run: RunState, events: list[Event]) -> Group:
        view = render.live_view(run, events, utcnow())
        return Group(view, Text(self.hint, style="dim")) if self.hint else view

    def _lines(self, run: RunState) -> RunState:
        started = time.monotonic()
        new_events = NewEvents()
        while True:
            for event in new_events(self.store.events(run.run_id)):
                # Whole lines, never wrapped at the console's width: a log keeps one per event.
                self.console.print(
                    render.event_line(event), markup=False, highlight=False, soft_wrap=True
                )
            if not self._going_on(run, started):
                return run
            self.sleep(self.poll_s)
            run = self.store.load(run.run_id) or run


def poll_interval(state_location: str) -> float:
    return LOCAL_POLL_S if state_location.startswith("sqlite:") else REMOTE_POLL_S

"""A run's waterfall: one bar per step and per attempt, each split into queued (dispatched until
the attempt started), running, and waiting for backoff (a failed attempt until the next), read
from the run's events and its step summaries. Pure: the page renders what this returns."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from shared.history import RETRIES_FOLDED, RETRY
from shared.model import Event, RunState, StepStatus, StepSummary
from shared.retry_outlook import RetryOutlook

QUEUED, RUNNING, WAITING, FOLDED = "queued", "running", "waiting", "folded"


@dataclass(frozen=True)
class Segment:
    kind: str  # queued, running, waiting (for backoff), folded (earlier retries, summarised)
    start: datetime
    end: datetime

    @property
    def seconds(self) -> float:
        return max(0.0, (self.end - self.start).total_seconds())


@dataclass
class Bar:
    """One attempt of one generation of a step (or the earlier attempts folded into one)."""

    step_id: str
    tool: str
    generation: int
    attempt: str  # "1", "2", or "3-17" for folded retries
    outcome: str  # what became of it, in words
    segments: list[Segment] = field(default_factory=list)

    @property
    def start(self) -> datetime:
        return self.segments[0].start

    @property
    def end(self) -> datetime:
        return self.segments[-1].end

    def label(self) -> str:
        parts = [f"{s.kind} {_seconds(s.seconds)}" for s in self.segments]
        return (
            f"{self.step_id} (generation {self.generation}) attempt {self.attempt}: "
            f"{self.outcome}; " + ", ".join(parts)
        )


@dataclass(frozen=True)
class Waterfall:
    bars: list[Bar]
    start: datetime
    end: datetime
    # The live outlook of each step waiting for its next attempt, by step id.
    outlooks: dict[str, RetryOutlook]

    def left(self, at: datetime) -> float:
        """Where `at` falls on the run's span, in percent."""
        span = (self.end - self.start).total_seconds() or 1.0
        return round(100 * max(0.0, (at - self.start).total_seconds()) / span, 3)

    def width(self, segment: Segment) -> float:
        span = (self.end - self.start).total_seconds() or 1.0
        return round(max(0.15, 100 * segment.seconds / span), 3)


def _seconds(value: float) -> str:
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.1f} s"


def _when(value: object) -> datetime | None:
    try:
        return datetime.fromisoformat(str(value))
    except ValueError:
        return None


@dataclass
class _Generation:
    step_id: str
    tool: str
    number: int
    dispatched_at: datetime
    retries: list[Event] = field(default_factory=list)
    folded: list[Event] = field(default_factory=list)
    finished: Event | None = None


def _generations(run: RunState, events: Sequence[Event]) -> list[_Generation]:
    current: dict[str, _Generation] = {}
    every: list[_Generation] = []
    for event in events:
        step_id = event.step_id
        if step_id is None:
            continue
        if event.kind == "step.dispatched":
            tool = str(event.detail.get("tool") or run.steps.get(step_id, _none(step_id)).tool)
            number = int(event.detail.get("generation") or 1)
            current[step_id] = _Generation(step_id, tool, number, event.at)
            every.append(current[step_id])
        elif step_id in current:
            generation = current[step_id]
            if event.kind == RETRY:
                generation.retries.append(event)
            elif event.kind == RETRIES_FOLDED:
                generation.folded.append(event)
            elif event.kind in ("step.succeeded", "step.failed") and generation.finished is None:
                generation.finished = event
    return every


def _none(step_id: str) -> StepSummary:
    return StepSummary(step_id=step_id, tool="?")


def build(run: RunState, events: Sequence[Event], now: datetime) -> Waterfall:
    """The waterfall of `run` as its events tell it, at `now` (the end of what still runs)."""
    bars: list[Bar] = []
    outlooks: dict[str, RetryOutlook] = {}
    for generation in _generations(run, events):
        summary = run.steps.get(generation.step_id)
        latest = summary is not None and summary.generation == generation.number
        bars += _bars(generation, summary if latest else None, now)
        if latest and summary is not None and summary.status is StepStatus.DISPATCHED:
            outlook = _outlook(generation)
            if outlook is not None:
                outlooks[generation.step_id] = outlook
    ends = [bar.end for bar in bars]
    settled = run.status.terminal or run.status.value == "parked"
    end = max([*ends, run.updated_at if settled else now])
    return Waterfall(
        bars, run.created_at, max(end, run.created_at + timedelta(seconds=1)), outlooks
    )


def _outlook(generation: _Generation) -> RetryOutlook | None:
    if generation.finished is not None or not generation.retries:
        return None
    return RetryOutlook.from_detail(generation.retries[-1].detail)


def _bars(generation: _Generation, summary: StepSummary | None, now: datetime) -> list[Bar]:
    g = generation
    bars: list[Bar] = []
    ready = g.dispatched_at  # when the next attempt could start: dispatch, then each backoff
    for folded in g.folded:
        detail = folded.detail
        first = _when(detail.get("first_at")) or folded.at
        last = _when(detail.get("last_at")) or folded.at
        attempts = f"{detail.get('first_attempt', '?')}-{detail.get('last_attempt', '?')}"
        codes = ", ".join(f"{k} x{v}" for k, v in dict(detail.get("codes") or {}).items())
        bar = Bar(
            g.step_id, g.tool, g.number, attempts, f"{detail.get('count', 0)} failed: {codes}"
        )
        bar.segments.append(Segment(FOLDED, max(ready, first), max(ready, first, last)))
        bars.append(bar)
        ready = bar.end
    for retry in g.retries:
        detail = retry.detail
        started = _when(detail.get("started_at")) or retry.at
        number = str(detail.get("attempt") or len(bars) + 1)
        bar = Bar(g.step_id, g.tool, g.number, number, f"failed: {detail.get('code', 'error')}")
        if started > ready and not bars:
            bar.segments.append(Segment(QUEUED, ready, started))
        bar.segments.append(Segment(RUNNING, started, max(started, retry.at)))
        outlook = RetryOutlook.from_detail(detail)
        bars.append(bar)
        ready = outlook.next_attempt_at if outlook else retry.at
    # Each failed attempt waited until the next began (or, for the last, still waits).
    final_start = _final_start(g, summary)
    for i, bar in enumerate(bars):
        if bar.segments[-1].kind == FOLDED:
            continue
        if i + 1 < len(bars):
            nxt = bars[i + 1].start
        elif final_start is not None:
            nxt = final_start
        else:
            nxt = min(now, ready)
        if nxt > bar.end:
            bar.segments.append(Segment(WAITING, bar.end, nxt))
    if g.finished is not None:
        bars.append(_finished(g, summary, g.dispatched_at if not bars else None))
    elif now >= ready:
        pending = Bar(g.step_id, g.tool, g.number, "next", "queued or running")
        pending.segments.append(Segment(QUEUED, ready, now))
        bars.append(pending)
    return bars


def _final_start(g: _Generation, summary: StepSummary | None) -> datetime | None:
    """When the generation's last attempt began: its end less its latency (a summary's
    started_at is when the step was dispatched)."""
    if g.finished is None:
        return None
    end, latency = g.finished.at, int(g.finished.detail.get("latency_ms") or 0)
    if summary is not None and summary.finished_at is not None:
        end, latency = summary.finished_at, summary.latency_ms or latency
    return end - timedelta(milliseconds=latency)


def _finished(g: _Generation, summary: StepSummary | None, queued_from: datetime | None) -> Bar:
    """The attempt that ended the generation, from its summary (or, for an earlier
    generation, its event); queued from the dispatch when it was the first."""
    assert g.finished is not None
    ok = g.finished.kind == "step.succeeded"
    error = dict(g.finished.detail.get("error") or {})
    outcome = "succeeded" if ok else f"failed for good: {error.get('code', 'error')}"
    number = str(int(g.finished.detail.get("attempts") or 1))
    bar = Bar(g.step_id, g.tool, g.number, number, outcome)
    start = _final_start(g, summary) or g.finished.at
    end = summary.finished_at if summary is not None and summary.finished_at else g.finished.at
    if queued_from is not None and start > queued_from:
        bar.segments.append(Segment(QUEUED, queued_from, start))
    bar.segments.append(Segment(RUNNING, start, max(start, end)))
    return bar

"""Chimera's metrics, by the names its dashboards and alerts use (the issue's contract table);
recorded through the meter provider shared/telemetry.py installs."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.semconv._incubating.attributes.gen_ai_attributes import (
    GEN_AI_OPERATION_NAME,
    GEN_AI_REQUEST_MODEL,
    GEN_AI_TOKEN_TYPE,
)
from opentelemetry.semconv.attributes.http_attributes import HTTP_RESPONSE_STATUS_CODE

from shared import telemetry
from shared.task_queue import queue_stats

log = logging.getLogger(__name__)

# Seconds: a vendor answers in tens of milliseconds, a tool call takes up to the deadline.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
# The GenAI conventions' advice for token counts.
TOKEN_BUCKETS = tuple(4**n for n in range(14))
BREAKER_STATES = {"closed": 0, "half_open": 1, "open": 2}
RUN_OUTCOMES = ("succeeded", "parked", "cancelled", "waiting")


@dataclass(frozen=True)
class Instruments:
    tool_calls: metrics.Counter
    tool_errors: metrics.Counter
    tool_duration: metrics.Histogram
    tool_retries: metrics.Counter
    vendor_duration: metrics.Histogram
    breaker_state: metrics._Gauge
    runs: metrics.Counter
    token_usage: metrics.Histogram
    llm_cost: metrics.Counter


def _instruments_of(meter: metrics.Meter) -> Instruments:
    meter.create_observable_gauge(
        "chimera.queue.depth",
        callbacks=[_queue_depths],
        unit="{task}",
        description="Tasks queued or being delivered, per queue",
    )
    meter.create_observable_gauge(
        "chimera.queue.oldest_task_age",
        callbacks=[_oldest_task_ages],
        unit="s",
        description="How long the oldest due task of each queue has waited past its time (its lag)",
    )
    return Instruments(
        tool_calls=meter.create_counter(
            "chimera.tool.calls", unit="{call}", description="Tool attempts, by outcome"
        ),
        tool_errors=meter.create_counter(
            "chimera.tool.errors", unit="{error}", description="Failed tool attempts, by code"
        ),
        tool_duration=meter.create_histogram(
            "chimera.tool.duration",
            unit="s",
            description="How long a tool attempt took",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        ),
        tool_retries=meter.create_counter(
            "chimera.tool.retries", unit="{retry}", description="Tool attempts to be retried"
        ),
        vendor_duration=meter.create_histogram(
            "chimera.vendor.request.duration",
            unit="s",
            description="How long one HTTP request to a vendor took",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        ),
        breaker_state=meter.create_gauge(
            "chimera.breaker.state",
            unit="1",
            description="A vendor's circuit breaker: 0 closed, 1 half open, 2 open",
        ),
        runs=meter.create_counter(
            "chimera.runs", unit="{run}", description="Runs entering an outcome"
        ),
        token_usage=meter.create_histogram(
            "gen_ai.client.token.usage",
            unit="{token}",
            description="Tokens per model call, input and output",
            explicit_bucket_boundaries_advisory=TOKEN_BUCKETS,
        ),
        llm_cost=meter.create_counter(
            "chimera.llm.cost", unit="USD", description="What the model calls cost"
        ),
    )


_lock = threading.Lock()
_built: dict[int, Instruments] = {}
# Where the gauges find the queue to read (the installed runtime's), at each collection.
_queue_source: list[Callable[[], object | None]] = []


def instruments() -> Instruments:
    """The instruments of the meter provider in use (built once per provider)."""
    provider = telemetry.current().meter_provider
    with _lock:
        key = id(provider)
        if key not in _built:
            _built.clear()
            _built[key] = _instruments_of(provider.get_meter("chimera"))
        return _built[key]


def observe_queues(source: Callable[[], object | None]) -> None:
    """Report the depth and oldest task age of the queue `source` gives when metrics are
    collected (None: no queue now)."""
    with _lock:
        _queue_source[:] = [source]
    instruments()  # the gauges exist from now on, before anything is recorded


def _stats() -> Iterable[Any]:
    with _lock:
        sources = list(_queue_source)
    for source in sources:
        try:
            yield from queue_stats(source())
        except Exception:  # a queue that cannot say this time is missing from one point
            log.warning("could not read the queues' stats", exc_info=True)


def _queue_depths(options: CallbackOptions) -> Iterable[Observation]:
    return [Observation(s.depth, {"queue": s.queue}) for s in _stats()]


def _oldest_task_ages(options: CallbackOptions) -> Iterable[Observation]:
    # No task due (none, or all scheduled for later): 0 s, so an age alert clears.
    return [Observation(s.oldest_age_s or 0.0, {"queue": s.queue}) for s in _stats()]


def tool_attempt(
    tool: str, vendor: str, outcome: str, seconds: float, error_code: str | None = None
) -> None:
    """One tool attempt: `outcome` ok, retry (the queue tries again) or failed (for good)."""
    found = instruments()
    where = {"tool": tool, "vendor": vendor}
    found.tool_calls.add(1, {**where, "outcome": outcome})
    found.tool_duration.record(seconds, where)
    if error_code:
        found.tool_errors.add(1, {**where, "error.code": error_code})
    if outcome == "retry":
        found.tool_retries.add(1, where)


def vendor_request(vendor: str, status: int | None, seconds: float) -> None:
    """One HTTP request to `vendor`; `status` None when no answer came."""
    attributes: dict[str, Any] = {"vendor": vendor}
    if status is not None:
        attributes[HTTP_RESPONSE_STATUS_CODE] = status
    instruments().vendor_duration.record(seconds, attributes)


def breaker_state(vendor: str, state: str) -> None:
    instruments().breaker_state.set(BREAKER_STATES[state], {"vendor": vendor})


def run_entered(outcome: str) -> None:
    """A run entered `outcome` (counted once, by the transition that made it so)."""
    if outcome in RUN_OUTCOMES:
        instruments().runs.add(1, {"outcome": outcome})


def model_call(model: str, input_tokens: int, output_tokens: int, cost_usd: float) -> None:
    found = instruments()
    where = {GEN_AI_OPERATION_NAME: "chat", GEN_AI_REQUEST_MODEL: model}
    found.token_usage.record(input_tokens, {**where, GEN_AI_TOKEN_TYPE: "input"})
    found.token_usage.record(output_tokens, {**where, GEN_AI_TOKEN_TYPE: "output"})
    found.llm_cost.add(cost_usd, {GEN_AI_REQUEST_MODEL: model})

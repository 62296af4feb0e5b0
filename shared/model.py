"""The run model: what a run is, what crosses a queue, what the audit trail records."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from shared.fields import (
    ChannelName,
    CompanyName,
    ContactEmail,
    Domain,
    Goal,
    PersonName,
    RequestId,
)
from shared.queues import ORCHESTRATOR_QUEUE

CHANNEL_RE = re.compile(r"^#?[a-z0-9][a-z0-9._-]{0,79}$")
DEFAULT_GOAL = "Welcome the client and get their onboarding project started."
ATTENTION_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
TRACEPARENT_RE = re.compile(r"^00-(?P<trace>[0-9a-f]{32})-(?P<span>[0-9a-f]{16})-[0-9a-f]{2}$")


def utcnow() -> datetime:
    return datetime.now(UTC)


def stable_hash(value: Any, length: int = 16) -> str:
    blob = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:length]


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class OnboardingRequest(Model):
    """What a run is asked to do; the only trusted source of recipients and channels.

    Every field is normalised and checked here, once (shared/fields.py): nothing a vendor
    would choke on, or a person would not see, gets past the intake.
    """

    company_name: CompanyName
    domain: Domain
    contact_email: ContactEmail
    contact_name: PersonName = ""
    goal: Goal = DEFAULT_GOAL
    slack_channel: ChannelName = ""
    request_id: RequestId | None = None

    @field_validator("slack_channel")
    @classmethod
    def _channel(cls, value: str) -> str:
        value = value.lower()
        if value and not CHANNEL_RE.match(value):
            raise ValueError("not a Slack channel name like #client-onboarding")
        if value and not value.startswith("#"):
            value = "#" + value
        return value

    def idempotency_key(self) -> str:
        """The same request twice is one run: an explicit request_id, else the content."""
        if self.request_id:
            return "id:" + self.request_id
        return "content:" + stable_hash(self.model_dump(exclude={"request_id"}), 32)

    def run_id(self) -> str:
        return "run-" + stable_hash(self.idempotency_key(), 20)


_PARSED_REQUESTS: dict[str, OnboardingRequest] = {}
PARSED_REQUESTS_KEPT = 1024


def parsed_request(value: Any) -> Any:
    """The request a stored run carries, parsed once per process for each distinct one.

    Every load of a run parses its document again, and checking its address and domain
    (email_validator, IDNA) was most of that: the same input always parses to the same frozen
    request, so a parsed one is kept and shared. What is not a dict is left to pydantic.
    """
    if not isinstance(value, dict):
        return value
    key = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    found = _PARSED_REQUESTS.get(key)
    if found is None:
        found = OnboardingRequest.model_validate(value)
        if len(_PARSED_REQUESTS) >= PARSED_REQUESTS_KEPT:
            _PARSED_REQUESTS.clear()  # a crude bound: a process sees few runs at a time
        _PARSED_REQUESTS[key] = found
    return found


class RunStatus(StrEnum):
    """Where a run is. A run never fails for good: a failed step parks it for a person to
    resume or cancel, so only success and a cancel end it."""

    PENDING = "pending"
    RUNNING = "running"
    WAITING = "waiting"
    SUCCEEDED = "succeeded"
    PARKED = "parked"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in {RunStatus.SUCCEEDED, RunStatus.CANCELLED}


class Attention(StrEnum):
    """Why a run wants an operator's eye (RunState.attention): what `runs list --attention`
    filters on. The run still goes on; the flag says what to look at."""

    # Untrusted text (the goal, the enrichment) tried to steer the agent.
    INJECTION_SUSPECTED = "injection_suspected"
    # The guard refused a draft of the welcome email.
    DRAFT_REFUSED = "draft_refused"
    # The client got the safe template instead of a model's draft.
    TEMPLATE_EMAIL = "template_email"
    # A step's effect was still not at the vendor after its re-runs (verify_mismatch_limit).
    VERIFICATION_FAILED = "verification_failed"


def attention_flags(flags: Any) -> tuple[str, ...]:
    """Flags as the run document keeps them: sorted, each once."""
    if isinstance(flags, str) or not isinstance(flags, list | tuple | set | frozenset):
        raise ValueError("attention is a list of flags")
    flags = tuple(str(f) for f in flags)
    for flag in flags:
        if not ATTENTION_RE.match(flag):
            raise ValueError(f"not an attention flag like injection_suspected: {flag!r}")
    return tuple(sorted(set(flags)))


class StepStatus(StrEnum):
    PENDING = "pending"
    DISPATCHED = "dispatched"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"


class PlanStep(Model):
    step_id: str = Field(pattern=r"^[a-z][a-z0-9_]{0,39}$")
    tool: str
    args: dict[str, Any] = Field(default_factory=dict)
    depends_on: tuple[str, ...] = ()


class LlmUsage(Model):
    model: str
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0


class StepError(Model):
    code: str
    message: str
    retryable: bool = False


class VerificationStatus(StrEnum):
    """What a read-only look at the vendor found of a step's effect."""

    PENDING = "pending"  # the look is dispatched, its answer not in yet
    VERIFIED = "verified"
    MISMATCH = "mismatch"  # missing or wrong: the step re-runs, up to the mismatch limit
    UNVERIFIABLE = "unverifiable"  # the vendor cannot be asked, or its lookup lagged too long


class Verification(Model):
    """A side-effecting step's verification, on its summary: the generation looked at, what
    was found, and how many generations of the step were found missing or wrong."""

    status: VerificationStatus = VerificationStatus.PENDING
    reason: str = ""
    generation: int = 1
    mismatches: int = 0
    at: datetime | None = None

    @property
    def settled(self) -> bool:
        return self.status is not VerificationStatus.PENDING


class StepSummary(Model):
    """One line of the run document per step: enough to read the run at a glance."""

    step_id: str
    tool: str
    status: StepStatus = StepStatus.PENDING
    generation: int = 1
    attempts: int = 0
    started_at: datetime | None = None
    finished_at: datetime | None = None
    latency_ms: int | None = None
    output: str = ""
    error: StepError | None = None
    llm_tokens: int = 0
    cost_usd: float = 0.0
    # Side-effecting steps only, when verification is on.
    verification: Verification | None = None


class Totals(Model):
    steps: int = 0
    steps_succeeded: int = 0
    attempts: int = 0
    llm_tokens: int = 0
    cost_usd: float = 0.0


class ReasoningSummary(Model):
    """One line of the run document per decision the model was asked for (plan, adapt).

    What was asked and answered is in the step ledger under the same key; this is the
    at-a-glance part: whose decision is in force, how many calls it took, what it cost.
    """

    key: str  # the ledger key: "plan", "adapt-enrich"
    source: str  # model (its answer is in force), default (the default plan), kept (no change)
    calls: int = 0
    note: str = ""
    llm_tokens: int = 0
    cost_usd: float = 0.0


class Approval(Model):
    """A person's go-ahead before the step that reaches the client runs (require_approval)."""

    step_id: str
    status: str = Field(default="pending", pattern=r"^(pending|waiting|approved|rejected)$")
    # The draft awaiting approval, as the approver sees it.
    subject: str = ""
    actor: str = ""
    reason: str = ""
    at: datetime | None = None


class RunState(Model):
    """The run document. Small on purpose: outputs and events live beside it."""

    run_id: str
    request_key: str
    request: OnboardingRequest
    status: RunStatus = RunStatus.PENDING
    reason: str = ""
    plan: tuple[PlanStep, ...] = ()
    steps: dict[str, StepSummary] = Field(default_factory=dict)
    # The model's decisions about the run itself, by ledger key; their tokens count in totals.
    reasoning: dict[str, ReasoningSummary] = Field(default_factory=dict)
    approval: Approval | None = None
    # What an operator should look at (Attention), sorted and unique; the runs list filters
    # on it. Raised by the guards, never cleared: the run's history does not change.
    attention: tuple[str, ...] = ()
    totals: Totals = Field(default_factory=Totals)
    version: int = 0
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    # The onboarding's trace (W3C traceparent of its root span), stored with the run before
    # its first task: a task that carries no context continues it. "" before tracing.
    traceparent: str = ""

    @property
    def trace_id(self) -> str:
        """The run's trace id (32 hex digits), or "" when it has none."""
        match = TRACEPARENT_RE.match(self.traceparent)
        return match["trace"] if match else ""

    @field_validator("request", mode="before")
    @classmethod
    def _request(cls, value: Any) -> Any:
        return parsed_request(value)

    @field_validator("attention", mode="before")
    @classmethod
    def _attention(cls, value: Any) -> tuple[str, ...]:
        return attention_flags(value or ())

    def flagged(self, *flags: str) -> RunState:
        """This run with `flags` added to its attention."""
        merged = attention_flags((*self.attention, *flags))
        return self if merged == self.attention else self.evolve(attention=merged)

    def evolve(self, **changes: Any) -> RunState:
        return self.model_copy(update=changes)


class ToolTask(Model):
    """What a tool's queue carries: which step of which run to do, and nothing it could lie
    about. The tool reads the request, the step's args and its inputs from the store; a task
    that disagrees with the store is refused (docs/decisions/0010f-tasks-carry-references.md)."""

    run_id: str = Field(min_length=1, max_length=200)
    step_id: str = Field(pattern=r"^[a-z][a-z0-9_]{0,39}$")
    tool: str = Field(min_length=1, max_length=80)
    # Bumped when a parked run is resumed, so the retried step gets fresh task names. Strict:
    # "1" or true is not a generation.
    generation: int = Field(ge=1, le=1_000_000, strict=True)


class ToolCall(Model):
    """One step's work as a tool's core takes it: built by the tool endpoint from the store
    (the run's request, its plan step's args, the ledger outcomes of the steps it reads)."""

    run_id: str
    step_id: str
    tool: str
    # Bumped when a parked run is resumed, so the retried step gets fresh task names.
    generation: int = Field(default=1, ge=1)
    args: dict[str, Any] = Field(default_factory=dict)
    # The outputs of the steps this one depends on, by step id.
    inputs: dict[str, dict[str, Any]] = Field(default_factory=dict)
    request: OnboardingRequest
    # When the orchestrator dispatched this generation: where a retry's look for what an
    # earlier attempt did may start.
    dispatched_at: datetime | None = None


GUARD_OUTPUT_KEY = "guard"


class GuardNote(Model):
    """What a tool's guard did about untrusted content during a step (a draft refused, the
    safe template used). A tool's output carries its notes under GUARD_OUTPUT_KEY; the
    orchestrator writes each to the run's event log and raises its attention flags."""

    kind: str = Field(pattern=r"^guard\.[a-z][a-z0-9_]*$")
    attention: tuple[str, ...] = ()
    detail: dict[str, Any] = Field(default_factory=dict)

    @field_validator("attention", mode="before")
    @classmethod
    def _attention(cls, value: Any) -> tuple[str, ...]:
        return attention_flags(value or ())


def guard_notes(output: dict[str, Any]) -> list[GuardNote]:
    """The guard notes in a step's output; none when there are none, or none readable (a
    note that does not parse is dropped, never a reason to fail taking the step in)."""
    raw = output.get(GUARD_OUTPUT_KEY)
    notes = []
    for item in raw if isinstance(raw, list) else []:
        try:
            notes.append(GuardNote.model_validate(item))
        except ValueError:
            continue
    return notes


class StepResult(Model):
    """What a tool's core returns on success."""

    output: dict[str, Any] = Field(default_factory=dict)
    summary: str = ""
    usage: LlmUsage | None = None


class StepOutcome(Model):
    """What a tool recorded for a step: kept in the step ledger, keyed by (run_id, step_id)."""

    run_id: str
    step_id: str
    tool: str
    ok: bool
    output: dict[str, Any] = Field(default_factory=dict)
    summary: str = ""
    error: StepError | None = None
    attempts: int = 1
    latency_ms: int = 0
    started_at: datetime = Field(default_factory=utcnow)
    finished_at: datetime = Field(default_factory=utcnow)
    usage: LlmUsage | None = None
    generation: int = 1


class Event(Model):
    """One line of the append-only audit trail."""

    run_id: str
    kind: str
    actor: str
    at: datetime = Field(default_factory=utcnow)
    step_id: str | None = None
    detail: dict[str, Any] = Field(default_factory=dict)


class Task(Model):
    """A queued HTTP call: the named queue's target receives `payload` as JSON."""

    queue: str
    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,500}$")
    payload: dict[str, Any]
    schedule_time: datetime | None = None
    # Sent with each delivery: the W3C trace context of the dispatch (traceparent, tracestate).
    headers: dict[str, str] = Field(default_factory=dict)


class OrchestratorTask(Model):
    """The orchestrator's own queue carries these: a run to start, a step to take in, a
    step's verification to take in, or a watchdog (of a step, or of its verification)."""

    run_id: str
    kind: str = Field(pattern=r"^(start|step_finished|watchdog|verified|verify_watchdog)$")
    step_id: str | None = None
    # For a watchdog or a verification: the step generation it is about.
    generation: int | None = None

    def task(self, name: str, schedule_time: datetime | None = None) -> Task:
        """This happening as a task on the orchestrator's queue, named `name`."""
        return Task(
            queue=ORCHESTRATOR_QUEUE,
            name=name,
            payload=self.model_dump(mode="json"),
            schedule_time=schedule_time,
        )


class VerificationCall(Model):
    """A step's verification, as the orchestrator hands it to the step's tool queue: names
    only; the verifier reads the run, the plan step and the step's outcome from the store."""

    kind: str = Field(default="verify", pattern=r"^verify$")
    run_id: str
    step_id: str
    generation: int = Field(ge=1)


class VerificationSubject(Model):
    """What a verifier checks: the step's intent (its args, the request) and what the vendor
    answered for it (the step's output)."""

    run_id: str
    step_id: str
    tool: str
    generation: int
    args: dict[str, Any] = Field(default_factory=dict)
    output: dict[str, Any] = Field(default_factory=dict)
    request: OnboardingRequest
    # When the step's effect was made: how long a lagging lookup has had to catch up.
    finished_at: datetime


class VerificationResult(Model):
    """A verifier's finding, kept in the step ledger under verification_key."""

    status: VerificationStatus
    reason: str = ""

    @field_validator("status")
    @classmethod
    def _found(cls, value: VerificationStatus) -> VerificationStatus:
        if value is VerificationStatus.PENDING:
            raise ValueError("a verifier's finding is verified, mismatch or unverifiable")
        return value


def verification_key(step_id: str, generation: int) -> str:
    """The ledger key of one generation's verification (never a plan's step id: ids have no
    hyphen)."""
    return f"verify-{step_id}-g{generation}"


@dataclass(frozen=True)
class Attempt:
    """Which delivery of a task this is (Cloud Tasks counts retries from 0)."""

    queue: str
    task_name: str = ""
    retry_count: int = 0
    max_attempts: int = 1

    @property
    def number(self) -> int:
        return self.retry_count + 1

    @property
    def last(self) -> bool:
        return self.number >= self.max_attempts

    @property
    def may_have_run(self) -> bool:
        """An earlier delivery may have reached the vendor before it failed or vanished."""
        return self.retry_count > 0

    @property
    def from_queue(self) -> bool:
        return bool(self.task_name)


class BreakerState(Model):
    """A vendor's circuit breaker decision, shared by every instance through the StateStore.

    Only the decision is shared: each instance counts its calls in memory, so the document
    changes on a change of state, never on a call.
    """

    # Documents written before the failure-rate breaker carry a `probe_until`: ignored.
    model_config = ConfigDict(extra="ignore", frozen=True)

    name: str
    state: str = Field(default="closed", pattern=r"^(closed|open|half_open)$")
    # The evidence for the last change: failed calls among calls (the window, or the probes).
    failures: int = 0
    calls: int = 0
    opened_at: datetime | None = None
    version: int = 0


class Rejection(Model):
    """An input that could not be accepted: kept, so nothing is dropped silently."""

    source: str
    reason: str
    excerpt: str
    at: datetime = Field(default_factory=utcnow)

"""The checkpoint of a model decision: what was asked, what came back, what is acted on.

Kept in the step ledger under its key ("plan", "adapt-enrich") and created once, so a
redelivered or conflicting task reads it instead of asking the model again.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from shared.model import LlmUsage, Model, PlanStep, StepOutcome

PLAN_KEY = "plan"
# Step ids the ledger keeps reasoning under, so no plan step may take them.
RESERVED_STEP_IDS = frozenset({PLAN_KEY})
# How much of an answer the audit trail keeps.
PROPOSAL_CHARS = 4000


def adapt_key(step_id: str) -> str:
    """The ledger key of the revision the model proposed once `step_id` finished."""
    return f"adapt-{step_id}"


class ModelCall(Model):
    """One question to the model and what became of its answer."""

    at: datetime
    # The answer as given (trimmed), for the audit trail; None when none came.
    proposal: Any = None
    # Why the answer was refused; empty when it was accepted.
    errors: tuple[str, ...] = ()
    # Why no answer came at all (model down, circuit open, timeout): code: message.
    failure: str = ""
    usage: LlmUsage | None = None


class Deliberation(Model):
    """What the model was asked for and what is acted on: checkpointed before acting on it."""

    key: str
    # model: its answer is acted on; default: the default plan; kept: the plan stays as it is.
    source: str
    reason: str = ""
    plan: tuple[PlanStep, ...] = ()  # for "plan": the plan in force
    changes: dict[str, dict[str, Any]] = {}  # for a revision: new args by step id
    calls: tuple[ModelCall, ...] = ()
    # What the guard found in the data the decision was about (guard.injection_suspected).
    findings: tuple[dict[str, str], ...] = ()

    def usage(self) -> LlmUsage | None:
        usages = [c.usage for c in self.calls if c.usage]
        if not usages:
            return None
        return LlmUsage(
            model=usages[-1].model,
            input_tokens=sum(u.input_tokens for u in usages),
            output_tokens=sum(u.output_tokens for u in usages),
            cost_usd=round(sum(u.cost_usd for u in usages), 8),
        )


def trimmed(answer: Any) -> Any:
    """The answer as it goes in the ledger: whole when small, else a cut-off string."""
    text = json.dumps(answer, default=str)
    return answer if len(text) <= PROPOSAL_CHARS else text[:PROPOSAL_CHARS] + "..."


def read_checkpoint(ledger: Mapping[str, StepOutcome], key: str) -> Deliberation | None:
    """The model's checkpointed decision under `key`; None when there is none (or none
    readable: the default plan, unrevised, is always safe)."""
    record = ledger.get(key)
    if record is None or not record.ok:
        return None
    try:
        return Deliberation.model_validate(record.output)
    except ValidationError:
        return None

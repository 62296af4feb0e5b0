"""The agent's reasoning: what the model is asked, which of its answers are acted on, and the
checkpoints that make each decision once.

The service asks (`deliberate`: I/O, the model through its breaker, the answer checkpointed);
`core.decide` takes the checkpoint into the run (`adopt_plan`, `adopt_revision`: pure). Inside:
`prompts` (what the model is told), `schemas` (the answer's JSON Schema, from the registry),
`validation` (one pass for plans and revisions), `checkpoint` (the ledger record), `asking`
and `adoption`. The guards on untrusted text are `shared.guard`, shared with the drafting tool.
"""

from orchestrator.agent.adoption import adopt_plan, adopt_revision
from orchestrator.agent.asking import deliberate
from orchestrator.agent.checkpoint import (
    PLAN_KEY,
    Deliberation,
    ModelCall,
    adapt_key,
    read_checkpoint,
)

__all__ = [
    "PLAN_KEY",
    "Deliberation",
    "ModelCall",
    "adapt_key",
    "adopt_plan",
    "adopt_revision",
    "deliberate",
    "read_checkpoint",
]

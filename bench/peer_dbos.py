"""The peer: the same onboarding as durable steps of a DBOS Transact workflow on SQLite.

Each step calls the very function Chimera's tool runs (the tool cores with their vendor
clients, built once per process from the same settings), against the same sandbox, so both
engines make the same vendor calls; only the orchestration differs. The plan is Chimera's
default plan (model planning off), its steps one after another as a DBOS workflow runs them.

DBOS's system database gets the pragmas Chimera's store uses (WAL, synchronous=NORMAL), so
durability is held equal.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from dbos import DBOS, DBOSConfig
from sqlalchemy import event

from orchestrator.planning import default_plan
from shared.model import Attempt, OnboardingRequest, RunState, StepResult, ToolCall
from shared.registry import TOOLS
from shared.runtime import build_runtime, install, runtime
from shared.settings import Settings
from tools.clearbit import core as clearbit
from tools.clearbit import main as clearbit_main
from tools.jira import core as jira
from tools.jira import main as jira_main
from tools.sendgrid import core as sendgrid
from tools.sendgrid import main as sendgrid_main
from tools.slack import core as slack
from tools.slack import main as slack_main

ToolFunction = Callable[[ToolCall, Attempt], StepResult]

# What each tool's function runs (tools/*/main.py), without the HTTP endpoint around it.
TOOL_FUNCTIONS: dict[str, ToolFunction] = {
    "enrich_company": lambda call, attempt: clearbit.enrich(
        call, attempt, clearbit_main.providers()
    ),
    "create_jira_project": lambda call, attempt: jira.create_project(
        call, attempt, jira_main.jira(), jira_main._defaults()
    ),
    "draft_welcome_email": sendgrid_main._draft,
    "send_welcome_email": lambda call, attempt: sendgrid.send(
        call, attempt, sendgrid_main.mailer(), sendgrid_main._sender()
    ),
    "post_slack_notice": lambda call, attempt: slack.post_notice(
        call, attempt, slack_main.chat(), runtime().settings.default_slack_channel
    ),
}


@DBOS.step()
def run_step(
    run_id: str, step: dict[str, Any], request: dict[str, Any], inputs: dict[str, Any]
) -> dict[str, Any]:
    call = ToolCall(
        run_id=run_id,
        step_id=step["step_id"],
        tool=step["tool"],
        args=step["args"],
        inputs=inputs,
        request=OnboardingRequest.model_validate(request),
    )
    attempt = Attempt(queue=TOOLS[call.tool].function, max_attempts=1)
    return TOOL_FUNCTIONS[call.tool](call, attempt).output


@DBOS.workflow()
def onboard(request: dict[str, Any]) -> dict[str, Any]:
    parsed = OnboardingRequest.model_validate(request)
    run = RunState(run_id=parsed.run_id(), request_key=parsed.idempotency_key(), request=parsed)
    outputs: dict[str, dict[str, Any]] = {}
    for step in default_plan(run):
        reads = {r: outputs[r] for r in TOOLS[step.tool].reads if r in outputs}
        outputs[step.step_id] = run_step(run.run_id, step.model_dump(mode="json"), request, reads)
    return {"run_id": run.run_id, "steps": len(outputs)}


def system_engine(path: Path) -> sa.Engine:
    """DBOS's SQLite engine with its own pragmas, plus the journal Chimera's store uses."""
    engine = sa.create_engine(f"sqlite:///{path}")

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = "IMMEDIATE"
        dbapi_conn.execute("PRAGMA busy_timeout=30000")
        dbapi_conn.execute("PRAGMA foreign_keys=ON")
        dbapi_conn.execute("PRAGMA journal_mode=WAL")
        dbapi_conn.execute("PRAGMA synchronous=NORMAL")

    return engine


def launch(home: Path, settings: Settings) -> None:
    """Chimera's runtime for the tool functions, then DBOS on a database under `home`."""
    install(build_runtime(settings))
    path = home / "dbos.sqlite"
    config: DBOSConfig = {
        "name": "chimera-peer",
        "system_database_url": f"sqlite:///{path}",
        "system_database_engine": system_engine(path),
        "log_level": "WARNING",
    }
    DBOS(config=config)
    DBOS.launch()


def shutdown() -> None:
    DBOS.destroy()
    install(None)

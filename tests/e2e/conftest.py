"""The embedded stack, started per test on its own home, with helpers to drive it."""

from __future__ import annotations

import secrets
import time
from collections import Counter
from collections.abc import Iterator

import pytest
from werkzeug.test import Client

from chimera.stack import LocalStack
from shared.model import RunState, RunStatus
from shared.settings import Settings

# One onboarding's side effects at the vendors: the plan's three kickoff issues included.
ONE_ONBOARDING = Counter(
    {"jira.project": 1, "jira.issue": 3, "sendgrid.mail": 1, "slack.message": 1}
)


# `chimera onboard` for one client, as a person types it.
ONBOARD = [
    "onboard",
    "--company",
    "Globex",
    "--domain",
    "globex.example",
    "--contact-email",
    "hank@globex.example",
    "--contact-name",
    "Hank Scorpio",
]


def distinct_secrets() -> dict[str, str]:
    """Secrets no code or fixture could contain by chance, in the shapes the sandbox takes."""
    mark = secrets.token_hex(12)
    return {
        "clearbit_key": f"sk_clearbit_{mark}",
        "jira_token": f"jira-token-{mark}",
        "sendgrid_key": f"SG.sendgrid-{mark}",
        "slack_token": f"xoxb-slack-{mark}",
        "gemini_api_key": f"gemini-key-{mark}",
    }


def body(i: int = 0, **changes: str) -> dict[str, str]:
    fields = {
        "company_name": f"Client {i} Ltd",
        "domain": f"client{i}.example",
        "contact_email": f"ceo@client{i}.example",
        "contact_name": "Grace Hopper",
        "goal": "Move the support team onto the new helpdesk",
        "slack_channel": "#client-onboarding",
    }
    return {**fields, **changes}


def wait_until_settled(
    stack: LocalStack, run_ids: list[str], timeout: float = 90
) -> dict[str, RunState]:
    assert stack.runtime is not None
    end = time.monotonic() + timeout
    while True:
        runs = {r: stack.runtime.store.load(r) for r in run_ids}
        if all(r and (r.status.terminal or r.status is RunStatus.PARKED) for r in runs.values()):
            return runs  # type: ignore[return-value]
        if time.monotonic() > end:
            pending = {r: run.status.value if run else None for r, run in runs.items()}
            raise AssertionError(f"runs did not settle in {timeout}s: {pending}")
        time.sleep(0.05)


@pytest.fixture
def start_stack(tmp_path) -> Iterator:
    stacks: list[LocalStack] = []

    def start(faults: str = "", **settings: object) -> LocalStack:
        stack = LocalStack(Settings(home=tmp_path / "home", **settings), faults=faults)  # type: ignore[arg-type]
        stacks.append(stack.start())
        return stack

    yield start
    for stack in stacks:
        stack.stop()


def submit(stack: LocalStack, payload: dict[str, str]) -> tuple[int, dict]:
    response = Client(stack.intake()).post("/runs", json=payload)
    return response.status_code, response.get_json()

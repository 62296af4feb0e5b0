"""`chimera runs show` says what each look at a vendor found, and what it re-ran."""

from __future__ import annotations

from rich.console import Console

from chimera import render
from tests.unit.test_verification_decisions import Ledger, through_all_steps


def shown(renderable) -> str:
    console = Console(record=True, width=220)
    console.print(renderable)
    return console.export_text()


def test_runs_show_has_the_verification_of_each_step_and_the_repair():
    ledger = Ledger()
    through_all_steps(ledger)
    ledger.verify("jira", "mismatch", "1 of 3 kickoff issues missing in ACME")
    text = shown(render.timeline(ledger.run, ledger.decision.events))
    assert "verifying: email, slack" in text
    assert "1 of 3 kickoff issues missing in ACME; re-run as generation 2" in text
    ledger.succeed("jira")
    for step_id in ("jira", "email", "slack"):
        ledger.verify(step_id, "verified")
    text = shown(render.steps_table(ledger.run))
    assert "verified (1 mismatch, re-run)" in text
    assert "verifying" not in shown(render.run_header(ledger.run))

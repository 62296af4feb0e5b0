"""The `chimera` command as a person uses it, on the embedded stack in this process."""

from __future__ import annotations

import json

import pytest

from chimera.cli import main
from tests.e2e.conftest import ONBOARD

pytestmark = pytest.mark.slow


def _json(capsys) -> object:
    return json.loads(capsys.readouterr().out)


def test_onboard_then_read_the_run_back(capsys):
    assert main(ONBOARD) == 0
    assert "succeeded" in capsys.readouterr().out

    assert main(["runs", "list", "--json"]) == 0
    [run] = _json(capsys)
    assert run["status"] == "succeeded" and run["request"]["company_name"] == "Globex"

    assert main(["runs", "show", run["run_id"], "--json"]) == 0
    shown = _json(capsys)
    assert shown["run_id"] == run["run_id"] and shown["status"] == "succeeded"
    assert set(shown["steps"]) == {"enrich", "jira", "draft", "email", "slack"}
    assert shown["events"][0]["kind"] == "run.created"

    assert main(["sandbox", "records", "--json", "--run-id", run["run_id"]]) == 0
    records = _json(capsys)
    assert {"vendor", "action", "run_id", "status", "request", "at"} <= set(records[0])
    sends = [r for r in records if r["action"] == "mail.send"]
    assert len(sends) == 1 and sends[0]["status"] == 202

    # Only a parked run can be resumed; the command says why and fails.
    assert main(["runs", "resume", run["run_id"]]) == 1
    assert "not parked" in capsys.readouterr().out


def test_onboard_refuses_bad_input_with_the_field_named(capsys):
    assert main([*ONBOARD[:-4], "--contact-email", "not-an-email"]) == 2
    out = capsys.readouterr().out
    assert "request refused" in out and "contact_email" in out
    assert main(["runs", "list", "--json"]) == 0
    assert _json(capsys) == []


def test_onboard_exits_non_zero_with_the_reason_when_the_run_parks(capsys):
    assert main([*ONBOARD, "--slack-channel", "#missing-team"]) == 1
    out = capsys.readouterr().out
    assert "parked" in out and "channel_not_found" in out


def test_bad_fault_spec_is_a_clear_error(capsys):
    assert main([*ONBOARD, "--faults", "jira.explode=1"]) == 2
    out = capsys.readouterr().out
    assert "--faults" in out and "unknown fault 'explode'" in out


def test_runs_list_narrows_by_the_current_tool_and_by_a_business_key(capsys):
    assert main([*ONBOARD, "--request-id", "ok-1"]) == 0
    initech = ["--company", "Initech", "--domain", "initech.example"]
    stuck = [*ONBOARD[:1], *initech, *ONBOARD[5:], "--slack-channel", "#missing-team"]
    assert main([*stuck, "--request-id", "stuck-1"]) == 1
    capsys.readouterr()

    for tool in ("slack", "post_slack_notice"):
        assert main(["runs", "list", "--tool", tool, "--json"]) == 0
        assert [r["request"]["company_name"] for r in _json(capsys)] == ["Initech"]
    assert main(["runs", "list", "--tool", "jira", "--json"]) == 0
    assert _json(capsys) == []
    assert main(["runs", "list", "--search", "initech.exa", "--json"]) == 0
    assert [r["request"]["company_name"] for r in _json(capsys)] == ["Initech"]
    assert main(["runs", "list", "--search", "ok-1", "--json"]) == 0
    assert [r["request"]["company_name"] for r in _json(capsys)] == ["Globex"]

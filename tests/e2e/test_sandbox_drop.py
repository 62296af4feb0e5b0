"""The sandbox's `drop` fault: a 2xx like success, nothing kept, the record marked dropped."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from chimera import cli
from sandbox.effects import side_effects
from sandbox.faults import KINDS, FaultPlan
from sandbox.server import SandboxServer
from tests.e2e.test_sandbox_routes import AUTH

RUN = "run-dropped0001"
MARKER = f"chimera-run:{RUN}"


@pytest.fixture
def dropping(tmp_path: Path) -> Iterator[SandboxServer]:
    faults = "jira.drop=1,sendgrid.drop=1,slack.drop=1,seed=3"
    server = SandboxServer(tmp_path / "home", faults=faults).start()
    yield server
    server.stop()


def post(sandbox: SandboxServer, path: str, body: dict) -> requests.Response:
    vendor = path.split("/", 2)[1]
    return requests.post(sandbox.url + path, json=body, headers=AUTH[vendor], timeout=5)


def test_every_write_is_answered_as_done_and_kept_nowhere_when_dropped(dropping, tmp_path):
    project = post(
        dropping,
        "/jira/rest/api/2/project",
        {
            "key": "ACME",
            "name": "Acme",
            "leadAccountId": "lead",
            "projectTypeKey": "software",
            "description": MARKER,
        },
    )
    assert project.status_code == 201 and project.json()["key"] == "ACME"
    missing = requests.get(
        dropping.url + "/jira/rest/api/2/project/ACME", headers=AUTH["jira"], timeout=5
    )
    assert missing.status_code == 404

    mail = post(
        dropping,
        "/sendgrid/v3/mail/send",
        {
            "personalizations": [{"to": [{"email": "ada@acme.example"}]}],
            "from": {"email": "welcome@chimera.example"},
            "subject": "Welcome",
            "content": [{"type": "text/plain", "value": "Hello"}],
            "custom_args": {"run_id": RUN, "chimera_step": f"{RUN}:email"},
        },
    )
    assert mail.status_code == 202 and mail.headers["X-Message-Id"]

    message = post(
        dropping,
        "/slack/api/chat.postMessage",
        {
            "channel": "#client-onboarding",
            "text": "hi",
            "metadata": {"event_type": "chimera_onboarding", "event_payload": {"run_id": RUN}},
        },
    )
    assert message.json()["ok"] is True and message.json()["ts"]

    assert side_effects(tmp_path / "home").get(RUN) is None
    calls = dropping.records.list()
    writes = [c for c in calls if c["action"] in ("project.create", "mail.send")]
    writes += [c for c in calls if c["action"] == "chat.postMessage"]
    assert len(writes) == 3 and all(c["dropped"] and c["fault"] == "drop" for c in writes)
    reads = [c for c in calls if c["action"] == "project.get"]
    assert reads and not any(c["dropped"] for c in reads), "a read has nothing to lose"


def test_records_json_marks_the_dropped_calls(dropping, tmp_path, monkeypatch, capsys):
    post(dropping, "/slack/api/chat.postMessage", {"channel": "#client-onboarding", "text": "x"})
    monkeypatch.setenv("CHIMERA_HOME", str(tmp_path / "home"))
    assert cli.main(["sandbox", "records", "--json"]) == 0
    (record,) = json.loads(capsys.readouterr().out)
    assert record["dropped"] is True and record["status"] == 200


def test_drop_is_seeded_and_reproducible_and_shifts_no_other_kind():
    assert KINDS[-1] == "drop"
    spec = "jira.error=0.2,jira.drop=0.3,seed=9"
    first, again = FaultPlan.parse(spec), FaultPlan.parse(spec)
    draws = [first.fault_for("jira", n).kind for n in range(200)]
    assert draws == [again.fault_for("jira", n).kind for n in range(200)]
    assert 20 < draws.count("drop") < 100
    without = FaultPlan.parse("jira.error=0.2,seed=9")
    errors = [n for n, kind in enumerate(draws) if kind == "error"]
    assert errors == [n for n in range(200) if without.fault_for("jira", n).kind == "error"]

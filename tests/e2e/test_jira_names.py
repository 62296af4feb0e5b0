"""Jira keys and names on the sandbox: the client tells a taken key from a taken name, and a
corporate family of look-alike clients onboarded at once gets one distinct project each."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from sandbox.effects import side_effects
from sandbox.records import RecordStore, sandbox_database
from sandbox.server import SandboxServer
from shared.errors import InvalidInput
from shared.jira_keys import ProjectTaken, valid_key
from shared.model import RunStatus
from shared.settings import Settings
from tests.e2e.conftest import ONE_ONBOARDING, body, submit, wait_until_settled
from tools.jira.client import JiraClient, ProjectKeyTaken, ProjectNameTaken

# Sixty country codes, for sixty subsidiaries.
COUNTRIES = (
    (
        "AT BE BG CH CY CZ DE DK EE ES FI FR GR HR HU IE IS IT LI LT LU LV MT NL NO PL PT RO SE SI "
        "SK UK US CA MX BR AR CL CO PE UY JP KR CN TW HK SG MY TH VN PH ID IN PK AE SA QA IL TR ZA"
    )
    .lower()
    .split()
)


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[SandboxServer]:
    server = SandboxServer(tmp_path / "sandbox").start()
    yield server
    server.stop()


@pytest.fixture
def client(sandbox: SandboxServer, tmp_path: Path) -> JiraClient:
    return JiraClient(Settings(home=tmp_path, sandbox_url=sandbox.url, vendor_read_timeout=5.0))


def create(client: JiraClient, key: str, name: str) -> dict:
    return client.create_project(
        key=key,
        name=name,
        description="chimera-run:run-names",
        template="com.pyxis.greenhopper.jira:gh-simplified-kanban-classic",
        project_type="software",
        lead_account_id="712020:lead",
    )


def test_the_client_tells_a_taken_name_from_a_taken_key_when_jira_refuses_a_project(client):
    create(client, "ZURICH", "Zürich Versicherung onboarding")

    with pytest.raises(ProjectNameTaken) as name_taken:
        create(client, "ZURICH2", "ZÜRICH VERSICHERUNG onboarding")  # Jira ignores case
    assert name_taken.value.code == "project_name_taken" and not name_taken.value.retryable
    assert (name_taken.value.key_taken, name_taken.value.name_taken) == (False, True)

    with pytest.raises(ProjectKeyTaken) as key_taken:
        create(client, "ZURICH", "Another name")
    assert key_taken.value.code == "project_key_taken"
    assert (key_taken.value.key_taken, key_taken.value.name_taken) == (True, False)

    with pytest.raises(ProjectKeyTaken) as both:
        create(client, "ZURICH", "Zürich Versicherung onboarding")
    assert (both.value.key_taken, both.value.name_taken) == (True, True)

    # Another key cannot fix a name Jira refuses for its length: that is bad input, not taken.
    with pytest.raises(InvalidInput) as invalid:
        create(client, "ZURICH", "Z" * 81)
    assert not isinstance(invalid.value, ProjectTaken)

    assert create(client, "ZURICH2", "Zürich Versicherung onboarding (K3F9QZ2A)")["key"] == (
        "ZURICH2"
    )


@pytest.mark.slow
def test_a_corporate_family_of_60_clients_gets_60_distinct_projects_when_submitted_at_once(
    start_stack, tmp_path
):
    stack = start_stack(local_backoff_scale=0.05)
    payloads = []
    for i, country in enumerate(COUNTRIES[:60]):
        domain = f"internationalbank-{country}.example"  # 18 characters in common
        # Every third keeps the group's name: Jira's names must differ too.
        name = "International Bank" if i % 3 == 0 else f"International Bank {country.upper()}"
        payloads.append(body(i, company_name=name, domain=domain, contact_email=f"cfo@{domain}"))
    run_ids = [submit(stack, payload)[1]["run_id"] for payload in payloads]
    runs = wait_until_settled(stack, run_ids, timeout=120)

    assert {run.status for run in runs.values()} == {RunStatus.SUCCEEDED}, {
        r.run_id: r.reason for r in runs.values() if r.status is not RunStatus.SUCCEEDED
    }
    home = tmp_path / "home"
    effects = side_effects(home)
    assert all(effects[run_id] == ONE_ONBOARDING for run_id in run_ids)
    # Judged from what the sandbox's Jira holds, not from what the runs say they made.
    jira_db = sandbox_database(home).connection()
    projects = jira_db.execute("SELECT key, name FROM jira_projects").fetchall()
    keys = [row["key"] for row in projects]
    names = [row["name"].casefold() for row in projects]
    assert len(projects) == 60 and len(set(keys)) == 60 and len(set(names)) == 60
    assert all(valid_key(key) for key in keys)
    creates = RecordStore(home).list(vendor="jira", action="project.create")
    refused = [r for r in creates if r["status"] == 400]
    # The plain key INTERNATIO went to one client, and the shared name to one of the twenty
    # that share it: Jira refused only those two, never a key or a name only a run makes.
    assert len([r for r in creates if r["status"] == 201]) == 60 and len(refused) >= 59
    assert all(
        r["request"]["key"] == "INTERNATIO"
        or r["request"]["name"] == "International Bank onboarding"
        for r in refused
    )

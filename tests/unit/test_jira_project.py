"""The Jira tool's core on the fake Jira: taken keys, names or both, lost answers, busy sites."""

from __future__ import annotations

import random
import string

import pytest

from shared.errors import PermanentError, VendorTimeout
from shared.jira_keys import candidate_keys, candidate_names, readable_key, readable_name
from shared.model import Attempt, ToolCall
from tests.conftest import make_request
from tests.fakes import FakeJira
from tools.jira import core as jira

FIRST = Attempt(queue="q", task_name="t", retry_count=0, max_attempts=8)
RETRY = Attempt(queue="q", task_name="t", retry_count=1, max_attempts=8)
DEFAULTS = jira.ProjectDefaults("kanban", "software", "")
REQUEST = make_request(company_name="Acme", domain="acme.example")
RUN = REQUEST.run_id()
PLAIN_KEY = readable_key(REQUEST.domain, REQUEST.company_name)
PLAIN_NAME = readable_name(REQUEST.company_name)
KEYS = candidate_keys(PLAIN_KEY, RUN)
NAMES = candidate_names(PLAIN_NAME, RUN)


def jira_call(request=REQUEST) -> ToolCall:
    return ToolCall(
        run_id=request.run_id(),
        step_id="jira",
        tool="create_jira_project",
        args={
            "key": readable_key(request.domain, request.company_name),
            "name": readable_name(request.company_name),
            "kickoff_issues": ["Kickoff", "Access"],
        },
        request=request,
    )


def test_the_plain_key_and_name_are_used_when_free():
    site = FakeJira()
    output = jira.create_project(jira_call(), FIRST, site, DEFAULTS).output
    assert (output["project_key"], output["project_name"]) == ("ACME", "Acme onboarding")
    assert output["issues"] == ["ACME-1", "ACME-2"] and site.refused == []


def test_a_taken_key_moves_to_this_runs_own_key_when_another_client_has_it():
    site = FakeJira().others({"ACME": "Acme Anvils"})
    output = jira.create_project(jira_call(), FIRST, site, DEFAULTS).output
    assert (output["project_key"], output["project_name"]) == (KEYS[1], PLAIN_NAME)
    assert site.refused == [("ACME", PLAIN_NAME)]


def test_a_taken_name_keeps_the_key_and_tags_the_name_when_another_acme_exists():
    site = FakeJira().others({"OTHER": "ACME ONBOARDING"})  # Jira compares names without case
    output = jira.create_project(jira_call(), FIRST, site, DEFAULTS).output
    assert (output["project_key"], output["project_name"]) == ("ACME", NAMES[1])
    assert site.refused == [("ACME", PLAIN_NAME)]


def test_a_taken_key_and_name_move_both_in_one_refusal_when_the_same_client_exists():
    site = FakeJira().others({"ACME": PLAIN_NAME})
    output = jira.create_project(jira_call(), FIRST, site, DEFAULTS).output
    assert (output["project_key"], output["project_name"]) == (KEYS[1], NAMES[1])
    assert site.refused == [("ACME", PLAIN_NAME)]  # one refusal said both


def test_a_retry_adopts_its_own_project_when_the_answer_to_the_create_was_lost():
    site = FakeJira().others({"ACME": "Acme Anvils", "X": PLAIN_NAME})
    site.fail_next = VendorTimeout("read timed out")
    with pytest.raises(VendorTimeout):
        jira.create_project(jira_call(), FIRST, site, DEFAULTS)
    first = jira.create_project(jira_call(), RETRY, site, DEFAULTS).output
    again = jira.create_project(jira_call(), RETRY, site, DEFAULTS).output
    assert site.creates == 1 and len(site.issues) == 2
    assert first == again
    assert (first["project_key"], first["project_name"]) == (KEYS[1], NAMES[1])


def test_a_first_attempt_adopts_its_own_project_when_a_parallel_delivery_made_it():
    # At-least-once delivery: a twin of this task created the project a moment ago.
    site = FakeJira()
    jira.create_project(jira_call(), FIRST, site, DEFAULTS)
    output = jira.create_project(jira_call(), FIRST, site, DEFAULTS).output
    assert site.creates == 1 and output["project_key"] == "ACME" and len(site.issues) == 2


def test_every_run_gets_its_own_project_when_the_site_holds_thousands():
    rng = random.Random(5)
    others = {}
    while len(others) < 5000:
        key = "".join(rng.choices(string.ascii_uppercase, k=rng.randint(2, 10)))
        others[key] = f"{key.title()} onboarding"
    others.update({"ACME": "Acme onboarding", "ACME2": "Acme onboarding (2)"})
    site = FakeJira().others(others)
    requests = [make_request(company_name="Acme", domain=f"acme{i}.example") for i in range(50)]
    requests += [make_request(company_name="Acme", domain=f"{r}.acme.co.uk") for r in ("eu", "us")]
    outputs = [jira.create_project(jira_call(r), FIRST, site, DEFAULTS).output for r in requests]
    keys = [o["project_key"] for o in outputs]
    names = [o["project_name"].lower() for o in outputs]
    assert len(set(keys)) == len(keys) and len(set(names)) == len(names) == 52
    assert site.creates == 52
    # Each run was refused once, for the plain name all the Acmes share (and for ACME, the
    # key): none of the run-specific keys or names was taken.
    assert len(site.refused) == 52 and {name for _, name in site.refused} == {PLAIN_NAME}


def test_the_step_fails_for_good_with_project_name_taken_when_every_name_is_taken():
    site = FakeJira().others({f"OTHER{n}": name for n, name in enumerate(NAMES)})
    with pytest.raises(PermanentError) as caught:
        jira.create_project(jira_call(), FIRST, site, DEFAULTS)
    assert caught.value.code == jira.NAME_TAKEN and site.creates == 0


def test_the_step_fails_for_good_with_project_key_taken_when_every_key_is_taken():
    site = FakeJira().others({key: f"Someone {key}" for key in KEYS})
    with pytest.raises(PermanentError) as caught:
        jira.create_project(jira_call(), RETRY, site, DEFAULTS)
    assert caught.value.code == jira.KEY_TAKEN and site.creates == 0

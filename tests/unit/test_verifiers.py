"""Each tool's verifier on fakes: verified, mismatch (with its reason), or unverifiable."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator import planning
from shared.model import (
    Attempt,
    ToolCall,
    VerificationStatus,
    VerificationSubject,
    utcnow,
)
from shared.verification import Lagging
from tests.conftest import make_request, make_run
from tests.fakes import FakeChat, FakeJira, FakeMail
from tools.jira import core as jira
from tools.sendgrid import core as sendgrid
from tools.slack import core as slack

FIRST = Attempt(queue="tool-x")
RUN_ID = "run-verify"


def call(tool: str, step_id: str, args=None, inputs=None, generation=1, **request) -> ToolCall:
    return ToolCall(
        run_id=RUN_ID,
        step_id=step_id,
        tool=tool,
        generation=generation,
        args=args or {},
        inputs=inputs or {},
        request=make_request(**request),
    )


def subject_of(done: ToolCall, output: dict, *, age_s: float = 0.0) -> VerificationSubject:
    return VerificationSubject(
        run_id=done.run_id,
        step_id=done.step_id,
        tool=done.tool,
        generation=done.generation,
        args=done.args,
        output=output,
        request=done.request,
        finished_at=utcnow() - timedelta(seconds=age_s),
    )


def jira_call(generation: int = 1, **args) -> ToolCall:
    plan_args = planning.jira_args(make_run().request)
    return call("create_jira_project", "jira", {**plan_args, **args}, generation=generation)


DEFAULTS = jira.ProjectDefaults("tmpl", "software", "lead-1")


def made_project(fake: FakeJira) -> tuple[ToolCall, dict]:
    done = jira_call()
    return done, jira.create_project(done, FIRST, fake, DEFAULTS).output


def test_jira_is_verified_when_project_marker_and_issues_are_there():
    fake = FakeJira()
    done, output = made_project(fake)
    result = jira.verify_project(subject_of(done, output), fake, "lead-1")
    assert result.status is VerificationStatus.VERIFIED
    assert output["project_key"] in result.reason


def test_jira_is_a_mismatch_when_the_project_was_lost():
    fake = FakeJira()
    done, output = made_project(fake)
    del fake.projects[output["project_key"]]
    result = jira.verify_project(subject_of(done, output), fake)
    assert result.status is VerificationStatus.MISMATCH
    assert "does not exist" in result.reason


def test_jira_is_a_mismatch_when_the_project_is_somebody_elses():
    fake = FakeJira()
    done, output = made_project(fake)
    fake.projects[output["project_key"]]["description"] = "not ours"
    result = jira.verify_project(subject_of(done, output), fake)
    assert result.status is VerificationStatus.MISMATCH
    assert "marker" in result.reason


def test_jira_is_a_mismatch_when_the_lead_is_not_the_configured_one():
    fake = FakeJira()
    done, output = made_project(fake)
    result = jira.verify_project(subject_of(done, output), fake, "someone-else")
    assert result.status is VerificationStatus.MISMATCH
    assert "led by lead-1" in result.reason
    # Without a configured lead, the lead is not checked.
    assert jira.verify_project(subject_of(done, output), fake).status is (
        VerificationStatus.VERIFIED
    )


@given(lost=st.sets(st.integers(min_value=0, max_value=2)))
def test_jira_is_verified_only_when_no_kickoff_issue_was_lost(lost):
    fake = FakeJira()
    done, output = made_project(fake)
    fake.issues = [issue for i, issue in enumerate(fake.issues) if i not in lost]
    result = jira.verify_project(subject_of(done, output), fake)
    if lost:
        assert result.status is VerificationStatus.MISMATCH
        assert f"{len(lost)} of 3 kickoff issues missing" in result.reason
    else:
        assert result.status is VerificationStatus.VERIFIED


def test_jira_rerun_creates_only_the_issues_that_were_lost():
    fake = FakeJira()
    done, output = made_project(fake)
    kept = [issue["key"] for issue in fake.issues[:2]]
    fake.issues = fake.issues[:2]
    rerun = jira.create_project(jira_call(generation=2), FIRST, fake, DEFAULTS)
    assert fake.creates == 1, "the project was adopted, not made again"
    assert rerun.output["project_key"] == output["project_key"]
    assert rerun.output["issues"][:2] == kept and len(fake.issues) == 3
    assert jira.verify_project(subject_of(done, rerun.output), fake).status is (
        VerificationStatus.VERIFIED
    )


def send_call(generation: int = 1) -> ToolCall:
    draft = {
        "subject": "Welcome aboard",
        "text": "Hello Ada, welcome aboard!",
        "html": "<p>Hello Ada, welcome aboard!</p>",
    }
    return call("send_welcome_email", "email", inputs={"draft": draft}, generation=generation)


SENDER = sendgrid.Sender("welcome@chimera.example", "Chimera")


def test_sendgrid_is_verified_when_the_message_went_to_the_contact():
    mail = FakeMail()
    done = send_call()
    output = sendgrid.send(done, FIRST, mail, SENDER).output
    result = sendgrid.verify_sent(subject_of(done, output), mail, 0, utcnow())
    assert result.status is VerificationStatus.VERIFIED
    assert done.request.contact_email in result.reason


def test_sendgrid_is_a_mismatch_when_the_message_went_to_someone_else():
    mail = FakeMail()
    done = send_call()
    output = sendgrid.send(done, FIRST, mail, SENDER).output
    mail.sent[0]["to_email"] = "someone@else.example"
    result = sendgrid.verify_sent(subject_of(done, output), mail, 0, utcnow())
    assert result.status is VerificationStatus.MISMATCH
    assert "someone@else.example" in result.reason


# Whole milliseconds: a timedelta keeps microseconds, so the comparison is exact.
@given(
    age=st.integers(min_value=0, max_value=10_000_000).map(lambda ms: ms / 1000),
    max_lag=st.integers(min_value=0, max_value=600_000).map(lambda ms: ms / 1000),
)
def test_sendgrid_lags_until_max_lag_then_is_a_mismatch_when_the_message_is_missing(age, max_lag):
    mail = FakeMail()
    done = send_call()
    output = sendgrid.send(done, FIRST, mail, SENDER).output
    mail.lost.add(0)
    subject = subject_of(done, output)
    now = subject.finished_at + timedelta(seconds=age)
    if max_lag and age >= max_lag:
        result = sendgrid.verify_sent(subject, mail, max_lag, now)
        assert result.status is VerificationStatus.MISMATCH
        assert "activity feed" in result.reason
    else:  # lagging, however long it took, when max_lag is 0 (absence proves nothing)
        with pytest.raises(Lagging):
            sendgrid.verify_sent(subject, mail, max_lag, now)


def test_slack_is_verified_when_the_message_is_in_the_expected_channel():
    chat = FakeChat()
    done = call("post_slack_notice", "slack")
    output = slack.post_notice(done, FIRST, chat, "#client-onboarding").output
    result = slack.verify_notice(subject_of(done, output), chat, "#client-onboarding")
    assert result.status is VerificationStatus.VERIFIED


def test_slack_is_a_mismatch_when_the_message_is_not_in_the_expected_channel():
    chat = FakeChat()
    done = call("post_slack_notice", "slack", slack_channel="#team-a")
    output = slack.post_notice(done, FIRST, chat, "#client-onboarding").output
    chat.messages[0]["channel"] = "#elsewhere"
    result = slack.verify_notice(subject_of(done, output), chat, "#client-onboarding")
    assert result.status is VerificationStatus.MISMATCH
    assert "#team-a" in result.reason


def test_slack_is_a_mismatch_when_the_message_was_lost_and_a_rerun_posts_it_once():
    chat = FakeChat()
    done = call("post_slack_notice", "slack")
    output = slack.post_notice(done, FIRST, chat, "#client-onboarding").output
    chat.messages.clear()
    result = slack.verify_notice(subject_of(done, output), chat, "#client-onboarding")
    assert result.status is VerificationStatus.MISMATCH
    slack.post_notice(call("post_slack_notice", "slack", generation=2), FIRST, chat, "")
    again = slack.post_notice(call("post_slack_notice", "slack", generation=3), FIRST, chat, "")
    assert len(chat.messages) == 1 and again.output["recovered"] is True

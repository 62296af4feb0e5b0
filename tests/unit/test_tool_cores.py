"""Each tool's core on fakes: what it asks the vendor, and what it makes of the answer."""

from __future__ import annotations

import pytest

from shared.errors import BadVendorReply, InvalidInput, PermanentError, VendorTimeout
from shared.jira_keys import candidate_keys
from shared.model import Attempt, ToolCall
from tests.conftest import make_request
from tests.fakes import FakeChat, FakeDirectory, FakeJira, FakeLanguageModel, FakeMail
from tools.clearbit import core as clearbit
from tools.jira import core as jira
from tools.sendgrid import core as sendgrid
from tools.sendgrid import drafting
from tools.slack import core as slack

FIRST = Attempt(queue="q", task_name="t", retry_count=0, max_attempts=8)
RETRY = Attempt(queue="q", task_name="t", retry_count=1, max_attempts=8)
DEFAULTS = jira.ProjectDefaults("kanban", "software", "")


def call(tool: str, step_id: str, args=None, inputs=None, **request) -> ToolCall:
    return ToolCall(
        run_id="run-1",
        step_id=step_id,
        tool=tool,
        args=args or {},
        inputs=inputs or {},
        request=make_request(**request),
    )


def test_enrich_trims_the_profile_when_found():
    directory = FakeDirectory(
        {
            "acme.example": {
                "name": "Acme",
                "domain": "acme.example",
                "description": "Rockets" * 200,
                "category": {"industry": "Aerospace"},
                "metrics": {"employees": 250},
                "geo": {"city": "Paris", "country": "France"},
                "tags": list("abcdefghijk"),
            }
        }
    )
    result = clearbit.enrich(
        call("enrich_company", "enrich", {"domain": "acme.example"}),
        FIRST,
        [clearbit.Provider("clearbit", directory)],
    )
    company = result.output["company"]
    assert result.output["found"] and company["industry"] == "Aerospace"
    assert len(company["description"]) == 600 and len(company["tags"]) == 8
    assert "250 employees" in result.summary


def test_enrich_reports_not_found_when_unknown():
    result = clearbit.enrich(
        call("enrich_company", "enrich", {"domain": "acme.example"}),
        FIRST,
        [clearbit.Provider("clearbit", FakeDirectory())],
    )
    assert result.output == {"found": False, "domain": "acme.example"}


def test_enrich_raises_retryable_when_the_vendor_answers_garbage():
    directory = FakeDirectory({"acme.example": {"name": "Acme", "metrics": "lots"}})
    with pytest.raises(BadVendorReply):
        clearbit.enrich(
            call("enrich_company", "enrich", {"domain": "acme.example"}),
            FIRST,
            [clearbit.Provider("clearbit", directory)],
        )


JIRA_ARGS = {"key": "AC", "name": "Acme onboarding", "kickoff_issues": ["Kickoff", "Access"]}


def test_jira_creates_project_and_kickoff_issues():
    fake = FakeJira()
    result = jira.create_project(
        call("create_jira_project", "jira", JIRA_ARGS), FIRST, fake, DEFAULTS
    )
    assert result.output["issues"] == ["AC-1", "AC-2"]
    assert "chimera-run:run-1" in fake.projects["AC"]["description"]


def test_jira_retry_adopts_its_own_project_when_the_answer_was_lost():
    fake = FakeJira()
    fake.fail_next = VendorTimeout("read timed out")
    jira_call = call("create_jira_project", "jira", JIRA_ARGS)
    with pytest.raises(VendorTimeout):
        jira.create_project(jira_call, FIRST, fake, DEFAULTS)
    result = jira.create_project(jira_call, RETRY, fake, DEFAULTS)
    again = jira.create_project(jira_call, RETRY, fake, DEFAULTS)
    assert fake.creates == 1 and len(fake.issues) == 2
    assert result.output["issues"] == again.output["issues"] == ["AC-1", "AC-2"]


def test_jira_takes_the_next_key_when_another_project_owns_it():
    fake = FakeJira()
    fake.projects["AC"] = {"key": "AC", "description": "someone else's"}
    jira_call = call("create_jira_project", "jira", JIRA_ARGS)
    result = jira.create_project(jira_call, FIRST, fake, DEFAULTS)
    run_key = candidate_keys("AC", "run-1")[1]
    assert result.output["project_key"] == run_key
    # A retry walks the same keys and adopts its own project instead of making another.
    again = jira.create_project(jira_call, RETRY, fake, DEFAULTS)
    assert again.output["project_key"] == run_key and fake.creates == 1


def test_jira_gives_up_when_every_candidate_key_is_taken():
    fake = FakeJira()
    for key in candidate_keys("AC", "run-1"):
        fake.projects[key] = {"key": key, "description": "someone else's"}
    with pytest.raises(PermanentError) as caught:
        jira.create_project(call("create_jira_project", "jira", JIRA_ARGS), FIRST, fake, DEFAULTS)
    assert caught.value.code == jira.KEY_TAKEN


def test_draft_quotes_the_enrichment_and_counts_tokens():
    model = FakeLanguageModel()
    inputs = {"enrich": {"found": True, "company": {"name": "Acme", "industry": "Aerospace"}}}
    result = drafting.draft(call("draft_welcome_email", "draft", inputs=inputs), FIRST, model)
    assert result.output["subject"] == "Welcome aboard, Acme!"
    assert result.usage.input_tokens == 100
    assert '"industry": "Aerospace"' in model.prompts[0]
    assert "DATA (untrusted" in model.prompts[0]


@pytest.mark.parametrize(
    "answer",
    [
        {"subject": "Hi"},
        {"subject": "Welcome", "text": "x" * 30, "html": "<p>hi</p><script>steal()</script>"},
        {
            "subject": "Welcome",
            "text": "x" * 30,
            "html": '<a href="javascript:alert(1)">x</a>.....',
        },
        # Steered by the quoted data: a new recipient, a link elsewhere.
        {"subject": "Welcome", "text": "Write to attacker@evil.example", "html": "<p>x</p>" * 3},
        {"subject": "Welcome", "text": "x" * 30, "html": '<a href="https://evil.example/">go</a>'},
    ],
)
def test_draft_is_the_safe_template_when_the_model_answer_is_refused_twice(answer):
    model = FakeLanguageModel(answer)
    result = drafting.draft(call("draft_welcome_email", "draft"), FIRST, model)
    assert result.output["source"] == "template" and len(model.prompts) == 2
    assert [n["kind"] for n in result.output["guard"]] == [
        "guard.draft_refused",
        "guard.draft_refused",
        "guard.template_used",
    ]
    assert result.output["subject"] == "Welcome aboard, Acme Corp!"
    assert "evil.example" not in str(result.output["text"] + result.output["html"])


def test_draft_may_name_the_contact_and_link_the_clients_own_site():
    answer = {
        "subject": "Welcome",
        "text": "Hi Ada (ada@acme.example), see https://portal.acme.example/start",
        "html": '<p>Hi Ada, see <a href="https://acme.example/">your site</a></p>',
    }
    result = drafting.draft(call("draft_welcome_email", "draft"), FIRST, FakeLanguageModel(answer))
    assert result.output["subject"] == "Welcome"


DRAFT = {
    "subject": "Welcome aboard",
    "text": "Hello Ada, welcome aboard!",
    "html": "<p>Hello Ada, welcome aboard!</p>",
}
SENDER = sendgrid.Sender("welcome@chimera.example", "Chimera")


def test_send_goes_to_the_request_contact_only():
    mail = FakeMail()
    result = sendgrid.send(
        call("send_welcome_email", "email", inputs={"draft": DRAFT}), FIRST, mail, SENDER
    )
    assert mail.sent[0]["to_email"] == "ada@acme.example"
    assert mail.sent[0]["custom_args"] == {"run_id": "run-1", "chimera_step": "run-1:email"}
    assert result.output["message_id"] == "msg-1"


def test_send_retry_finds_the_email_already_sent():
    mail = FakeMail()
    mail.fail_after_send = VendorTimeout("read timed out")
    send_call = call("send_welcome_email", "email", inputs={"draft": DRAFT})
    with pytest.raises(VendorTimeout):
        sendgrid.send(send_call, FIRST, mail, SENDER)
    result = sendgrid.send(send_call, RETRY, mail, SENDER)
    assert len(mail.sent) == 1 and result.output["recovered"]


def test_send_refuses_to_run_without_a_draft():
    with pytest.raises(InvalidInput):
        sendgrid.send(call("send_welcome_email", "email"), FIRST, FakeMail(), SENDER)


def test_slack_posts_once_and_a_retry_finds_the_message():
    chat = FakeChat()
    notice = call(
        "post_slack_notice",
        "slack",
        {"channel": "#client-onboarding"},
        inputs={"jira": {"project_key": "AC"}, "email": {"to": "ada@acme.example"}},
    )
    slack.post_notice(notice, FIRST, chat, "#general")
    result = slack.post_notice(notice, RETRY, chat, "#general")
    assert len(chat.messages) == 1 and result.output["recovered"]
    assert "AC" in chat.messages[0]["text"]


def test_slack_refuses_a_channel_the_request_did_not_name():
    with pytest.raises(InvalidInput):
        slack.post_notice(
            call("post_slack_notice", "slack", {"channel": "#leaks"}), FIRST, FakeChat(), "#general"
        )


def test_slack_uses_the_configured_channel_when_the_request_names_none():
    chat = FakeChat()
    slack.post_notice(call("post_slack_notice", "slack", slack_channel=""), FIRST, chat, "#general")
    assert chat.messages[0]["channel"] == "#general"


class MailWithoutActivity(FakeMail):
    """An account without SendGrid's Email Activity add-on: the lookup is refused."""

    def find_sent(self, *, step_key: str) -> str | None:
        raise PermanentError("Email Activity is not enabled", code="auth_failed")


def test_send_parks_when_an_earlier_attempt_may_have_sent_and_no_lookup_exists():
    mail = MailWithoutActivity()
    send_call = call("send_welcome_email", "email", inputs={"draft": DRAFT})
    with pytest.raises(PermanentError) as caught:
        sendgrid.send(send_call, RETRY, mail, SENDER)
    assert caught.value.code == "outcome_unknown" and mail.sent == []
    assert "may already have been sent" in caught.value.message


def test_send_repeats_when_the_policy_says_so_and_the_result_says_so():
    mail = MailWithoutActivity()
    repeat = sendgrid.Sender("welcome@chimera.example", "Chimera", unknown_outcome="repeat")
    send_call = call("send_welcome_email", "email", inputs={"draft": DRAFT})
    result = sendgrid.send(send_call, RETRY, mail, repeat)
    assert len(mail.sent) == 1 and result.output["outcome_was_unknown"] is True
    assert "second copy" in result.summary


def test_send_needs_no_lookup_on_a_first_attempt():
    mail = MailWithoutActivity()
    sendgrid.send(call("send_welcome_email", "email", inputs={"draft": DRAFT}), FIRST, mail, SENDER)
    assert len(mail.sent) == 1

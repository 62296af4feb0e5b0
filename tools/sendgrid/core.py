"""The welcome email sent exactly once: the draft step's email to the request's contact, found
again rather than sent twice when an earlier attempt may have sent it, and guarded again on
what is about to go out (the draft step's guard is not the last word on what the ledger holds)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from pydantic import ValidationError

from shared.errors import InvalidInput, OutcomeUnknown, PermanentError
from shared.model import (
    GUARD_OUTPUT_KEY,
    Attempt,
    Attention,
    GuardNote,
    StepResult,
    ToolCall,
    VerificationResult,
    VerificationSubject,
)
from shared.verification import Lagging, mismatch, verified
from tools.sendgrid.drafting import EmailDraft, review, template_email


class MailPort(Protocol):
    def send(
        self,
        *,
        to_email: str,
        to_name: str,
        from_email: str,
        from_name: str,
        subject: str,
        text: str,
        html: str,
        custom_args: dict[str, str],
    ) -> str:
        """Send and return the vendor's message id."""
        ...

    def find_sent(self, *, step_key: str) -> str | None:
        """The id of a message already sent for this step, if any."""
        ...

    def find_message(self, *, step_key: str) -> dict[str, str] | None:
        """The newest message sent for this step (message_id, to_email, subject), if seen."""
        ...


@dataclass(frozen=True)
class Sender:
    email: str
    name: str
    # When an earlier attempt may have sent the email and SendGrid cannot tell us: `park`
    # the run for a person to decide, or `repeat` the send (the client may get two).
    unknown_outcome: str = "park"


def step_key(call: ToolCall | VerificationSubject) -> str:
    """The same for every attempt and generation of this step: one email per run."""
    return f"{call.run_id}:{call.step_id}"


def verify_sent(
    subject: VerificationSubject, mail: MailPort, max_lag: float, now: datetime
) -> VerificationResult:
    """SendGrid's activity feed has the step's message (by its custom arg), for the request's
    contact. Missing: the feed lags (Lagging, asked again) until `max_lag` seconds after the
    send, when it counts as lost; with max_lag 0, never concluded from absence."""
    found = mail.find_message(step_key=step_key(subject))
    expected = subject.request.contact_email
    if found is None:
        waited = (now - subject.finished_at).total_seconds()
        if max_lag and waited >= max_lag:
            return mismatch(
                f"no message for this step in SendGrid's activity feed {waited:.0f} s after "
                f"the send (it lags at most {max_lag:g} s)"
            )
        raise Lagging("the message is not in SendGrid's activity feed yet")
    if found.get("to_email", "").lower() != expected.lower():
        return mismatch(f"the message went to {found.get('to_email')!r}, not {expected}")
    return verified(f"message {found.get('message_id')} accepted for {expected}")


def send(call: ToolCall, attempt: Attempt, mail: MailPort, sender: Sender) -> StepResult:
    request = call.request
    try:
        EmailDraft.model_validate(call.inputs["draft"])
    except (KeyError, ValidationError):
        raise InvalidInput("send_welcome_email needs the draft step's output") from None
    email, notes = guarded_email(call, sender)
    key = step_key(call)
    outcome_unknown = False
    if attempt.may_have_run:
        try:
            sent = mail.find_sent(step_key=key)
        except PermanentError as exc:
            # No Email Activity on this account (a paid add-on): we cannot know.
            if sender.unknown_outcome != "repeat":
                raise OutcomeUnknown(
                    f"the welcome email to {request.contact_email} may already have been sent "
                    f"and SendGrid's message lookup is unavailable ({exc.code}); check SendGrid, "
                    "then resume the run to send it or cancel it"
                ) from None
            sent, outcome_unknown = None, True
        if sent:
            return StepResult(
                output={
                    "message_id": sent,
                    "to": request.contact_email,
                    "subject": email.subject,
                    "recovered": True,
                    **_notes(notes, call, sent),
                },
                summary=f"already sent to {request.contact_email}",
            )
    message_id = mail.send(
        to_email=request.contact_email,
        to_name=request.contact_name,
        from_email=sender.email,
        from_name=sender.name,
        subject=email.subject,
        text=email.text,
        html=email.html,
        custom_args={"run_id": call.run_id, "chimera_step": key},
    )
    output: dict[str, Any] = {
        "message_id": message_id,
        "to": request.contact_email,
        "subject": email.subject,
        **_notes(notes, call, message_id),
    }
    if outcome_unknown:
        # The run says so: an earlier attempt may have sent it too.
        output["outcome_was_unknown"] = True
    return StepResult(
        output=output,
        summary=f"sent to {request.contact_email}"
        + (
            " (an earlier attempt's outcome was unknown: it may be a second copy)"
            if outcome_unknown
            else ""
        ),
    )


def guarded_email(call: ToolCall, sender: Sender) -> tuple[EmailDraft, list[GuardNote]]:
    """The email to send: the draft from the ledger when the guard passes it again for this
    request (no address but the contact's, no link off the client's domain, no active HTML, no
    credential), else the safe template, with a note that flags the run.

    The template rather than a parked run: a draft refused here is refused for good (resuming
    would send the same draft), and the template is what the draft step sends when it refuses
    a draft itself (docs/decisions/0010f-tasks-carry-references.md).
    """
    verdict = review(call.inputs["draft"], call.request)
    if verdict.email is not None:
        return verdict.email, []
    note = GuardNote(
        kind="guard.send_refused",
        attention=(Attention.DRAFT_REFUSED,)
        + ((Attention.INJECTION_SUSPECTED,) if verdict.hostile else ()),
        detail={"reasons": list(verdict.reasons), "sent": "template"},
    )
    return template_email(call.request, sender.name), [note]


def _notes(notes: list[GuardNote], call: ToolCall, message_id: str) -> dict[str, Any]:
    """The guard notes of the send, and the one saying the template, not a model's draft,
    went to the client (chosen at draft time or here)."""
    template = bool(notes) or call.inputs.get("draft", {}).get("source") == "template"
    if template:
        notes = [
            *notes,
            GuardNote(
                kind="guard.template_sent",
                attention=(Attention.TEMPLATE_EMAIL,),
                detail={"to": call.request.contact_email, "message_id": message_id},
            ),
        ]
    if not notes:
        return {}
    return {GUARD_OUTPUT_KEY: [note.model_dump(mode="json") for note in notes]}

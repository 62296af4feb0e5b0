"""The team's Slack notice, posted once per run: its metadata lets a retry find it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from shared.errors import InvalidInput
from shared.model import (
    Attempt,
    OnboardingRequest,
    StepResult,
    ToolCall,
    VerificationResult,
    VerificationSubject,
)
from shared.registry import SlackNoticeArgs
from shared.verification import mismatch, verified

EVENT_TYPE = "chimera_onboarding"


class ChatPort(Protocol):
    def post_message(
        self,
        *,
        channel: str,
        text: str,
        blocks: list[dict[str, Any]] | None,
        metadata: dict[str, Any],
    ) -> str:
        """Post and return the message's ts."""
        ...

    def find_message(
        self, *, channel: str, event_type: str, step_key: str, since: datetime | None = None
    ) -> str | None:
        """The ts of the message whose metadata names `step_key`, posted since `since`."""
        ...


def channel_for(call: ToolCall | VerificationSubject, default_channel: str) -> str:
    """Only the request or configuration picks a channel, never a plan's free text."""
    return _channel(SlackNoticeArgs.model_validate(call.args), call.request, default_channel)


def _channel(args: SlackNoticeArgs, request: OnboardingRequest, default_channel: str) -> str:
    allowed = {c for c in (request.slack_channel, default_channel) if c}
    channel = args.channel or request.slack_channel or default_channel
    if channel not in allowed:
        raise InvalidInput(f"channel {channel!r} is neither the request's nor the configured one")
    return channel


def notice_text(call: ToolCall) -> str:
    request = call.request
    company = call.inputs.get("enrich", {}).get("company") or {}
    jira = call.inputs.get("jira", {})
    email = call.inputs.get("email", {})
    lines = [f":tada: *{request.company_name}* ({request.domain}) is onboarded."]
    if company.get("industry"):
        lines.append(f"Industry: {company['industry']}")
    if jira.get("project_key"):
        lines.append(f"Jira project: {jira['project_key']} {jira.get('project_url', '')}".strip())
    # Only the request names whom the email went to: a ledger saying otherwise is not repeated.
    if email.get("to") and str(email["to"]).lower() == str(request.contact_email).lower():
        lines.append(f'Welcome email sent to {email["to"]}: "{email.get("subject", "")}"')
    lines.append(f"Goal: {request.goal}")
    return "\n".join(lines)


def post_notice(
    call: ToolCall, attempt: Attempt, chat: ChatPort, default_channel: str
) -> StepResult:
    channel = channel_for(call, default_channel)
    key = f"{call.run_id}:{call.step_id}"
    # A re-run (a later generation) looks first too: it posts only what is not there.
    if attempt.may_have_run or call.generation > 1:
        ts = chat.find_message(
            channel=channel, event_type=EVENT_TYPE, step_key=key, since=call.dispatched_at
        )
        if ts:
            return StepResult(
                output={"channel": channel, "ts": ts, "recovered": True},
                summary=f"already posted in {channel}",
            )
    text = notice_text(call)
    ts = chat.post_message(
        channel=channel,
        text=text,
        blocks=[{"type": "section", "text": {"type": "mrkdwn", "text": text}}],
        metadata={
            "event_type": EVENT_TYPE,
            "event_payload": {
                "run_id": call.run_id,
                "step_key": key,
                "company": call.request.company_name,
            },
        },
    )
    return StepResult(output={"channel": channel, "ts": ts}, summary=f"posted in {channel}")


def verify_notice(
    subject: VerificationSubject, chat: ChatPort, default_channel: str
) -> VerificationResult:
    """The channel the request or configuration names has a message whose metadata names
    this step."""
    expected = channel_for(subject, default_channel)
    key = f"{subject.run_id}:{subject.step_id}"
    ts = chat.find_message(
        channel=expected, event_type=EVENT_TYPE, step_key=key, since=_posted_at(subject)
    )
    if ts is None:
        posted = subject.output.get("channel")
        where = f" (the step answered {posted})" if posted and posted != expected else ""
        return mismatch(f"no message with this step's metadata in {expected}{where}")
    return verified(f"message {ts} in {expected}")


def _posted_at(subject: VerificationSubject) -> datetime:
    """When the step's message was posted: its ts, as Slack answered it; else as far back
    as the step's queue could have retried it before it finished."""
    try:
        return datetime.fromtimestamp(float(subject.output["ts"]), tz=UTC)
    except (KeyError, TypeError, ValueError, OverflowError):
        return subject.finished_at - timedelta(days=1)

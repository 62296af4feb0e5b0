"""The tools the agent may use: names, argument schemas and the function that runs each."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from pydantic import Field

from shared.model import Model
from shared.queues import tool_queue


class EnrichArgs(Model):
    domain: str = Field(min_length=3, max_length=253)


# Every text a plan holds is bounded, so the run document that keeps the plan stays small
# whatever the model answers: Jira refuses a summary over 255 characters; a highlight is a line.
KickoffIssue = Annotated[str, Field(max_length=255)]
Highlight = Annotated[str, Field(max_length=500)]


class JiraProjectArgs(Model):
    key: str = Field(pattern=r"^[A-Z][A-Z0-9]{1,9}$")
    name: str = Field(min_length=1, max_length=80)
    template: str = Field(default="", max_length=200)
    kickoff_issues: tuple[KickoffIssue, ...] = Field(default=(), max_length=10)


class DraftEmailArgs(Model):
    tone: str = Field(default="warm and professional", max_length=100)
    highlights: tuple[Highlight, ...] = Field(default=(), max_length=5)


class SendEmailArgs(Model):
    """The draft comes from the draft step's output; the recipient from the request."""


class SlackNoticeArgs(Model):
    # Empty means the configured channel; any other must be the request's own.
    channel: str = Field(default="", max_length=80)


@dataclass(frozen=True)
class ToolSpec:
    name: str
    function: str  # the deployed function (and its queue) that runs this tool
    vendor: str  # whose API it calls: its circuit breaker and concurrency limit
    args: type[Model]
    # A side effect a client or colleague sees; such a tool runs at most once per run.
    side_effect: bool
    description: str
    # The step id a plan gives this tool: the tools that read its output look it up by it.
    step_id: str
    # The steps whose output it reads: a plan must run it after them.
    reads: tuple[str, ...] = ()
    # It reaches the client: with require_approval, a person approves it before it runs.
    needs_approval: bool = False
    # Its tool function has a read-only verifier of the effect (see shared/verification.py).
    verifiable: bool = False

    @property
    def queue(self) -> str:
        return tool_queue(self.function)


_SPECS = (
    ToolSpec(
        name="enrich_company",
        function="clearbit",
        vendor="clearbit",
        args=EnrichArgs,
        side_effect=False,
        description="Look up the company's public profile.",
        step_id="enrich",
    ),
    ToolSpec(
        name="create_jira_project",
        function="jira",
        vendor="jira",
        args=JiraProjectArgs,
        side_effect=True,
        description="Create the client's Jira project and issues.",
        step_id="jira",
        verifiable=True,
    ),
    ToolSpec(
        name="draft_welcome_email",
        function="sendgrid",
        vendor="gemini",
        args=DraftEmailArgs,
        side_effect=False,
        description="Draft a personalised welcome email with the model.",
        step_id="draft",
        reads=("enrich",),
    ),
    ToolSpec(
        name="send_welcome_email",
        function="sendgrid",
        vendor="sendgrid",
        args=SendEmailArgs,
        side_effect=True,
        description="Send the drafted welcome email to the client's contact.",
        step_id="email",
        reads=("draft",),
        needs_approval=True,
        verifiable=True,
    ),
    ToolSpec(
        name="post_slack_notice",
        function="slack",
        vendor="slack",
        args=SlackNoticeArgs,
        side_effect=True,
        description="Tell the team in Slack the client is onboarded.",
        step_id="slack",
        reads=("enrich", "jira", "email"),
        verifiable=True,
    ),
)
TOOLS: dict[str, ToolSpec] = {spec.name: spec for spec in _SPECS}

# What an onboarding needs: every plan has these, each under its step id.
ONBOARDING: tuple[str, ...] = tuple(spec.name for spec in _SPECS)

FUNCTIONS: tuple[str, ...] = tuple(sorted({spec.function for spec in TOOLS.values()}))

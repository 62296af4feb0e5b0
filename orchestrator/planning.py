"""The plan without the model: the default onboarding, and the Jira project it opens."""

from __future__ import annotations

from typing import Any

from shared import jira_keys
from shared.model import OnboardingRequest, PlanStep, RunState


def default_plan(run: RunState) -> tuple[PlanStep, ...]:
    """The onboarding without the model: enrich, then Jira and the draft, then email, Slack."""
    request = run.request
    return (
        PlanStep(step_id="enrich", tool="enrich_company", args={"domain": request.domain}),
        PlanStep(
            step_id="jira",
            tool="create_jira_project",
            args=jira_args(request),
            depends_on=("enrich",),
        ),
        PlanStep(step_id="draft", tool="draft_welcome_email", depends_on=("enrich",)),
        PlanStep(step_id="email", tool="send_welcome_email", depends_on=("draft",)),
        PlanStep(
            step_id="slack",
            tool="post_slack_notice",
            args={"channel": request.slack_channel},
            depends_on=("jira", "email"),
        ),
    )


def jira_args(request: OnboardingRequest) -> dict[str, Any]:
    """The default Jira project: its key and name from the client, three kickoff issues."""
    return {
        "key": project_key(request.domain, request.company_name),
        "name": jira_keys.readable_name(request.company_name),
        "kickoff_issues": [
            "Kickoff call with " + (request.contact_name or request.company_name),
            "Confirm goals: " + request.goal[:120],
            "Grant workspace access",
        ],
    }


def project_key(domain: str, company_name: str = "") -> str:
    """The plain Jira key the client's project is tried under first (acme.co.uk: ACME); the
    tool moves on to keys only this run makes when it is taken."""
    return jira_keys.readable_key(domain, company_name)

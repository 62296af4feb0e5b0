"""tool-jira: create the client's Jira project."""

from __future__ import annotations

import functions_framework

from shared.runtime import per_runtime, runtime
from shared.tool_endpoint import tool_endpoint
from shared.verification import with_verifiers
from tools.jira import core
from tools.jira.client import JiraClient

jira = per_runtime(JiraClient)


def _defaults() -> core.ProjectDefaults:
    settings = runtime().settings
    return core.ProjectDefaults(
        settings.jira_project_template, settings.jira_project_type, settings.jira_lead_account_id
    )


run_tool = functions_framework.http(
    with_verifiers(
        "jira",
        tool_endpoint(
            "jira",
            {
                "create_jira_project": lambda call, attempt: core.create_project(
                    call, attempt, jira(), _defaults()
                ),
            },
        ),
        {
            "create_jira_project": lambda subject: core.verify_project(
                subject, jira(), runtime().settings.jira_lead_account_id
            ),
        },
    )
)

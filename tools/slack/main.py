"""tool-slack: tell the team in Slack."""

from __future__ import annotations

import functions_framework

from shared.runtime import per_runtime, runtime
from shared.tool_endpoint import tool_endpoint
from shared.verification import with_verifiers
from tools.slack import core
from tools.slack.client import SlackChat

chat = per_runtime(SlackChat)

run_tool = functions_framework.http(
    with_verifiers(
        "slack",
        tool_endpoint(
            "slack",
            {
                "post_slack_notice": lambda call, attempt: core.post_notice(
                    call, attempt, chat(), runtime().settings.default_slack_channel
                ),
            },
        ),
        {
            "post_slack_notice": lambda subject: core.verify_notice(
                subject, chat(), runtime().settings.default_slack_channel
            ),
        },
    )
)

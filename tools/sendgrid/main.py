"""tool-sendgrid: draft the welcome email with the model, and send it."""

from __future__ import annotations

import functions_framework

from shared.gemini import GeminiLanguageModel
from shared.runtime import per_runtime, runtime
from shared.tool_endpoint import tool_endpoint
from tools.sendgrid import core
from tools.sendgrid.client import SendGridMailer

mailer = per_runtime(SendGridMailer)
model = per_runtime(GeminiLanguageModel)


def _sender() -> core.Sender:
    settings = runtime().settings
    return core.Sender(settings.sender_email, settings.sender_name, settings.unknown_outcome)


run_tool = functions_framework.http(
    tool_endpoint(
        "sendgrid",
        {
            "draft_welcome_email": lambda call, attempt: core.draft(call, attempt, model()),
            "send_welcome_email": lambda call, attempt: core.send(
                call, attempt, mailer(), _sender()
            ),
        },
    )
)

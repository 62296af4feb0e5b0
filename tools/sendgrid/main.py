"""tool-sendgrid: draft the welcome email with the model, and send it."""

from __future__ import annotations

import time
from collections.abc import Callable

import functions_framework

from shared.model import utcnow
from shared.runtime import language_model, per_runtime, runtime
from shared.tool_endpoint import tool_endpoint
from shared.verification import with_verifiers
from tools.sendgrid import core, drafting
from tools.sendgrid.client import SendGridMailer

mailer = per_runtime(SendGridMailer)
model = per_runtime(language_model)


# A re-draft is asked for only while another whole model call fits in this share of the
# task's dispatch deadline; else the template goes out at once.
DEADLINE_SHARE = 0.75


def _sender() -> core.Sender:
    settings = runtime().settings
    return core.Sender(settings.sender_email, settings.sender_name, settings.unknown_outcome)


def _time_for_another() -> Callable[[], bool]:
    settings, started = runtime().settings, time.monotonic()
    budget = settings.dispatch_deadline * DEADLINE_SHARE
    return lambda: time.monotonic() - started + settings.vendor_deadline < budget


def _draft(call, attempt):  # type: ignore[no-untyped-def]
    return drafting.draft(
        call, attempt, model(), runtime().settings.sender_name, _time_for_another()
    )


run_tool = functions_framework.http(
    with_verifiers(
        "sendgrid",
        tool_endpoint(
            "sendgrid",
            {
                "draft_welcome_email": _draft,
                "send_welcome_email": lambda call, attempt: core.send(
                    call, attempt, mailer(), _sender()
                ),
            },
        ),
        {
            "send_welcome_email": lambda subject: core.verify_sent(
                subject, mailer(), runtime().settings.verify_max_lag, utcnow()
            ),
        },
    )
)

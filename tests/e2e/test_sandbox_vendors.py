"""Every vendor client, through its real SDK, against the vendor sandbox."""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from sandbox.faults import FaultPlan
from sandbox.server import SandboxServer
from shared.errors import (
    AuthFailed,
    BadVendorReply,
    InvalidInput,
    NotFound,
    RateLimited,
    RetryableError,
    VendorTimeout,
    VendorUnavailable,
)
from shared.gemini import GeminiLanguageModel
from shared.settings import Settings
from tools.clearbit.client import ClearbitDirectory
from tools.jira.client import JiraClient, ProjectKeyTaken
from tools.sendgrid.client import SendGridMailer
from tools.slack.client import CLOCK_SKEW_S, HISTORY_LIMIT, SlackChat

EMAIL_SCHEMA = {
    "type": "object",
    "properties": {
        "subject": {"type": "string", "maxLength": 120},
        "text": {"type": "string"},
        "html": {"type": "string"},
    },
    "required": ["subject", "text", "html"],
}
EMAIL_SYSTEM = "TASK: draft_welcome_email\nYou write warm, concise welcome emails."
EMAIL_PROMPT = (
    'Company name: "Acme Robotics"\n'
    'Contact name: "Jane Doe"\n'
    'Goal: "Launch the customer portal by March"\n'
    "Industry: Industrial Machinery\n"
    "Description: Acme builds warehouse robots."
)


def settings_for(server: SandboxServer, home: Path, **changes: Any) -> Settings:
    values: dict[str, Any] = {"vendor_connect_timeout": 2.0, "vendor_read_timeout": 5.0}
    values.update(changes)
    return Settings(home=home, sandbox_url=server.url, **values)


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[SandboxServer]:
    server = SandboxServer(tmp_path / "sandbox").start()
    yield server
    server.stop()


@pytest.fixture
def settings(sandbox: SandboxServer, tmp_path: Path) -> Settings:
    return settings_for(sandbox, tmp_path)


def send_welcome(mailer: SendGridMailer, *, step_key: str, run_id: str) -> str:
    return mailer.send(
        to_email="jane@acme-robotics.com",
        to_name="Jane Doe",
        from_email="welcome@chimera.example",
        from_name="Chimera Onboarding",
        subject="Welcome aboard",
        text="Hello Jane",
        html="<p>Hello Jane</p>",
        custom_args={"chimera_step": step_key, "run_id": run_id},
    )


def post_notice(chat: SlackChat, *, channel: str, step_key: str, run_id: str) -> str:
    return chat.post_message(
        channel=channel,
        text="Acme Robotics is being onboarded",
        blocks=[{"type": "section", "text": {"type": "mrkdwn", "text": "*Acme Robotics*"}}],
        metadata={
            "event_type": "chimera_step_done",
            "event_payload": {"run_id": run_id, "step_key": step_key},
        },
    )


# -- Clearbit -----------------------------------------------------------------------------


def test_enrichment_returns_company_when_domain_known(
    settings: Settings, sandbox: SandboxServer
) -> None:
    company = ClearbitDirectory(settings).find_company("acme-robotics.com", run_id="run-e1")

    assert company is not None
    assert company["name"] == "Acme Robotics"
    assert company["domain"] == "acme-robotics.com"
    assert company["category"]["industry"]
    assert company["metrics"]["employeesRange"]
    assert company["geo"]["city"]
    again = ClearbitDirectory(settings).find_company("acme-robotics.com", run_id="run-e1")
    assert again == company  # deterministic
    [record, _] = sandbox.records.list(vendor="clearbit")
    assert (record["action"], record["run_id"], record["status"]) == ("company.find", "run-e1", 200)
    assert record["request"] == {"domain": "acme-robotics.com"}


def test_enrichment_returns_none_when_domain_unknown(
    settings: Settings, sandbox: SandboxServer
) -> None:
    directory = ClearbitDirectory(settings)

    assert directory.find_company("unknown.example.com", run_id="run-e2") is None
    assert directory.find_company("acme.invalid", run_id="run-e2") is None
    assert [r["status"] for r in sandbox.records.list(run_id="run-e2")] == [404, 404]


def test_enrichment_pending_is_retryable_when_clearbit_queues(settings: Settings) -> None:
    with pytest.raises(RetryableError) as caught:
        ClearbitDirectory(settings).find_company("pending.example.com", run_id="run-e3")
    assert caught.value.code == "enrichment_pending"


def test_enrichment_auth_fails_when_key_missing(settings: Settings) -> None:
    with pytest.raises(AuthFailed):
        ClearbitDirectory(settings.replace(clearbit_key="")).find_company(
            "acme.com", run_id="run-e4"
        )


# -- Jira ---------------------------------------------------------------------------------


def test_jira_project_created_found_and_key_guarded(
    settings: Settings, sandbox: SandboxServer
) -> None:
    jira = JiraClient(settings)
    assert jira.find_project("ACME") is None

    created = jira.create_project(
        key="ACME",
        name="Acme Robotics onboarding",
        description="Onboarding Acme Robotics. chimera-run:run-j1",
        template=settings.jira_project_template,
        project_type="software",
        lead_account_id="",
    )

    assert created["key"] == "ACME"
    assert created["url"] == f"{settings.vendor_url('jira')}/browse/ACME"
    found = jira.find_project("ACME")
    assert found is not None
    assert (found["key"], found["id"], found["name"]) == (
        "ACME",
        created["id"],
        "Acme Robotics onboarding",
    )
    assert "chimera-run:run-j1" in found["description"]
    with pytest.raises(ProjectKeyTaken) as caught:
        jira.create_project(
            key="ACME",
            name="Another name",
            description="chimera-run:run-j1",
            template=settings.jira_project_template,
            project_type="software",
            lead_account_id="712020:someone",
        )
    assert caught.value.code == "project_key_taken"
    assert not caught.value.retryable

    creates = sandbox.records.list(vendor="jira", action="project.create")
    assert [(r["run_id"], r["status"]) for r in creates] == [("run-j1", 201), ("run-j1", 400)]
    # No lead given: the client asked Jira who it is, and made that user the lead.
    assert sandbox.records.list(vendor="jira", action="myself")
    assert creates[0]["request"]["leadAccountId"].startswith("712020:")


def test_jira_issue_created_and_found_by_label(settings: Settings, sandbox: SandboxServer) -> None:
    jira = JiraClient(settings)
    jira.create_project(
        key="ONB",
        name="Onboarding",
        description="",
        template=settings.jira_project_template,
        project_type="software",
        lead_account_id="712020:lead",
    )

    issues = jira.create_issues(
        project_key="ONB",
        summaries=["Kick-off with Acme Robotics", "Grant access"],
        description="Set up the kick-off. chimera-run:run-j2",
        labels=["chimera-step-kickoff"],
    )

    browse = f"{settings.vendor_url('jira')}/browse"
    assert issues == [
        {"key": "ONB-1", "url": f"{browse}/ONB-1"},
        {"key": "ONB-2", "url": f"{browse}/ONB-2"},
    ]
    assert jira.find_issues("ONB", "chimera-step-kickoff") == [
        {"key": "ONB-1", "summary": "Kick-off with Acme Robotics"},
        {"key": "ONB-2", "summary": "Grant access"},
    ]
    assert jira.find_issues("ONB", "chimera-step-other") == []
    with pytest.raises(NotFound):
        jira.find_issues("NOPE", "chimera-step-kickoff")
    [create] = sandbox.records.list(vendor="jira", action="issue.bulk_create")
    assert (create["run_id"], create["status"]) == ("run-j2", 201)
    searches = sandbox.records.list(vendor="jira", action="issue.search")
    # Jira Cloud's current search; the older /rest/api/2/search answers 410 there.
    assert {s["path"] for s in searches} == {"/jira/rest/api/2/search/jql"}
    assert searches[0]["request"]["fields"] == ["summary", "labels"]
    assert create["request"]["issueUpdates"][0]["fields"]["labels"] == ["chimera-step-kickoff"]


def test_jira_invalid_issue_is_invalid_input(settings: Settings) -> None:
    with pytest.raises(InvalidInput):
        JiraClient(settings).create_issues(
            project_key="ONB", summaries=["x"], description="", labels=["has space"]
        )


# -- SendGrid -----------------------------------------------------------------------------


def test_sendgrid_mail_sent_and_found_by_step(settings: Settings, sandbox: SandboxServer) -> None:
    mailer = SendGridMailer(settings)

    message_id = send_welcome(mailer, step_key="run-s1:welcome_email", run_id="run-s1")

    assert message_id
    assert mailer.find_sent(step_key="run-s1:welcome_email") == message_id
    assert mailer.find_sent(step_key="run-s1:other") is None
    [send] = sandbox.records.list(vendor="sendgrid", action="mail.send")
    assert (send["run_id"], send["status"]) == ("run-s1", 202)
    assert send["request"]["custom_args"] == {
        "chimera_step": "run-s1:welcome_email",
        "run_id": "run-s1",
    }
    searches = sandbox.records.list(vendor="sendgrid", action="messages.search")
    assert [s["status"] for s in searches] == [200, 200]


def test_sendgrid_refuses_when_custom_args_incomplete(
    settings: Settings, sandbox: SandboxServer
) -> None:
    with pytest.raises(InvalidInput):
        SendGridMailer(settings).send(
            to_email="a@b.co",
            to_name="",
            from_email="c@d.co",
            from_name="",
            subject="s",
            text="t",
            html="<p>t</p>",
            custom_args={"run_id": "run-s2"},
        )
    assert sandbox.records.list(vendor="sendgrid") == []


def test_sendgrid_auth_fails_when_key_invalid(settings: Settings) -> None:
    with pytest.raises(AuthFailed):
        send_welcome(
            SendGridMailer(settings.replace(sendgrid_key="not-a-key")),
            step_key="k",
            run_id="run-s3",
        )


# -- Slack --------------------------------------------------------------------------------


def test_slack_message_posted_and_found_by_step(settings: Settings, sandbox: SandboxServer) -> None:
    chat = SlackChat(settings)

    ts = post_notice(chat, channel="#client-onboarding", step_key="run-k1:notify", run_id="run-k1")
    post_notice(chat, channel="#client-onboarding", step_key="run-k1:later", run_id="run-k1")

    found = chat.find_message(
        channel="#client-onboarding", event_type="chimera_step_done", step_key="run-k1:notify"
    )
    assert found == ts
    assert (
        chat.find_message(
            channel="#client-onboarding", event_type="chimera_step_done", step_key="nope"
        )
        is None
    )
    posts = sandbox.records.list(vendor="slack", action="chat.postMessage")
    assert [(p["run_id"], p["status"]) for p in posts] == [("run-k1", 200), ("run-k1", 200)]
    [history, _] = sandbox.records.list(vendor="slack", action="conversations.history")
    # slack_sdk sends conversations.history as a form POST, booleans as "1".
    assert history["request"]["include_all_metadata"] == "1"


def test_slack_missing_channel_is_not_found(settings: Settings) -> None:
    with pytest.raises(NotFound) as caught:
        post_notice(SlackChat(settings), channel="#missing-team", step_key="k", run_id="run-k2")
    assert caught.value.code == "channel_not_found"


def test_slack_auth_fails_when_token_invalid(settings: Settings) -> None:
    with pytest.raises(AuthFailed):
        post_notice(
            SlackChat(settings.replace(slack_token="bogus")),
            channel="#general",
            step_key="k",
            run_id="run-k3",
        )


# -- Gemini -------------------------------------------------------------------------------


def test_gemini_drafts_personal_welcome_email_with_usage(
    settings: Settings, sandbox: SandboxServer
) -> None:
    model = GeminiLanguageModel(settings)

    email, usage = model.generate_json(
        system=EMAIL_SYSTEM, prompt=EMAIL_PROMPT, schema=EMAIL_SCHEMA, run_id="run-g1"
    )

    assert set(email) == {"subject", "text", "html"}
    assert "Acme Robotics" in email["subject"]
    assert email["text"].startswith("Hi Jane,")
    assert "launch the customer portal by March" in email["text"]
    assert "industrial machinery" in email["text"]
    assert "<p>Hi Jane,</p>" in email["html"]
    assert usage.model == settings.gemini_model
    assert usage.input_tokens == math.ceil(len(EMAIL_SYSTEM + EMAIL_PROMPT) / 4)
    assert usage.output_tokens == math.ceil(len(json.dumps(email)) / 4)
    expected_cost = (
        usage.input_tokens * settings.gemini_price_in
        + usage.output_tokens * settings.gemini_price_out
    ) / 1_000_000
    assert usage.cost_usd == pytest.approx(expected_cost)
    [record] = sandbox.records.list(vendor="gemini")
    assert (record["action"], record["run_id"], record["status"]) == (
        "generateContent",
        "run-g1",
        200,
    )
    assert record["request"]["generationConfig"]["responseJsonSchema"] == EMAIL_SCHEMA
    assert record["request"]["generationConfig"]["temperature"] == 0
    assert record["path"] == f"/gemini/v1beta/models/{settings.gemini_model}:generateContent"


def test_gemini_answers_minimal_valid_instance_for_any_schema(settings: Settings) -> None:
    schema = {
        "type": "object",
        "properties": {
            "steps": {
                "type": "array",
                "minItems": 2,
                "items": {
                    "type": "object",
                    "properties": {
                        "tool": {"enum": ["clearbit", "jira", "slack"]},
                        "priority": {"type": "integer", "minimum": 3, "maximum": 9},
                        "why": {"type": "string", "maxLength": 20},
                        "urgent": {"type": "boolean"},
                        "contact": {"type": ["string", "null"], "format": "email"},
                    },
                    "required": ["tool", "priority"],
                },
            },
            "summary": {"$ref": "#/$defs/text"},
        },
        "required": ["steps", "summary"],
        "$defs": {"text": {"type": "string", "minLength": 3}},
    }

    plan, usage = GeminiLanguageModel(settings).generate_json(
        system="Plan the onboarding.", prompt="Plan for Acme", schema=schema, run_id="run-g2"
    )

    assert len(plan["steps"]) == 2
    for step in plan["steps"]:
        assert step["tool"] == "clearbit"
        assert step["priority"] == 3
        assert len(step["why"]) <= 20
        assert step["urgent"] is False
        assert step["contact"] == "contact@example.com"
    assert isinstance(plan["summary"], str) and len(plan["summary"]) >= 3
    assert usage.input_tokens > 0 and usage.output_tokens > 0


# -- The call log -------------------------------------------------------------------------


def test_records_never_hold_secrets(settings: Settings, sandbox: SandboxServer) -> None:
    ClearbitDirectory(settings).find_company("acme.com", run_id="run-x")
    jira = JiraClient(settings)
    jira.create_project(
        key="SEC",
        name="Secrets",
        description="chimera-run:run-x",
        template=settings.jira_project_template,
        project_type="software",
        lead_account_id="",
    )
    jira.find_issues("SEC", "x")
    send_welcome(SendGridMailer(settings), step_key="run-x:mail", run_id="run-x")
    post_notice(SlackChat(settings), channel="#general", step_key="run-x:slack", run_id="run-x")
    GeminiLanguageModel(settings).generate_json(
        system=EMAIL_SYSTEM, prompt=EMAIL_PROMPT, schema=EMAIL_SCHEMA, run_id="run-x"
    )

    records = sandbox.records.list()
    assert {r["vendor"] for r in records} == {"clearbit", "jira", "sendgrid", "slack", "gemini"}
    stored = json.dumps(records)
    raw_files = b"".join(path.read_bytes() for path in sandbox.home.glob("sandbox.db*"))
    secrets = settings.secret_values()
    assert len(secrets) >= 5  # the five vendor credentials at least
    for secret in secrets:
        assert secret not in stored
        assert secret.encode() not in raw_files


def test_record_store_clear_forgets_calls(settings: Settings, sandbox: SandboxServer) -> None:
    ClearbitDirectory(settings).find_company("acme.com", run_id="run-c")
    assert sandbox.records.list(run_id="run-c")

    sandbox.records.clear()

    assert sandbox.records.list() == []


# -- Faults -------------------------------------------------------------------------------

Call = Callable[[Settings], object]


def _jira_create(settings: Settings) -> object:
    return JiraClient(settings).create_project(
        key="FLT",
        name="Faulty",
        description="chimera-run:run-f",
        template=settings.jira_project_template,
        project_type="software",
        lead_account_id="712020:lead",
    )


# One side-effecting call per vendor (Clearbit's and Gemini's only read), its record action
# and the status it answers when it succeeds.
FAULT_CALLS: dict[str, tuple[Call, str, int]] = {
    "clearbit": (
        lambda s: ClearbitDirectory(s).find_company("acme.com", run_id="run-f"),
        "company.find",
        200,
    ),
    "jira": (_jira_create, "project.create", 201),
    "sendgrid": (
        lambda s: send_welcome(SendGridMailer(s), step_key="run-f:mail", run_id="run-f"),
        "mail.send",
        202,
    ),
    "slack": (
        lambda s: post_notice(SlackChat(s), channel="#general", step_key="run-f:s", run_id="run-f"),
        "chat.postMessage",
        200,
    ),
    "gemini": (
        lambda s: GeminiLanguageModel(s).generate_json(
            system=EMAIL_SYSTEM, prompt=EMAIL_PROMPT, schema=EMAIL_SCHEMA, run_id="run-f"
        ),
        "generateContent",
        200,
    ),
}
FAULT_ERRORS = {
    "error": VendorUnavailable,
    "rate_limit": RateLimited,
    "timeout": VendorTimeout,
    "garbage": BadVendorReply,
}


@pytest.mark.parametrize("kind", list(FAULT_ERRORS))
@pytest.mark.parametrize("vendor", list(FAULT_CALLS))
def test_fault_maps_to_error_class_when_injected(tmp_path: Path, vendor: str, kind: str) -> None:
    call, action, ok_status = FAULT_CALLS[vendor]
    server = SandboxServer(tmp_path, faults=f"{vendor}.{kind}=1,hang_s=3").start()
    try:
        settings = settings_for(server, tmp_path, vendor_read_timeout=0.5)
        with pytest.raises(FAULT_ERRORS[kind]) as caught:
            call(settings)
        assert caught.value.retryable
        if kind == "rate_limit":
            assert caught.value.retry_after == 1.0
        [record] = server.records.list(vendor=vendor, action=action)
        assert (record["fault"], record["run_id"]) == (kind, "run-f")
        if kind == "error":
            assert record["status"] in (500, 503)
        elif kind == "rate_limit":
            assert record["status"] == 429
        elif kind == "garbage":
            assert record["status"] == 200
        else:
            # The vendor did the work before hanging: the outcome is unknown to the client only.
            assert record["status"] == ok_status
    finally:
        server.stop()


def test_side_effect_of_timed_out_call_survives_restart(tmp_path: Path) -> None:
    faulty = SandboxServer(tmp_path, faults="sendgrid.timeout=1,slack.timeout=1,hang_s=3").start()
    try:
        settings = settings_for(faulty, tmp_path, vendor_read_timeout=0.5)
        with pytest.raises(VendorTimeout):
            send_welcome(SendGridMailer(settings), step_key="run-t:mail", run_id="run-t")
        with pytest.raises(VendorTimeout):
            post_notice(SlackChat(settings), channel="#general", step_key="run-t:s", run_id="run-t")
    finally:
        faulty.stop()

    healthy = SandboxServer(tmp_path).start()
    try:
        settings = settings_for(healthy, tmp_path)
        assert SendGridMailer(settings).find_sent(step_key="run-t:mail")
        assert SlackChat(settings).find_message(
            channel="#general", event_type="chimera_step_done", step_key="run-t:s"
        )
    finally:
        healthy.stop()


def _outcomes(server: SandboxServer, home: Path, calls: int) -> list[str]:
    settings = settings_for(server, home)
    directory = ClearbitDirectory(settings)
    chat = SlackChat(settings)
    outcomes = []
    for index in range(calls):
        try:
            directory.find_company("acme.com", run_id="run-r")
            outcomes.append("ok")
        except RetryableError as exc:
            outcomes.append(exc.code)
        if index % 3 == 0:  # interleaved calls to another vendor must not shift clearbit's draws
            with contextlib.suppress(RetryableError):
                post_notice(chat, channel="#general", step_key=f"s{index}", run_id="run-r")
    return outcomes


def test_fault_sequence_reproducible_when_seed_fixed(tmp_path: Path) -> None:
    spec = "clearbit.error=0.3,clearbit.rate_limit=0.2,slack.error=0.5,seed=7"
    runs = []
    for attempt in range(2):
        server = SandboxServer(tmp_path / f"run{attempt}", faults=spec).start()
        try:
            runs.append(_outcomes(server, tmp_path, calls=12 + attempt * 3))
        finally:
            server.stop()

    first, second = runs
    assert second[: len(first)] == first
    plan = FaultPlan.parse(spec)
    expected = {None: "ok", "error": "unavailable", "rate_limit": "rate_limited"}
    assert first == [expected[plan.fault_for("clearbit", n).kind] for n in range(12)]
    assert {"ok", "unavailable", "rate_limited"} <= set(first)


def test_sandbox_refuses_bad_fault_spec(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown fault 'explode'"):
        SandboxServer(tmp_path, faults="jira.explode=0.5")
    with pytest.raises(ValueError, match="between 0 and 1"):
        SandboxServer(tmp_path, faults="slack.error=1.5")


def test_slack_lookup_finds_a_step_message_behind_pages_of_later_notices(
    settings: Settings, sandbox: SandboxServer
) -> None:
    # A busy channel: hundreds of other runs' notices posted after this step's first attempt.
    chat = SlackChat(settings)
    dispatched = datetime.now(UTC)
    ts = post_notice(chat, channel="#busy", step_key="run-first:slack", run_id="run-first")
    for n in range(2 * HISTORY_LIMIT + 50):
        post_notice(chat, channel="#busy", step_key=f"run-{n}:slack", run_id=f"run-{n}")

    found = chat.find_message(
        channel="#busy",
        event_type="chimera_step_done",
        step_key="run-first:slack",
        since=dispatched,
    )
    assert found == ts
    histories = sandbox.records.list(vendor="slack", action="conversations.history")
    assert len(histories) == 3  # three pages back, newest first
    assert [float(h["request"]["oldest"]) for h in histories] == pytest.approx(
        [dispatched.timestamp() - CLOCK_SKEW_S] * 3
    )
    # Looking only from after the post (a later generation's dispatch), it is not found.
    later = datetime.fromtimestamp(float(ts) + CLOCK_SKEW_S + 1, tz=UTC)
    assert (
        chat.find_message(
            channel="#busy", event_type="chimera_step_done", step_key="run-first:slack", since=later
        )
        is None
    )


def test_slack_lookup_resolves_a_channel_name_to_its_id(
    settings: Settings, sandbox: SandboxServer
) -> None:
    chat = SlackChat(settings)
    metadata = {"event_type": "chimera_onboarding", "event_payload": {"step_key": "r:slack"}}
    ts = chat.post_message(channel="#ops-lookup", text="hello", metadata=metadata)

    found = chat.find_message(
        channel="#ops-lookup", event_type="chimera_onboarding", step_key="r:slack"
    )
    assert found == ts
    # Slack's history takes ids only: the client asked conversations.list for the name first.
    [history] = sandbox.records.list(vendor="slack", action="conversations.history")
    assert history["request"]["channel"].startswith("C")
    assert sandbox.records.list(vendor="slack", action="conversations.list")
    # A channel nothing was ever posted to holds no message of ours.
    assert (
        chat.find_message(
            channel="#never-used", event_type="chimera_onboarding", step_key="r:slack"
        )
        is None
    )

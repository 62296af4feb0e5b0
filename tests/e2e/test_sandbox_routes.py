"""The sandbox serves the vendors' real paths only: a client's wrong path gets the vendor's 404."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from sandbox.server import SandboxServer
from shared.errors import PermanentError
from shared.settings import Settings
from tools.slack.client import SlackChat

# Credentials the sandbox accepts, so a 404 can only come from the path.
AUTH = {
    "slack": {"Authorization": "Bearer xoxb-sandbox-slack-token"},
    "sendgrid": {"Authorization": "Bearer SG.sandbox-sendgrid-key"},
    "jira": {"Authorization": "Basic Y2hpbWVyYUBleGFtcGxlLmNvbTp0b2tlbg=="},
    "clearbit": {"Authorization": "Bearer sk_sandbox"},
    "gemini": {"x-goog-api-key": "sandbox-gemini-key"},
    "website": {},
}
GENERATE = "models/gemini-2.5-flash:generateContent"


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[SandboxServer]:
    server = SandboxServer(tmp_path / "sandbox").start()
    yield server
    server.stop()


def call(sandbox: SandboxServer, method: str, path: str) -> requests.Response:
    vendor = path.split("/", 2)[1]
    body = {"channel": "#client-onboarding", "text": "hi"} if method == "POST" else None
    return requests.request(
        method,
        sandbox.url + path,
        headers=AUTH[vendor],
        json=body,
        timeout=5,
        allow_redirects=False,
    )


@pytest.mark.parametrize(
    ("method", "path"),
    [
        # Slack: the old client's doubled /api, a missing /api, stray slashes.
        ("POST", "/slack/api/api/chat.postMessage"),
        ("POST", "/slack/chat.postMessage"),
        ("POST", "/slack/api/chat.postMessage/"),
        ("POST", "/slack//api/chat.postMessage"),
        ("POST", "/slack/api/conversations.history/"),
        # SendGrid: a missing or doubled /v3.
        ("POST", "/sendgrid/mail/send"),
        ("POST", "/sendgrid/v3/v3/mail/send"),
        ("GET", "/sendgrid/v3/messages/"),
        # Jira: REST v3 (the client speaks v2 only), a doubled /rest/api, a site URL with /jira.
        ("GET", "/jira/rest/api/3/project/ACME"),
        ("GET", "/jira/rest/api/2/rest/api/2/project/ACME"),
        ("GET", "/jira/jira/rest/api/2/project/ACME"),
        ("POST", "/jira/rest/api/2/issue/bulk/"),
        # Clearbit: a missing /v2, the wrong version.
        ("GET", "/clearbit/companies/find?domain=acme.example"),
        ("GET", "/clearbit/v1/companies/find?domain=acme.example"),
        # Gemini: a doubled or missing version, another method, the Gemini API path on v1beta1.
        ("POST", f"/gemini/v1beta/v1beta/{GENERATE}"),
        ("POST", f"/gemini/{GENERATE}"),
        ("POST", "/gemini/v1beta/models/gemini-2.5-flash:streamGenerateContent"),
        ("POST", f"/gemini/v1beta1/{GENERATE}"),
        # The website: the page without its trailing slash, and a doubled prefix.
        ("GET", "/website/acme.example"),
        ("GET", "/website/website/acme.example/"),
    ],
)
def test_wrong_path_gets_the_vendors_404_and_is_recorded_as_unmatched_when_a_client_sends_it(
    sandbox, method, path
):
    vendor = path.split("/", 2)[1]

    response = call(sandbox, method, path)

    assert response.status_code == 404
    [record] = sandbox.records.list()
    assert (record["vendor"], record["action"], record["status"]) == (vendor, "unmatched", 404)
    assert (record["method"], record["path"]) == (method, path.split("?")[0])
    if vendor == "slack":
        assert response.json()["error"] == "unknown_method"
    elif vendor == "sendgrid":
        assert response.json()["errors"][0]["message"] == "resource not found"
    elif vendor == "jira":
        assert response.json()["errorMessages"]
    elif vendor == "gemini":
        assert response.json()["error"]["status"] == "NOT_FOUND"


def test_jira_search_removed_from_cloud_answers_410_like_jira_cloud(sandbox):
    response = call(sandbox, "GET", "/jira/rest/api/2/search?jql=project%20%3D%20ACME")

    assert response.status_code == 410
    assert "search/jql" in response.json()["errorMessages"][0]
    [record] = sandbox.records.list(vendor="jira")
    assert (record["action"], record["status"]) == ("issue.search.removed", 410)


def test_slack_client_on_the_old_sandbox_shape_is_refused_like_slack_would_refuse_it(
    sandbox, tmp_path
):
    # The old sandbox base, without /api: what the client would send to slack.com/chat.postMessage.
    old = Settings(home=tmp_path, slack_url=f"{sandbox.url}/slack")
    assert any("CHIMERA_SLACK_URL" in problem for problem in old.vendor_url_problems())

    with pytest.raises(PermanentError) as refused:
        SlackChat(old).post_message(
            channel="#client-onboarding",
            text="hi",
            metadata={"event_type": "e", "event_payload": {"step_key": "k"}},
        )

    assert refused.value.code == "unknown_method"
    [record] = sandbox.records.list(vendor="slack")
    assert (record["action"], record["path"]) == ("unmatched", "/slack/chat.postMessage")


def test_slack_client_on_the_sandbox_default_reaches_the_real_method_path(sandbox, tmp_path):
    chat = SlackChat(Settings(home=tmp_path, sandbox_url=sandbox.url))

    chat.post_message(
        channel="#client-onboarding",
        text="hi",
        metadata={"event_type": "e", "event_payload": {"step_key": "k"}},
    )

    [record] = sandbox.records.list(vendor="slack")
    assert (record["action"], record["path"]) == ("chat.postMessage", "/slack/api/chat.postMessage")

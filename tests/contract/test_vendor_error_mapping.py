"""Every vendor client turns a vendor's error answer into the shared map's error.

Each client is run through the transport its SDK really uses (the recorders of
test_vendor_wiring.py), answered with a status, a vendor-shaped or garbage body and maybe a
Retry-After, and what it raises is compared with `error_for_status` given the same answer.
Only what a client handles itself is left out (Clearbit's 404 "no company", Jira's 400s,
Slack's 4xx ok=false codes, a website's 404/410 "no page" and its other 4xx).
"""

from __future__ import annotations

import http.client
import json
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from shared.errors import ChimeraError, InvalidInput, NotFound, PermanentError
from shared.gemini import GeminiLanguageModel
from shared.vendor_errors import error_for_status
from tests.contract.test_vendor_wiring import (
    PUBLIC_ADDRESS,
    Canned,
    RecordingAdapter,
    RecordingHTTPSHandler,
    RecordingTransport,
    settings,
)
from tools.clearbit.client import ClearbitDirectory
from tools.clearbit.website import WebsiteDirectory
from tools.jira.client import JiraClient
from tools.sendgrid.client import SendGridMailer
from tools.slack.client import SlackChat

GARBAGE = "<html><body><h1>502 Bad Gateway</h1></body></html>"
WORDS = st.text(st.characters(codec="ascii", categories=("L", "N")), min_size=1, max_size=30)
RETRY_AFTER = st.one_of(
    st.just({}),
    st.integers(min_value=0, max_value=3600).map(lambda s: {"Retry-After": str(s)}),
    st.just({"Retry-After": "soon"}),
)
Reply = Callable[[Any], Canned]


def _clearbit(reply: Reply) -> object:
    directory = ClearbitDirectory(settings(), adapter=RecordingAdapter(reply))
    return directory.find_company("acme.example", run_id="run-1")


def _jira(reply: Reply) -> object:
    return JiraClient(settings(), adapter=RecordingAdapter(reply)).find_issues("ACME", "label")


def _sendgrid(reply: Reply) -> object:
    mailer = SendGridMailer(settings(), opener=RecordingHTTPSHandler(reply).opener())
    return mailer.send(
        to_email="jane@acme.example",
        to_name="Jane",
        from_email="welcome@chimera.example",
        from_name="Chimera",
        subject="Welcome",
        text="Hello",
        html="<p>Hello</p>",
        custom_args={"chimera_step": "run-1:email", "run_id": "run-1"},
    )


def _slack(reply: Reply) -> object:
    # slack_sdk opens every request with urlopen: the recorder stands in as the default opener.
    urllib.request.install_opener(RecordingHTTPSHandler(reply).opener())
    try:
        return SlackChat(settings()).post_message(
            channel="C0123456789", text="hi", metadata={"event_type": "e", "event_payload": {}}
        )
    finally:
        urllib.request.install_opener(None)  # type: ignore[arg-type]


def _gemini(reply: Reply) -> object:
    model = GeminiLanguageModel(settings(), transport=RecordingTransport(reply))
    return model.generate_json(system="s", prompt="p", schema={"type": "object"}, run_id="run-1")


def _website(reply: Reply) -> object:
    directory = WebsiteDirectory(
        settings(backend="gcp"),
        resolver=lambda host, port: [PUBLIC_ADDRESS],
        adapter=RecordingAdapter(reply),
    )
    return directory.find_company("acme.example", run_id="run-1")


@dataclass(frozen=True)
class Client:
    """One vendor client: how to call it, the names its errors carry, and its error bodies."""

    call: Callable[[Reply], object]
    vendor: str
    action: str
    statuses: st.SearchStrategy[int]
    body: Callable[[int, str], Any]  # the vendor's own error shape, with these words


# The statuses the map names, drawn as often as any other 4xx or 5xx.
NAMED = (400, 401, 403, 404, 408, 409, 410, 413, 422, 429, 500, 502, 503, 504)
ANY_ERROR_STATUS = st.sampled_from(NAMED) | st.integers(min_value=400, max_value=599)
CLIENTS = {
    "clearbit": Client(
        _clearbit,
        "Clearbit",
        "company.find",
        ANY_ERROR_STATUS.filter(lambda s: s != 404),
        lambda status, words: {"error": {"type": "api_error", "message": words}},
    ),
    "jira": Client(
        _jira,
        "Jira",
        "issue.search",
        ANY_ERROR_STATUS.filter(lambda s: s != 400),
        lambda status, words: {"errorMessages": [words], "errors": {}},
    ),
    "sendgrid": Client(
        _sendgrid,
        "SendGrid",
        "mail.send",
        ANY_ERROR_STATUS,
        lambda status, words: {"errors": [{"field": None, "message": words}]},
    ),
    "slack": Client(
        _slack,
        "Slack",
        "chat.postMessage",
        st.sampled_from([429]) | st.integers(min_value=500, max_value=599),
        lambda status, words: {"ok": False, "error": words},
    ),
    "gemini": Client(
        _gemini,
        "Gemini",
        "generateContent",
        ANY_ERROR_STATUS,
        lambda status, words: {"error": {"code": status, "message": words, "status": "X"}},
    ),
    "website": Client(
        _website,
        "acme.example",
        "",
        st.sampled_from([408, 429]) | st.integers(min_value=500, max_value=599),
        lambda status, words: f"<html><title>{words}</title></html>",
    ),
}


def raised(client: Client, canned: Canned) -> ChimeraError:
    with pytest.raises(ChimeraError) as caught:
        client.call(lambda sent: canned)
    return caught.value


def shape(error: ChimeraError) -> tuple[type, str, bool, float | None]:
    return (type(error), error.code, error.retryable, getattr(error, "retry_after", None))


@pytest.mark.parametrize("name", list(CLIENTS))
@hypothesis_settings(max_examples=40, deadline=None)
@given(data=st.data(), words=WORDS, headers=RETRY_AFTER, garbage=st.booleans())
def test_client_raises_the_shared_maps_error_when_its_vendor_answers_an_error(
    name: str, data: st.DataObject, words: str, headers: dict[str, str], garbage: bool
) -> None:
    client = CLIENTS[name]
    status = data.draw(client.statuses, label="status")
    body = GARBAGE if garbage else client.body(status, words)
    content_type = "text/html" if isinstance(body, str) else "application/json"
    canned = Canned(status, body, headers, content_type=content_type)

    error = raised(client, canned)

    reason = http.client.responses.get(status, "")
    expected = error_for_status(client.vendor, client.action, status, body, headers, reason=reason)
    assert shape(error) == shape(expected)
    if not garbage and name != "website":  # a website's page is never read for words
        assert error.message == expected.message
        assert words in error.message


def test_clearbits_retired_api_is_clearbit_gone_when_it_answers_410() -> None:
    body = {"error": {"type": "gone", "message": "This API has been retired"}}

    error = raised(CLIENTS["clearbit"], Canned(410, body))

    assert (type(error), error.code) == (PermanentError, "clearbit_gone")
    assert "retired" in error.message


def test_jira_search_of_a_missing_project_is_project_not_found_when_jira_answers_400() -> None:
    body = {"errorMessages": ["The value 'ACME' does not exist for the field 'project'."]}

    error = raised(CLIENTS["jira"], Canned(400, body))

    assert (type(error), error.code) == (NotFound, "project_not_found")


def test_jira_refusal_is_invalid_input_when_jira_answers_400_about_a_field() -> None:
    error = raised(CLIENTS["jira"], Canned(400, {"errors": {"jql": "bad query"}}))

    assert isinstance(error, InvalidInput) and "jql: bad query" in error.message


@pytest.mark.parametrize(
    ("status", "code"),
    [(200, "channel_not_found"), (200, "not_in_channel"), (404, "unknown_method")],
)
def test_slacks_own_codes_win_when_slack_answers_ok_false_outside_429_and_5xx(
    status: int, code: str
) -> None:
    error = raised(CLIENTS["slack"], Canned(status, {"ok": False, "error": code}))

    assert (error.code, error.retryable) == (code, False)


def test_gemini_bad_key_is_auth_failed_when_google_answers_400() -> None:
    body = {
        "error": {
            "code": 400,
            "message": "API key not valid. Please pass a valid API key.",
            "status": "INVALID_ARGUMENT",
            "details": [{"reason": "API_KEY_INVALID", "domain": "googleapis.com"}],
        }
    }

    error = raised(CLIENTS["gemini"], Canned(400, body))

    assert (error.code, error.retryable) == ("auth_failed", False)


@given(delay=st.integers(min_value=1, max_value=600))
@hypothesis_settings(max_examples=10, deadline=None)
def test_gemini_429_waits_its_retry_info_delay_when_no_retry_after_header(delay: int) -> None:
    body = {
        "error": {
            "code": 429,
            "message": "Resource exhausted",
            "status": "RESOURCE_EXHAUSTED",
            "details": [
                {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": f"{delay}s"}
            ],
        }
    }

    error = raised(CLIENTS["gemini"], Canned(429, json.dumps(body)))

    assert (error.code, getattr(error, "retry_after", None)) == ("rate_limited", float(delay))

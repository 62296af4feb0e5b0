"""Production wiring: what each vendor client sends when given the vendor's documented base URL.

Every request is recorded at the transport the SDK really uses (a requests adapter, a urllib
opener, an httpx transport) and answered with a canned vendor-shaped reply, so nothing leaves
the process. The sandbox cannot catch these mistakes: there, the base URL is the sandbox's.
Credentials are checked for presence, scheme and value; no assertion message shows one.
"""

from __future__ import annotations

import base64
import hmac
import http.client
import io
import json
import urllib.request
import urllib.response
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import google.oauth2.credentials
import pytest
import requests
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from requests.adapters import BaseAdapter
from requests.structures import CaseInsensitiveDict

from shared.gemini import GeminiLanguageModel
from shared.settings import Settings
from shared.vendor_urls import VENDOR_ENDPOINTS
from tools.clearbit.client import ClearbitDirectory
from tools.clearbit.website import WebsiteDirectory
from tools.jira.client import JiraClient
from tools.sendgrid.client import SendGridMailer
from tools.slack.client import SlackChat

try:  # the httpx flavour google-genai runs on: httpx2 since 3.x, httpx before
    import httpx2 as httpx
except ImportError:  # pragma: no cover - older google-genai
    import httpx  # type: ignore[no-redef]

SLACK = "https://slack.com/api/"
SENDGRID = "https://api.sendgrid.com"
JIRA = "https://acme-team.atlassian.net"  # the documented https://your-site.atlassian.net
CLEARBIT = "https://company.clearbit.com"
GEMINI = "https://generativelanguage.googleapis.com"
VERTEX = "https://europe-west4-aiplatform.googleapis.com"
PUBLIC_ADDRESS = "93.184.216.34"


def with_and_without_slash(url: str) -> list[str]:
    """The documented URL as written, and with its trailing slash added or dropped."""
    other = url.rstrip("/") if url.endswith("/") else url + "/"
    return [url, other]


class Secret(str):
    """A credential whose repr is masked, so a failing assertion never shows it."""

    def __repr__(self) -> str:
        return "<secret>"


def settings(**changes: Any) -> Settings:
    values: dict[str, Any] = {
        "clearbit_key": Secret("sk_wiring_clearbit"),
        "jira_user": "bot@acme.example",
        "jira_token": Secret("wiring-jira-token"),
        "sendgrid_key": Secret("SG.wiring-sendgrid-key"),
        "slack_token": Secret("xoxb-wiring-slack-token"),
        "gemini_api_key": Secret("wiring-gemini-key"),
    }
    values.update(changes)
    configured = Settings(**values)
    configured.check()  # the documented URLs pass the start-up check
    return configured


# -- what was sent ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Sent:
    """One request as it reached the transport. Its repr shows no header."""

    method: str
    url: str
    headers: dict[str, str] = field(repr=False)  # names lower-cased
    body: bytes = field(default=b"", repr=False)

    @property
    def endpoint(self) -> str:
        """Method, scheme, host and path: everything but the query."""
        parts = urlsplit(self.url)
        return f"{self.method} {parts.scheme}://{parts.netloc}{parts.path}"

    @property
    def query(self) -> dict[str, list[str]]:
        return parse_qs(urlsplit(self.url).query, keep_blank_values=True)

    @property
    def form(self) -> dict[str, list[str]]:
        """The body's fields, when it is form-encoded (as slack_sdk posts most methods)."""
        if not self.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
            return {}
        return parse_qs(self.body.decode(), keep_blank_values=True)

    def json(self) -> Any:
        return json.loads(self.body or b"null")


def auth_scheme(sent: Sent) -> str:
    return sent.headers.get("authorization", "").partition(" ")[0]


def presents(sent: Sent, secret: str, *, header: str = "authorization") -> bool:
    """Whether the header carries exactly `secret` (after its scheme, if it has one)."""
    value = sent.headers.get(header, "")
    credential = value.partition(" ")[2] if header == "authorization" else value
    return bool(secret) and hmac.compare_digest(credential.encode(), secret.encode())


def leaked_secrets(sent: Sent, configured: Settings) -> int:
    """How many configured secrets appear in the URL (where proxies and logs would keep them)."""
    return sum(secret in sent.url for secret in configured.secret_values())


@dataclass(frozen=True)
class Canned:
    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json; charset=utf-8"

    def payload(self) -> bytes:
        if self.body is None:
            return b""
        if isinstance(self.body, bytes):
            return self.body
        return self.body.encode() if isinstance(self.body, str) else json.dumps(self.body).encode()

    def all_headers(self) -> dict[str, str]:
        return {"Content-Type": self.content_type, **self.headers}


Reply = Callable[[Sent], Canned]


class RecordingAdapter(BaseAdapter):
    """A requests transport: records each request and answers from `reply`, offline."""

    def __init__(self, reply: Reply) -> None:
        super().__init__()
        self._reply = reply
        self.sent: list[Sent] = []

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        body = request.body or b""
        sent = Sent(
            method=str(request.method),
            url=str(request.url),
            headers={k.lower(): v for k, v in request.headers.items()},
            body=body.encode() if isinstance(body, str) else body,
        )
        self.sent.append(sent)
        canned = self._reply(sent)
        response = requests.Response()
        response.status_code = canned.status
        response.reason = http.client.responses.get(canned.status, "")
        response.headers = CaseInsensitiveDict(canned.all_headers())
        response.raw = io.BytesIO(canned.payload())
        response.url = sent.url
        response.request = request
        return response

    def close(self) -> None:
        pass


class RecordingHTTPSHandler(urllib.request.HTTPSHandler):
    """A urllib handler in front of urllib's own: records and answers every http(s) request,
    so a wrong scheme is recorded too, never sent."""

    handler_order = 100  # before urllib's handlers (500)

    def __init__(self, reply: Reply) -> None:
        super().__init__()
        self._reply = reply
        self.sent: list[Sent] = []

    def https_open(self, req: urllib.request.Request) -> urllib.response.addinfourl:
        return self._answer(req)

    def http_open(self, req: urllib.request.Request) -> urllib.response.addinfourl:
        return self._answer(req)

    def opener(self) -> urllib.request.OpenerDirector:
        # An empty ProxyHandler: proxies from the environment must not rewrite the request.
        return urllib.request.build_opener(urllib.request.ProxyHandler({}), self)

    def _answer(self, req: urllib.request.Request) -> urllib.response.addinfourl:
        data = req.data if isinstance(req.data, bytes) else b""
        sent = Sent(
            method=req.get_method(),
            url=req.full_url,
            headers={k.lower(): v for k, v in req.header_items()},
            body=data,
        )
        self.sent.append(sent)
        canned = self._reply(sent)
        headers = http.client.HTTPMessage()
        for name, value in canned.all_headers().items():
            headers[name] = value
        response = urllib.response.addinfourl(
            io.BytesIO(canned.payload()), headers, req.full_url, canned.status
        )
        response.msg = http.client.responses.get(canned.status, "")  # type: ignore[attr-defined]
        return response


class RecordingTransport(httpx.MockTransport):
    """An httpx transport for google-genai: records each request and answers from `reply`."""

    def __init__(self, reply: Reply) -> None:
        self.sent: list[Sent] = []
        super().__init__(self._answer)
        self._reply = reply

    def _answer(self, request: httpx.Request) -> httpx.Response:
        sent = Sent(
            method=request.method,
            url=str(request.url),
            headers={k.lower(): v for k, v in request.headers.items()},
            body=request.read(),
        )
        self.sent.append(sent)
        canned = self._reply(sent)
        return httpx.Response(canned.status, headers=canned.all_headers(), content=canned.payload())


@pytest.fixture
def default_urllib_opener() -> Iterator[Callable[[RecordingHTTPSHandler], None]]:
    """Installs a recorder as urllib's default opener, the one slack_sdk's urlopen uses (it
    passes no SSL context of its own), and puts urllib's own back afterwards."""

    def install(recorder: RecordingHTTPSHandler) -> None:
        urllib.request.install_opener(recorder.opener())

    yield install
    urllib.request.install_opener(None)  # type: ignore[arg-type]


# -- Slack ------------------------------------------------------------------------------------

CHANNEL_ID = "C0123456789"
POSTED_TS = "1700000000.000100"


def slack_reply(pages: list[list[dict[str, str]]]) -> Reply:
    """chat.postMessage, conversations.list (paged as `pages`) and conversations.history."""

    def reply(sent: Sent) -> Canned:
        method = urlsplit(sent.url).path.rsplit("/", 1)[-1]
        if method == "chat.postMessage":
            return Canned(body={"ok": True, "channel": CHANNEL_ID, "ts": POSTED_TS})
        if method == "conversations.list":
            page = int(sent.form.get("cursor", ["0"])[0])
            more = page + 1 < len(pages)
            return Canned(
                body={
                    "ok": True,
                    "channels": pages[page],
                    "response_metadata": {"next_cursor": str(page + 1) if more else ""},
                }
            )
        if method == "conversations.history":
            message = {
                "ts": POSTED_TS,
                "metadata": {"event_type": "chimera_step_done", "event_payload": {"step_key": "k"}},
            }
            return Canned(body={"ok": True, "messages": [message], "has_more": False})
        return Canned(404, {"ok": False, "error": "unknown_method"})

    return reply


@pytest.mark.parametrize("base_url", with_and_without_slash(SLACK))
def test_slack_calls_its_documented_methods_when_given_the_documented_base_url(
    base_url, default_urllib_opener
):
    pages = [[{"id": "C0000000001", "name": "general"}], [{"id": CHANNEL_ID, "name": "clients"}]]
    recorder = RecordingHTTPSHandler(slack_reply(pages))
    default_urllib_opener(recorder)
    configured = settings(slack_url=base_url)
    chat = SlackChat(configured)

    ts = chat.post_message(
        channel="#clients",
        text="Acme is onboarding",
        metadata={"event_type": "chimera_step_done", "event_payload": {"step_key": "k"}},
    )
    found = chat.find_message(channel="#clients", event_type="chimera_step_done", step_key="k")

    assert (ts, found) == (POSTED_TS, POSTED_TS)
    # slack_sdk posts every method: JSON for chat.postMessage, form fields for the others.
    assert [s.endpoint for s in recorder.sent] == [
        "POST https://slack.com/api/chat.postMessage",
        "POST https://slack.com/api/conversations.list",
        "POST https://slack.com/api/conversations.list",
        "POST https://slack.com/api/conversations.history",
    ]
    post, first_page, second_page, history = recorder.sent
    assert post.json()["channel"] == "#clients"
    assert post.json()["metadata"]["event_type"] == "chimera_step_done"
    assert first_page.form.keys() == {"types", "exclude_archived", "limit"}
    assert second_page.form["cursor"] == ["1"]
    assert history.form["channel"] == [CHANNEL_ID]
    assert history.form["include_all_metadata"] == ["1"]
    for sent in recorder.sent:
        assert sent.query == {}  # the token never in the URL, nor anything else
        assert auth_scheme(sent) == "Bearer"
        assert presents(sent, configured.slack_token)
        assert leaked_secrets(sent, configured) == 0


# -- SendGrid ---------------------------------------------------------------------------------


def sendgrid_reply(sent: Sent) -> Canned:
    path = urlsplit(sent.url).path
    if path == "/v3/mail/send":
        return Canned(202, headers={"X-Message-Id": "wiringMsgId01"}, content_type="text/plain")
    if path == "/v3/messages":
        return Canned(body={"messages": [{"msg_id": "wiringMsgId01.filter0001.1.0"}]})
    return Canned(404, {"errors": [{"field": None, "message": "resource not found"}]})


@pytest.mark.parametrize("base_url", with_and_without_slash(SENDGRID))
def test_sendgrid_sends_and_searches_at_its_documented_endpoints_when_given_the_documented_base_url(
    base_url,
):
    recorder = RecordingHTTPSHandler(sendgrid_reply)
    configured = settings(sendgrid_url=base_url)
    mailer = SendGridMailer(configured, opener=recorder.opener())

    message_id = mailer.send(
        to_email="jane@acme.example",
        to_name="Jane",
        from_email="welcome@chimera.example",
        from_name="Chimera",
        subject="Welcome",
        text="Hello",
        html="<p>Hello</p>",
        custom_args={"chimera_step": "run-1:welcome", "run_id": "run-1"},
    )
    found = mailer.find_sent(step_key="run-1:welcome")

    assert (message_id, found) == ("wiringMsgId01", "wiringMsgId01")
    assert [s.endpoint for s in recorder.sent] == [
        "POST https://api.sendgrid.com/v3/mail/send",
        "GET https://api.sendgrid.com/v3/messages",
    ]
    send, search = recorder.sent
    assert send.query == {} and send.json()["custom_args"]["chimera_step"] == "run-1:welcome"
    assert search.query == {
        "query": ["unique_args['chimera_step']=\"run-1:welcome\""],
        "limit": ["10"],
    }
    for sent in recorder.sent:
        assert auth_scheme(sent) == "Bearer"
        assert presents(sent, configured.sendgrid_key)
        assert leaked_secrets(sent, configured) == 0


# -- Jira -------------------------------------------------------------------------------------


def jira_reply(sent: Sent) -> Canned:
    path = urlsplit(sent.url).path.removeprefix("/rest/api/2")
    route = (sent.method, path)
    if route == ("GET", "/project/ACME"):
        return Canned(body={"id": "10000", "key": "ACME", "name": "Acme", "description": ""})
    if route == ("GET", "/myself"):
        return Canned(body={"accountId": "5b10ac8d82e05b22cc7d4ef5", "active": True})
    if route == ("POST", "/project"):
        return Canned(201, {"id": 10001, "key": "ACMR", "self": f"{JIRA}/rest/api/2/project/1"})
    if route == ("GET", "/field"):
        return Canned(body=[{"id": "summary", "name": "Summary"}, {"id": "labels", "name": "L"}])
    if route == ("GET", "/search/jql"):
        return Canned(body={"issues": [{"id": "1", "key": "ACMR-1", "fields": {}}], "isLast": True})
    if route == ("POST", "/issue/bulk"):
        created = {"id": "10002", "key": "ACMR-2", "self": f"{JIRA}/rest/api/2/issue/10002"}
        return Canned(201, {"issues": [created], "errors": []})
    return Canned(404, {"errorMessages": [f"null for uri: {sent.url}"], "errors": {}})


@pytest.mark.parametrize("base_url", with_and_without_slash(JIRA))
def test_jira_calls_its_documented_rest_v2_endpoints_when_given_the_site_url(base_url):
    recorder = RecordingAdapter(jira_reply)
    configured = settings(jira_url=base_url)
    jira = JiraClient(configured, adapter=recorder)

    project = jira.find_project("ACME")
    created = jira.create_project(
        key="ACMR",
        name="Acme Robotics",
        description="Onboarding",
        template=configured.jira_project_template,
        project_type="software",
        lead_account_id="",
    )
    issues = jira.find_issues("ACMR", "chimera-run:run-1")
    bulk = jira.create_issues(
        project_key="ACMR", summaries=["Kickoff"], description="d", labels=["chimera-run:run-1"]
    )

    assert project is not None and project["url"] == f"{JIRA}/browse/ACME"
    assert created["url"] == f"{JIRA}/browse/ACMR"
    assert issues == [{"key": "ACMR-1", "summary": ""}]
    assert bulk == [{"key": "ACMR-2", "url": f"{JIRA}/browse/ACMR-2"}]
    api = f"{JIRA}/rest/api/2"
    assert [s.endpoint for s in recorder.sent] == [
        f"GET {api}/project/ACME",
        f"GET {api}/myself",  # the project lead, when none is configured
        f"POST {api}/project",
        f"GET {api}/field",  # the library maps field names once per client
        f"GET {api}/search/jql",  # Cloud's search; /search answers 410 there
        f"POST {api}/issue/bulk",
    ]
    search = recorder.sent[4]
    assert search.query["jql"] == [
        'project = "ACMR" AND labels = "chimera-run:run-1" ORDER BY created ASC'
    ]
    assert search.query["maxResults"] == ["50"]
    assert set(search.query["fields"]) == {"summary", "labels"}
    assert recorder.sent[2].json()["leadAccountId"] == "5b10ac8d82e05b22cc7d4ef5"
    basic = Secret(
        base64.b64encode(f"{configured.jira_user}:{configured.jira_token}".encode()).decode()
    )
    for sent in recorder.sent:
        assert auth_scheme(sent) == "Basic"
        assert presents(sent, basic)
        assert leaked_secrets(sent, configured) == 0


# -- Clearbit ---------------------------------------------------------------------------------


def clearbit_reply(sent: Sent) -> Canned:
    if sent.endpoint == "GET https://company.clearbit.com/v2/companies/find":
        return Canned(body={"id": "c-1", "name": "Acme", "domain": sent.query["domain"][0]})
    return Canned(404, {"error": {"type": "unknown_record", "message": "Unknown domain"}})


@pytest.mark.parametrize("base_url", with_and_without_slash(CLEARBIT))
def test_clearbit_finds_companies_at_its_documented_endpoint_when_given_the_documented_base_url(
    base_url,
):
    recorder = RecordingAdapter(clearbit_reply)
    configured = settings(clearbit_url=base_url)

    company = ClearbitDirectory(configured, adapter=recorder).find_company(
        "acme.example", run_id="run-1"
    )

    assert company is not None and company["domain"] == "acme.example"
    [sent] = recorder.sent
    assert sent.endpoint == "GET https://company.clearbit.com/v2/companies/find"
    assert sent.query == {"domain": ["acme.example"]}
    assert auth_scheme(sent) == "Bearer"
    assert presents(sent, configured.clearbit_key)
    assert leaked_secrets(sent, configured) == 0


# -- Gemini -----------------------------------------------------------------------------------


def gemini_reply(sent: Sent) -> Canned:
    if not sent.endpoint.endswith(":generateContent"):
        return Canned(404, {"error": {"code": 404, "message": "Not found", "status": "NOT_FOUND"}})
    return Canned(
        body={
            "candidates": [
                {
                    "content": {"parts": [{"text": '{"subject": "Welcome"}'}], "role": "model"},
                    "finishReason": "STOP",
                }
            ],
            "usageMetadata": {"promptTokenCount": 12, "candidatesTokenCount": 5},
        }
    )


def draft(model: GeminiLanguageModel) -> dict[str, Any]:
    schema = {"type": "object", "properties": {"subject": {"type": "string"}}}
    answer, _ = model.generate_json(system="Be brief.", prompt="Hi", schema=schema, run_id="r-1")
    return answer


@pytest.mark.parametrize("base_url", with_and_without_slash(GEMINI))
def test_gemini_api_generates_content_at_its_documented_endpoint_when_given_the_documented_base_url(
    base_url,
):
    recorder = RecordingTransport(gemini_reply)
    configured = settings(gemini_url=base_url)

    answer = draft(GeminiLanguageModel(configured, transport=recorder))

    assert answer == {"subject": "Welcome"}
    [sent] = recorder.sent
    assert sent.endpoint == (
        "POST https://generativelanguage.googleapis.com/v1beta/models/"
        "gemini-2.5-flash:generateContent"
    )
    assert sent.query == {}  # the key travels in its header, never in ?key=
    assert presents(sent, configured.gemini_api_key, header="x-goog-api-key")
    assert "authorization" not in sent.headers
    assert sent.json()["generationConfig"]["responseJsonSchema"]["type"] == "object"
    assert leaked_secrets(sent, configured) == 0


@pytest.mark.parametrize("base_url", with_and_without_slash(VERTEX))
def test_vertex_ai_generates_content_at_its_regional_endpoint_when_given_its_documented_base_url(
    base_url,
):
    recorder = RecordingTransport(gemini_reply)
    configured = settings(
        gemini_url=base_url,
        gemini_vertexai=True,
        gemini_project="acme-prod",
        gemini_location="europe-west4",
    )
    access_token = Secret("ya29.wiring-access-token")
    credentials = google.oauth2.credentials.Credentials(token=access_token)  # type: ignore[no-untyped-call]

    answer = draft(GeminiLanguageModel(configured, transport=recorder, credentials=credentials))

    assert answer == {"subject": "Welcome"}
    [sent] = recorder.sent
    assert sent.endpoint == (
        "POST https://europe-west4-aiplatform.googleapis.com/v1/projects/acme-prod"
        "/locations/europe-west4/publishers/google/models/gemini-2.5-flash:generateContent"
    )
    assert sent.query == {}
    assert auth_scheme(sent) == "Bearer"
    assert presents(sent, access_token)
    assert "x-goog-api-key" not in sent.headers
    assert leaked_secrets(sent, configured) == 0


# -- the website provider ---------------------------------------------------------------------

HOME_PAGE = (
    "<html><head><title>Acme Robotics</title>"
    '<meta name="description" content="Acme builds warehouse robots."></head></html>'
)


def website_reply(sent: Sent) -> Canned:
    parts = urlsplit(sent.url)
    if parts.hostname == "acme.example":  # the bare domain sends visitors to www
        return Canned(
            301, headers={"Location": "https://www.acme.example/"}, content_type="text/html"
        )
    if parts.hostname == "www.acme.example" and parts.path == "/":
        return Canned(body=HOME_PAGE, content_type="text/html; charset=utf-8")
    return Canned(404, "<html><title>Not Found</title></html>", content_type="text/html")


@pytest.mark.parametrize("template", ["", "https://{domain}/", "https://{domain}"])
def test_website_reads_the_companys_own_home_page_when_configured_as_documented(template):
    recorder = RecordingAdapter(website_reply)
    configured = settings(backend="gcp", website_url=template)
    directory = WebsiteDirectory(
        configured, resolver=lambda host, port: [PUBLIC_ADDRESS], adapter=recorder
    )

    profile = directory.find_company("acme.example", run_id="run-1")

    assert profile is not None and profile["name"] == "Acme Robotics"
    assert [s.endpoint for s in recorder.sent] == [
        "GET https://acme.example/",
        "GET https://www.acme.example/",
    ]
    for sent in recorder.sent:
        assert sent.query == {}
        assert "authorization" not in sent.headers
        # Our run id is for our sandbox's records, never for the company's server.
        assert "x-chimera-run-id" not in sent.headers


# -- the table the tests above rely on --------------------------------------------------------


def test_every_vendor_endpoint_is_wired_in_this_file():
    documented = {vendor: endpoint.documented for vendor, endpoint in VENDOR_ENDPOINTS.items()}
    assert documented == {
        "clearbit": CLEARBIT,
        "jira": "https://your-site.atlassian.net",
        "sendgrid": SENDGRID,
        "slack": SLACK,
        "gemini": GEMINI,
    }


# -- arguments never change the endpoint ------------------------------------------------------

AWKWARD_TEXT = st.text(
    st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), min_size=1, max_size=40
)


@hypothesis_settings(max_examples=40, deadline=None)
@given(label=AWKWARD_TEXT)
def test_jira_search_stays_on_its_endpoint_and_round_trips_the_jql_when_labels_are_awkward(label):
    recorder = RecordingAdapter(jira_reply)
    JiraClient(settings(jira_url=JIRA), adapter=recorder).find_issues("ACMR", label)

    search = recorder.sent[-1]
    assert search.endpoint == f"GET {JIRA}/rest/api/2/search/jql"
    escaped = label.replace("\\", "\\\\").replace('"', '\\"')
    assert search.query["jql"] == [
        f'project = "ACMR" AND labels = "{escaped}" ORDER BY created ASC'
    ]


@hypothesis_settings(max_examples=40, deadline=None)
@given(step_key=AWKWARD_TEXT)
def test_sendgrid_search_stays_on_its_endpoint_and_round_trips_the_query_when_keys_are_awkward(
    step_key,
):
    recorder = RecordingHTTPSHandler(sendgrid_reply)
    SendGridMailer(settings(sendgrid_url=SENDGRID), opener=recorder.opener()).find_sent(
        step_key=step_key
    )

    [search] = recorder.sent
    assert search.endpoint == "GET https://api.sendgrid.com/v3/messages"
    escaped = step_key.replace("\\", "\\\\").replace('"', '\\"')
    assert search.query["query"] == [f"unique_args['chimera_step']=\"{escaped}\""]


@hypothesis_settings(max_examples=40, deadline=None)
@given(domain=st.from_regex(r"\A[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?\.(com|example|xn--p1ai)\Z"))
def test_clearbit_lookup_stays_on_its_endpoint_whatever_the_domain(domain):
    recorder = RecordingAdapter(clearbit_reply)
    ClearbitDirectory(settings(clearbit_url=CLEARBIT), adapter=recorder).find_company(
        domain, run_id="run-1"
    )

    [sent] = recorder.sent
    assert sent.endpoint == "GET https://company.clearbit.com/v2/companies/find"
    assert sent.query == {"domain": [domain]}

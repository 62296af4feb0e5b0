"""Log lines: Cloud Logging's JSON shape with the current span's trace, readable text, and no
secret in any line, whatever its shape and wherever it was put (message, argument, extra,
traceback, the logging machinery's own error report)."""

from __future__ import annotations

import io
import json
import logging
import re
import string
from collections.abc import Iterator

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import format_span_id, format_trace_id

from shared.keys import Keys, new_token
from shared.logs import (
    SOURCE_LOCATION,
    SPAN_ID,
    TRACE,
    TRACE_SAMPLED,
    CloudLoggingFormatter,
    RedactingStreamHandler,
    TextFormatter,
    configure_logging,
    log_context,
    severity,
)
from shared.redaction import MARKER, MIN_SECRET_LENGTH, Redactor
from shared.settings import Settings
from tests.conftest import every_string

FORMATS = ("json", "text")


class Capture:
    """A logger of its own whose lines go through the handler configure_logging makes."""

    def __init__(self, fmt: str, secrets: list[str] = (), project: str = "") -> None:  # type: ignore[assignment]
        self.stream = io.StringIO()
        formatter = CloudLoggingFormatter(project) if fmt == "json" else TextFormatter()
        self.handler = RedactingStreamHandler(self.stream, formatter, Redactor(secrets))
        self.log = logging.getLogger(f"chimera.test.{fmt}")
        self.log.handlers[:] = [self.handler]
        self.log.propagate = False
        self.log.setLevel(logging.DEBUG)

    @property
    def text(self) -> str:
        return self.stream.getvalue()

    def entries(self) -> list[dict]:
        return [json.loads(line) for line in self.text.splitlines()]


@pytest.fixture
def root_logging() -> Iterator[logging.Logger]:
    """configure_logging changes the root logger: put it back as pytest had it."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield root
    root.handlers[:] = handlers
    root.setLevel(level)


def _log_everywhere(log: logging.Logger, secret: str, where: str) -> None:
    """`secret` in one place a careless caller could put it."""
    if where == "message":
        log.warning(f"calling the vendor with {secret} now")
    elif where == "str-arg":
        log.info("token: %s (step %s)", secret, "jira")
    elif where == "repr-arg":
        log.info("request %r", {"headers": {"X-Custom": secret}, "n": [secret]})
    elif where == "extra":
        log.info("vendor answered", extra={"detail": secret, "nested": {"list": [secret]}})
    elif where == "exception":
        try:
            try:
                raise KeyError(secret)
            except KeyError as inner:
                raise RuntimeError(f"lookup failed for {secret}") from inner
        except RuntimeError:
            log.exception("step failed")
    elif where == "bad-args":  # the logging machinery's own error report
        log.info("%d attempts", secret)


PLACES = ("message", "str-arg", "repr-arg", "extra", "exception", "bad-args")
any_secret = st.text(
    st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=MIN_SECRET_LENGTH
)
credential_alphabet = string.ascii_letters + string.digits + "-_.~+/="
KEY_CHARS = string.ascii_letters + string.digits + "-_"
credentialish = st.text(st.sampled_from(credential_alphabet), min_size=12, max_size=60)


# --- Redaction: configured secrets, any shape, any place --------------------------------------


@given(secret=any_secret, where=st.sampled_from(PLACES), fmt=st.sampled_from(FORMATS))
def test_a_configured_secret_never_reaches_a_line_when_logged_anywhere(secret, where, fmt):
    assume(secret not in MARKER and secret.strip())
    capture = Capture(fmt, secrets=["another-secret-value", secret])
    _log_everywhere(capture.log, secret, where)
    out = capture.text
    assert out
    assert secret not in out
    if fmt == "json":
        # Nor once the line is read back: no JSON escape of it survives either.
        for line in out.splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue  # a secret that spells JSON's own syntax may break the line, not leak
            assert not any(secret in s for s in every_string(entry))


@given(secret=credentialish, where=st.sampled_from(PLACES))
def test_json_lines_stay_json_with_every_field_when_secrets_are_redacted(secret, where):
    capture = Capture("json", secrets=[secret], project="p")
    with log_context(run_id="r-1", step_id="jira", tool="jira", attempt=2):
        _log_everywhere(capture.log, secret, where)
    for entry in capture.entries():
        assert {"severity", "message", "time", SOURCE_LOCATION} <= set(entry)
        assert (entry["run_id"], entry["step_id"], entry["tool"], entry["attempt"]) == (
            "r-1",
            "jira",
            "jira",
            2,
        )
        assert not any(secret in s for s in every_string(entry))


def _shaped() -> st.SearchStrategy[tuple[str, str]]:
    """(a line holding a credential, the credential): shapes that leak whatever the value."""
    word = st.text(st.sampled_from(string.ascii_letters + string.digits), min_size=16, max_size=40)
    dashed = st.text(st.sampled_from(string.ascii_letters + string.digits + "-"), min_size=16)
    return st.one_of(
        credentialish.map(lambda v: (f"headers={{'Authorization': 'Bearer {v}'}}", v)),
        credentialish.map(lambda v: (f"Authorization: Basic {v}", v)),
        credentialish.map(lambda v: (f'{{"x-goog-api-key": "{v}"}}', v)),
        credentialish.map(lambda v: (f"sent bearer {v} to the API", v)),
        word.flatmap(
            lambda v: st.sampled_from(["key", "api_key", "token", "access_token", "sig"]).map(
                lambda k: (f'"GET /v1/models?{k}={v}&alt=json HTTP/1.1" 200', v)
            )
        ),
        word.map(lambda v: (f"slack_token={v} was rejected", v)),
        word.map(lambda v: (f"retrying with SG.{v}.{v[::-1]}", f"SG.{v}")),
        st.tuples(st.sampled_from("abposr"), dashed).map(
            lambda t: (f"channel post as xox{t[0]}-{t[1]}", f"xox{t[0]}-{t[1]}")
        ),
        st.text(st.sampled_from(KEY_CHARS), min_size=35, max_size=35).map(
            lambda v: (f"gemini with AIza{v} answered", f"AIza{v}")
        ),
        st.just(None).map(lambda _: (lambda k: (f"intake key {k} accepted", k))(new_token())),
        word.map(lambda v: (f"Cookie: chimera_session={v}", v)),
        word.map(lambda v: (f"oidc eyJhbGciOi{v}.eyJzdWIi{v}.{v} verified", f"eyJzdWIi{v}")),
    )


@given(case=_shaped(), fmt=st.sampled_from(FORMATS))
def test_a_credential_is_redacted_by_its_shape_when_no_setting_names_it(case, fmt):
    line, credential = case
    capture = Capture(fmt)
    capture.log.info("%s", line)
    assert credential not in capture.text
    assert MARKER in capture.text
    if fmt == "json":
        capture.entries()  # still one JSON object per line


def test_a_console_session_and_a_private_key_are_redacted_by_their_shape(tmp_path):
    session = Keys(store=None, home=tmp_path).session_for(new_token())  # type: ignore[arg-type]
    pem = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----"
    redact = Redactor()
    assert redact(f"session {session} ok") == f"session {MARKER} ok"
    assert redact(f'{{"private_key": "{pem}"}}'.replace("\n", "\\n")) == (
        f'{{"private_key": "{MARKER}"}}'
    )


@pytest.mark.parametrize(
    "line",
    [
        "step jira done in 412 ms: project ACME created (key ACME)",
        "run 3f2a9c1e-acme-example: plan has 5 steps, attempt 2 of 5",
        "gen_ai.usage.input_tokens=1200 gen_ai.usage.output_tokens=85",
        "GET /rest/api/3/project/ACME?expand=lead HTTP/1.1 200",
        "circuit jira: open, cooling down for 30s",
    ],
)
def test_ordinary_lines_are_left_as_they_are_when_nothing_in_them_is_secret(line):
    assert Redactor(Settings().secret_values())(line) == line


def test_the_settings_secrets_are_redacted_in_a_vendor_request_log():
    settings = Settings()
    redact = Redactor(settings.secret_values())
    for secret in settings.secret_values():
        out = redact(f"POST /v3/mail/send headers={{'X-Key': '{secret}'}} body={secret!r}")
        assert secret not in out


def test_the_scheme_stays_readable_when_a_configured_secret_is_an_authorization_value():
    redact = Redactor(["SG.sandbox-sendgrid-key"])
    assert redact("{'Authorization': 'Bearer SG.sandbox-sendgrid-key'}") == (
        f"{{'Authorization': 'Bearer {MARKER}'}}"
    )


def test_a_short_secret_is_not_redacted_when_it_would_blank_out_words():
    assert Redactor(["abc"])("abc abc") == "abc abc"


def test_a_formatter_set_later_still_goes_through_the_redactor():
    capture = Capture("text", secrets=["s3cr3t-value"])
    capture.handler.setFormatter(logging.Formatter("%(message)s"))
    capture.log.info("value s3cr3t-value")
    assert capture.text == f"value {MARKER}\n"


# --- The JSON shape ---------------------------------------------------------------------------


def test_json_lines_carry_cloud_loggings_fields_and_the_context_when_logged_in_a_delivery():
    capture = Capture("json", project="acme-prod")
    with log_context(run_id="run-1", step_id="jira", tool="jira", attempt=3):
        capture.log.info("step done", extra={"latency_ms": 12, "outcome": "ok"})
        with log_context(step_id=None, tool=""):  # nothing given leaves a tag as it was
            capture.log.error("again")
    first, second = capture.entries()
    assert first["severity"] == "INFO" and first["message"] == "step done"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", first["time"])
    assert {"run_id": "run-1", "step_id": "jira", "tool": "jira", "attempt": 3}.items() <= (
        first.items()
    )
    assert first["latency_ms"] == 12 and first["outcome"] == "ok"
    assert first[SOURCE_LOCATION]["file"].endswith("test_logs.py")
    assert first[SOURCE_LOCATION]["function"] == (
        "test_json_lines_carry_cloud_loggings_fields_and_the_context_when_logged_in_a_delivery"
    )
    assert isinstance(first[SOURCE_LOCATION]["line"], int)
    assert second["severity"] == "ERROR" and second["step_id"] == "jira"
    # No span is current: the trace fields are left out, not made up.
    assert not {TRACE, SPAN_ID, TRACE_SAMPLED} & set(first)


@pytest.mark.parametrize("project", ["acme-prod", ""])
def test_json_lines_name_the_current_spans_trace_when_a_span_is_current(project):
    tracer = TracerProvider().get_tracer("test")
    capture = Capture("json", project=project)
    with tracer.start_as_current_span("deliver") as span:
        capture.log.info("inside")
        with tracer.start_as_current_span("vendor request") as child:
            capture.log.info("deeper")
    capture.log.info("outside")
    inside, deeper, outside = capture.entries()
    trace_id = format_trace_id(span.get_span_context().trace_id)
    expected = f"projects/{project}/traces/{trace_id}" if project else trace_id
    assert inside[TRACE] == deeper[TRACE] == expected
    assert inside[SPAN_ID] == format_span_id(span.get_span_context().span_id)
    assert deeper[SPAN_ID] == format_span_id(child.get_span_context().span_id)
    assert inside[TRACE_SAMPLED] is True
    assert TRACE not in outside


def test_an_exception_goes_into_stack_trace_when_logged_with_its_traceback():
    capture = Capture("json")
    try:
        raise ValueError("vendor said no")
    except ValueError:
        capture.log.exception("step failed")
    (entry,) = capture.entries()
    assert entry["message"] == "step failed"
    assert entry["stack_trace"].startswith("Traceback") and "vendor said no" in entry["stack_trace"]


@pytest.mark.parametrize(
    ("level", "expected"),
    [(5, "DEFAULT"), (10, "DEBUG"), (20, "INFO"), (25, "INFO"), (30, "WARNING"), (40, "ERROR")]
    + [(50, "CRITICAL")],
)
def test_severity_is_cloud_loggings_when_given_any_python_level(level, expected):
    assert severity(level) == expected


# --- Text for a terminal ----------------------------------------------------------------------


def test_text_lines_read_time_level_message_then_tags_when_on_a_terminal():
    capture = Capture("text")
    with log_context(run_id="run-1", step_id="jira", tool="jira", attempt=2):
        capture.log.warning("attempt 2 failed, will retry: rate_limited")
    capture.log.info("no context")
    first, second = capture.text.splitlines()
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} WARNING attempt 2 failed, will retry: rate_limited"
        r"  run=run-1 step=jira tool=jira attempt=2 \(chimera\.test\.text\)",
        first,
    ), first
    assert second.endswith(" INFO    no context  (chimera.test.text)")
    assert "{" not in capture.text


# --- configure_logging ------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_configure_logging_redacts_every_logger_when_it_sets_up_the_root(fmt, root_logging):
    stream = io.StringIO()
    settings = Settings()
    configure_logging(fmt, logging.DEBUG, settings.secret_values(), project="p", stream=stream)
    assert len(root_logging.handlers) == 1
    names = ("urllib3.connectionpool", "python_http_client.client", "tools.jira.client")
    # Each as the root sets it (the SendGrid client quiets its SDK's logger when built).
    levels = {name: logging.getLogger(name).level for name in names}
    try:
        for name in names:
            logger = logging.getLogger(name)
            logger.setLevel(logging.NOTSET)
            logger.debug("headers %s", {"Authorization": settings.jira_token})
            logger.debug("key %s", settings.sendgrid_key)
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
    out = stream.getvalue()
    assert len(out.splitlines()) == 6
    assert not [s for s in settings.secret_values() if s in out]

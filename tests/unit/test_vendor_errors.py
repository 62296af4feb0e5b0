"""The one map from a vendor's HTTP answer to a ChimeraError, over the whole status space."""

from __future__ import annotations

import http.client
import json
import re
import urllib.error
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.errors import (
    AuthFailed,
    ChimeraError,
    InvalidInput,
    NotFound,
    PermanentError,
    RateLimited,
    VendorTimeout,
    VendorUnavailable,
)
from shared.retry_after import retry_after
from shared.vendor_errors import (
    MAX_DETAIL,
    NO_DETAILS,
    error_for_status,
    transport_error,
    vendor_detail,
)

VENDORS = st.sampled_from(["Clearbit", "Jira", "SendGrid", "Slack", "Gemini"])
ACTIONS = st.sampled_from(["company.find", "project.create", "mail.send", "generateContent", ""])
# The statuses the map names, and their neighbours, drawn as often as the whole range.
NAMED = (400, 401, 402, 403, 404, 405, 407, 408, 409, 410, 411, 413, 421, 422, 428, 429, 430)
STATUSES = st.one_of(
    st.sampled_from(NAMED + (499, 500, 501, 503, 599, 600)),
    st.integers(min_value=100, max_value=999),
)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner),
    max_leaves=20,
)
# Whatever a vendor, a proxy or a cut connection may put in a body, raw or parsed.
BODIES = st.one_of(
    st.none(),
    st.binary(max_size=300),
    st.text(max_size=300),
    JSON,
    JSON.map(json.dumps),
    st.sampled_from(["<html><h1>502 Bad Gateway</h1></html>", "[" * 5000, '{"error": ']),
)


def expected_class(status: int) -> type[ChimeraError]:
    """The table in shared/vendor_errors.py's docstring, written out once more."""
    if status in (401, 403):
        return AuthFailed
    if status == 404:
        return NotFound
    if status == 408 or status >= 500:
        return VendorUnavailable
    if status == 429:
        return RateLimited
    if status in (400, 413, 422):
        return InvalidInput
    return PermanentError


def past_http_date(seconds_ago: int) -> str:
    return format_datetime(datetime.now(UTC) - timedelta(seconds=seconds_ago), usegmt=True)


def assert_mapped(error: ChimeraError, vendor: str, status: int) -> None:
    assert type(error) is expected_class(status)
    assert error.retryable == (status in (408, 429) or status >= 500)
    slug = vendor.lower()
    if status == 410:
        assert error.code == f"{slug}_gone" and "retired" in error.message
    elif type(error) is PermanentError:
        assert error.code == f"{slug}_http_{status}"
    else:
        assert error.code == expected_class(status).code


@pytest.mark.parametrize(
    ("status", "code", "retryable"),
    [
        (400, "invalid_input", False),
        (401, "auth_failed", False),
        (403, "auth_failed", False),
        (404, "not_found", False),
        (408, "unavailable", True),
        (409, "sendgrid_http_409", False),
        (410, "sendgrid_gone", False),
        (413, "invalid_input", False),
        (418, "sendgrid_http_418", False),
        (422, "invalid_input", False),
        (429, "rate_limited", True),
        (500, "unavailable", True),
        (502, "unavailable", True),
        (503, "unavailable", True),
        (504, "unavailable", True),
        (201, "sendgrid_http_201", False),  # a success the caller did not expect
    ],
)
def test_the_documented_statuses_map_to_their_codes(
    status: int, code: str, retryable: bool
) -> None:
    error = error_for_status("SendGrid", "mail.send", status, b'{"errors": []}')

    assert (error.code, error.retryable) == (code, retryable)


@pytest.mark.parametrize("vendor", ["Jira", "SendGrid"])
def test_every_status_from_100_to_999_maps_to_its_error_when_the_body_is_empty(vendor: str) -> None:
    for status in range(100, 1000):
        assert_mapped(error_for_status(vendor, "x", status, b""), vendor, status)


@given(vendor=VENDORS, action=ACTIONS, status=STATUSES, body=BODIES)
def test_each_status_maps_to_its_error_class_and_retry_when_any_body_comes_with_it(
    vendor: str, action: str, status: int, body: Any
) -> None:
    assert_mapped(error_for_status(vendor, action, status, body), vendor, status)


@given(vendor=VENDORS, action=ACTIONS, status=STATUSES, body=BODIES)
def test_message_names_who_answered_what_on_one_bounded_line_when_the_body_is_anything(
    vendor: str, action: str, status: int, body: Any
) -> None:
    message = error_for_status(vendor, action, status, body, reason="Bad Gateway").message

    where = f"{vendor} {action}" if action else vendor
    assert message.startswith(f"{where} answered {status}: ")
    assert "\n" not in message and "\r" not in message
    assert len(message) <= len(where) + MAX_DETAIL + 60


@given(status=st.sampled_from([None, 0, -1]), vendor=VENDORS, action=ACTIONS)
def test_no_status_is_an_unavailable_vendor_when_no_answer_carried_one(
    status: int | None, vendor: str, action: str
) -> None:
    error = error_for_status(vendor, action, status, b"")

    assert type(error) is VendorUnavailable and error.retryable
    assert "gave no response" in error.message


RETRY_AFTER = st.one_of(
    st.integers(min_value=0, max_value=10**6).map(str),
    st.floats(min_value=0, max_value=10**5, allow_nan=False).map(lambda s: f"{s:.3f}"),
    st.integers(min_value=-1000, max_value=-1).map(str),
    st.integers(min_value=1, max_value=10**6).map(past_http_date),
    st.text(max_size=20),
)


@given(value=RETRY_AFTER, name=st.sampled_from(["Retry-After", "retry-after", "RETRY-AFTER"]))
def test_a_429_carries_its_retry_after_when_the_header_gives_one(value: str, name: str) -> None:
    error = error_for_status("Jira", "project.create", 429, None, {name: value})

    assert isinstance(error, RateLimited)
    assert error.retry_after == retry_after({name: value})
    if re.fullmatch(r"-?[0-9]+(\.[0-9]+)?", value.strip()):
        assert error.retry_after == max(0.0, float(value))  # seconds, never negative
    elif value.endswith("GMT"):
        assert error.retry_after == 0.0  # a date already past: go now


@given(
    value=st.one_of(st.none(), st.text(max_size=10).filter(lambda v: retry_after({"r": v}))),
    delay=st.floats(min_value=0, max_value=3600, allow_nan=False),
)
def test_a_429_takes_the_vendors_own_hint_when_no_readable_retry_after(
    value: str | None, delay: float
) -> None:
    headers = {} if value is None else {"Retry-After": value}

    error = error_for_status("Gemini", "generateContent", 429, None, headers, retry_delay=delay)

    assert isinstance(error, RateLimited) and error.retry_after == delay


@given(status=STATUSES.filter(lambda s: s != 429), value=RETRY_AFTER)
def test_only_a_429_carries_a_retry_after_when_others_send_the_header(
    status: int, value: str
) -> None:
    error = error_for_status("SendGrid", "mail.send", status, None, {"Retry-After": value})

    assert getattr(error, "retry_after", None) is None


# -- the vendor's own words -----------------------------------------------------------------

WORDS = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=40
).filter(lambda t: t.strip(": \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f\x85\u2028\u2029"))


def one_line(text: str) -> str:
    return " ".join(text.split())


@given(kind=WORDS, words=WORDS, raw=st.booleans())
def test_detail_reads_clearbits_and_googles_error_object_when_given_raw_or_parsed(
    kind: str, words: str, raw: bool
) -> None:
    for label in ("type", "status"):
        body: Any = {"error": {label: kind, "message": words, "code": 400}}
        detail = vendor_detail(json.dumps(body).encode() if raw else body)
        assert detail == one_line(f"{kind}: {words}".strip(": "))[:MAX_DETAIL]


@given(messages=st.lists(WORDS, max_size=3), fields=st.dictionaries(WORDS, WORDS, max_size=3))
def test_detail_reads_jiras_messages_and_field_errors_when_both_are_given(
    messages: list[str], fields: dict[str, str]
) -> None:
    body = {"errorMessages": messages, "errors": fields}

    detail = vendor_detail(json.dumps(body), fallback="Bad Request")

    parts = messages + [f"{k}: {v}" for k, v in fields.items()]
    assert detail == (one_line("; ".join(parts)) or "Bad Request")[:MAX_DETAIL]


@given(errors=st.lists(st.tuples(st.one_of(st.none(), WORDS), WORDS), min_size=1, max_size=4))
def test_detail_reads_sendgrids_error_list_when_some_errors_name_no_field(
    errors: list[tuple[str | None, str]],
) -> None:
    body = {"errors": [{"field": field, "message": words} for field, words in errors]}

    detail = vendor_detail(json.dumps(body).encode())

    parts = [f"{field}: {words}" if field else words for field, words in errors]
    # Messages that are only blanks say nothing: the detail says so instead of going empty.
    assert detail == (one_line("; ".join(parts))[:MAX_DETAIL] or NO_DETAILS)


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        ({"ok": False, "error": "channel_not_found"}, "channel_not_found"),  # Slack
        (
            {"message": "<html>oops</html>", "status": "Bad Gateway"},
            "Bad Gateway: <html>oops</html>",
        ),
        ({"errorMessages": ["No project"], "errors": {}}, "No project"),
        (
            {"error": {"type": "unknown_record", "message": "Unknown domain"}},
            "unknown_record: Unknown domain",
        ),
    ],
)
def test_detail_reads_each_vendors_documented_shape(body: Any, detail: str) -> None:
    assert vendor_detail(body) == detail


@given(body=BODIES, fallback=st.text(max_size=400))
def test_detail_is_one_clipped_line_and_never_raises_when_the_body_is_garbage(
    body: Any, fallback: str
) -> None:
    detail = vendor_detail(body, fallback=fallback)

    assert 0 < len(detail) <= MAX_DETAIL
    assert detail == one_line(detail)


@given(body=st.sampled_from([None, b"", b"<html>Bad Gateway</html>", "not json", [], {}, 3]))
def test_detail_falls_back_to_the_reason_when_the_body_says_nothing(body: Any) -> None:
    assert vendor_detail(body, fallback="Service Unavailable") == "Service Unavailable"
    assert vendor_detail(body) == "no details"


# -- no answer at all -----------------------------------------------------------------------


class SdkTimeout(Exception):
    """An SDK's own timeout class, not a TimeoutError (requests', httpx')."""


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (TimeoutError("read"), VendorTimeout),
        (urllib.error.URLError(TimeoutError("connect")), VendorTimeout),
        (SdkTimeout(), VendorTimeout),
        (urllib.error.URLError(ConnectionRefusedError(111, "refused")), VendorUnavailable),
        (urllib.error.URLError("no host"), VendorUnavailable),
        (ConnectionResetError(104, "reset"), VendorUnavailable),
        (OSError("broken pipe"), VendorUnavailable),
        (http.client.IncompleteRead(b"par"), VendorUnavailable),
    ],
)
def test_a_request_without_an_answer_is_retryable_and_says_which_when_it_timed_out(
    exc: BaseException, expected: type[ChimeraError]
) -> None:
    error = transport_error("Slack", "chat.postMessage", exc, timeouts=(SdkTimeout,))

    assert type(error) is expected and error.retryable
    assert error.message.startswith("Slack chat.postMessage ")
    assert ("timed out" in error.message) == (expected is VendorTimeout)

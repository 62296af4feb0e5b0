"""The checks around chimera dev's server: its own Host only, JSON only, bodies capped."""

from __future__ import annotations

import io
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from werkzeug.test import Client

from shared.request_guard import CLOUD_EVENT_TYPES, LocalServerGuard, bound_hosts, media_type

PORT = 8080
LIMIT = 1024


class App:
    """The server behind the guard: notes each request that reached it, and its body."""

    def __init__(self) -> None:
        self.seen: list[bytes] = []

    def __call__(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        self.seen.append(environ["wsgi.input"].read(length))
        start_response("200 OK", [("Content-Type", "application/json")])
        return [b"{}"]


def _guarded() -> tuple[Client, App]:
    app = App()
    guard = LocalServerGuard(
        app,
        hosts=bound_hosts(PORT),
        limit=LIMIT,
        types_by_prefix={"/functions/orchestrator-pubsub": CLOUD_EVENT_TYPES},
    )
    return Client(guard), app


@pytest.mark.parametrize(
    "host", ["127.0.0.1:8080", "localhost:8080", "[::1]:8080", "LocalHost:8080"]
)
def test_requests_for_the_bound_addresses_get_through(host):
    client, app = _guarded()
    response = client.post("/runs", json={"a": 1}, headers={"Host": host})
    assert response.status_code == 200 and app.seen == [b'{"a": 1}']


hosts = st.one_of(
    st.sampled_from(
        [
            "evil.example",
            "evil.example:8080",
            "127.0.0.1:8081",
            "localhost",
            "127.0.0.1",
            "localhost.evil.example:8080",
            "127.0.0.1.nip.io:8080",
            "[::1]:80",
            "0.0.0.0:8080",
            "2130706433:8080",
        ]
    ),
    st.from_regex(r"[a-z0-9.-]{1,40}(:[0-9]{1,5})?", fullmatch=True),
).filter(lambda h: h not in bound_hosts(PORT))


@given(host=hosts, method=st.sampled_from(["GET", "POST"]))
def test_any_other_host_is_refused_as_dns_rebinding(host, method):
    client, app = _guarded()
    response = client.open("/runs", method=method, json={}, headers={"Host": host})
    assert response.status_code == 421
    assert response.get_json()["error"]["code"] == "bad_host" and app.seen == []


def test_port_80_also_answers_to_the_bare_names():
    assert {"localhost", "127.0.0.1", "[::1]"} <= bound_hosts(80)
    assert "localhost" not in bound_hosts(8080)


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "text/plain",
        "text/plain;charset=UTF-8",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/jsonp",
        "application/cloudevents+json",
    ],
)
def test_a_post_that_is_not_json_is_a_415_before_it_is_read(content_type):
    client, app = _guarded()
    headers = {"Host": "127.0.0.1:8080"}
    if content_type:
        headers["Content-Type"] = content_type
    response = client.post("/functions/tool-sendgrid/", data=b'{"a": 1}', headers=headers)
    assert response.status_code == 415 and app.seen == []


@pytest.mark.parametrize("content_type", ["application/json", "APPLICATION/JSON; charset=utf-8"])
def test_json_with_or_without_a_charset_is_taken(content_type):
    client, app = _guarded()
    response = client.post(
        "/runs", data=b"{}", headers={"Host": "127.0.0.1:8080", "Content-Type": content_type}
    )
    assert response.status_code == 200 and app.seen == [b"{}"]


def test_the_pubsub_target_also_takes_structured_cloud_events():
    client, _ = _guarded()
    for content_type in CLOUD_EVENT_TYPES:
        response = client.post(
            "/functions/orchestrator-pubsub/",
            data=b"{}",
            headers={"Host": "localhost:8080", "Content-Type": content_type},
        )
        assert response.status_code == 200


@given(size=st.integers(min_value=LIMIT + 1, max_value=LIMIT * 8))
def test_a_body_over_the_cap_is_a_413_whether_declared_or_chunked(size):
    client, app = _guarded()
    body = b"x" * size
    headers = {"Host": "127.0.0.1:8080", "Content-Type": "application/json"}
    declared = client.post("/runs", data=body, headers=headers)
    chunked = client.post(
        "/runs",
        input_stream=io.BytesIO(body),
        headers=headers,
        environ_overrides={"wsgi.input_terminated": True},
    )
    assert declared.status_code == 413 and chunked.status_code == 413 and app.seen == []


def test_a_chunked_body_under_the_cap_reaches_the_app_whole():
    client, app = _guarded()
    response = client.post(
        "/runs",
        input_stream=io.BytesIO(b'{"a": 1}'),
        headers={"Host": "127.0.0.1:8080", "Content-Type": "application/json"},
        environ_overrides={"wsgi.input_terminated": True},
    )
    assert response.status_code == 200 and app.seen == [b'{"a": 1}']


def test_gets_need_no_content_type_but_still_their_host():
    client, app = _guarded()
    assert client.get("/runs", headers={"Host": "localhost:8080"}).status_code == 200
    assert client.get("/runs", headers={"Host": "evil.example"}).status_code == 421


def test_media_type_drops_parameters_and_case():
    assert media_type("Application/JSON; charset=utf-8") == "application/json"
    assert media_type(None) == ""

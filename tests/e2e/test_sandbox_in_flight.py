"""The sandbox's in-flight gauge: requests being served per vendor, now and at the peak."""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path

import requests
from hypothesis import given
from hypothesis import strategies as st

from sandbox.server import IN_FLIGHT_PATH, InFlightGauge, SandboxServer

SLACK_AUTH = {"Authorization": "Bearer xoxb-sandbox-slack-token"}
VENDORS = ("slack", "jira", "clearbit")


def until(condition, timeout: float = 20) -> None:
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "the condition never held"
        time.sleep(0.01)


@given(st.lists(st.tuples(st.sampled_from(VENDORS), st.sampled_from(("enter", "leave", "reset")))))
def test_the_gauge_counts_each_vendors_requests_and_their_peak_since_a_reset(moves):
    gauge = InFlightGauge(VENDORS)
    now = dict.fromkeys(VENDORS, 0)
    peak = dict(now)
    for vendor, move in moves:
        if move == "enter":
            gauge.enter(vendor)
            now[vendor] += 1
            peak[vendor] = max(peak[vendor], now[vendor])
        elif move == "leave" and now[vendor]:
            gauge.leave(vendor)
            now[vendor] -= 1
        elif move == "reset":
            gauge.reset_peaks()
            peak = dict(now)
    assert gauge.snapshot() == {v: {"now": now[v], "peak": peak[v]} for v in VENDORS}


def test_the_gauge_shows_requests_held_at_a_vendor_and_keeps_their_peak_when_they_end(
    tmp_path: Path,
):
    # Slack's calls wait a minute (until stop releases them), so they are all in flight at once.
    server = SandboxServer(tmp_path, faults="slack.latency_ms=60000").start()
    gauge_url = server.url + IN_FLIGHT_PATH
    held = 5

    def post() -> None:
        body = {"channel": "#client-onboarding", "text": "hi"}
        # The server stops under it: only the gauge matters here.
        with contextlib.suppress(requests.RequestException):
            url = f"{server.url}/slack/api/chat.postMessage"
            requests.post(url, json=body, headers=SLACK_AUTH, timeout=70)

    clients = [threading.Thread(target=post) for _ in range(held)]
    try:
        for client in clients:
            client.start()
        until(lambda: requests.get(gauge_url, timeout=5).json()["slack"]["now"] == held)
        reading = requests.get(gauge_url, timeout=5).json()
        assert reading["slack"] == {"now": held, "peak": held}
        assert reading["jira"] == {"now": 0, "peak": 0}
        # A vendor's own path of the same name is that vendor's 404, never the gauge.
        shadow = requests.get(f"{server.url}/slack{IN_FLIGHT_PATH}", timeout=5)
        assert shadow.status_code == 404 and "peak" not in shadow.text
    finally:
        server.stop()  # releases the held calls
        for client in clients:
            client.join(timeout=30)
    assert server.app.in_flight.snapshot()["slack"] == {"now": 0, "peak": held}
    server.app.in_flight.reset_peaks()
    assert server.app.in_flight.snapshot()["slack"] == {"now": 0, "peak": 0}


def test_a_post_to_the_gauge_resets_its_peaks_to_what_is_in_flight_now(tmp_path: Path):
    with SandboxServer(tmp_path) as server:
        session = requests.Session()
        for _ in range(3):
            session.post(
                f"{server.url}/slack/api/chat.postMessage",
                json={"channel": "#client-onboarding", "text": "hi"},
                headers=SLACK_AUTH,
                timeout=10,
            ).raise_for_status()
        assert session.get(server.url + IN_FLIGHT_PATH, timeout=5).json()["slack"] == {
            "now": 0,
            "peak": 1,
        }
        reset = session.post(server.url + IN_FLIGHT_PATH, timeout=5)
        assert reset.status_code == 200 and reset.json()["slack"] == {"now": 0, "peak": 0}
        assert session.delete(server.url + IN_FLIGHT_PATH, timeout=5).status_code == 405

"""An onboarding's logs, as the functions write them on Google Cloud: JSON lines at DEBUG from
every logger (the vendor SDKs' and urllib3's included), under vendor faults so that retries log
too. No line holds a credential the settings give the vendor clients or an intake key; each is
one JSON object in Cloud Logging's shape; a delivery's lines name their run and its trace."""

from __future__ import annotations

import io
import json
import logging
import re
from collections import defaultdict
from collections.abc import Iterator

import pytest
import requests
from werkzeug.test import Client

from chimera.stack import LocalStack
from shared.keys import Keys, local_credential
from shared.logs import SOURCE_LOCATION, SPAN_ID, TRACE, TRACE_SAMPLED, configure_logging
from shared.model import RunState
from shared.registry import TOOLS
from shared.settings import Settings
from tests.conftest import every_string
from tests.e2e.conftest import body, distinct_secrets, wait_until_settled

pytestmark = pytest.mark.slow

PROJECT = "chimera-e2e"
SEVERITIES = {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}


class Onboarded:
    """What one test session of onboardings left: the log output, the secrets, the runs."""

    def __init__(self, output: str, hunted: list[str], runs: dict[str, RunState]) -> None:
        self.output = output
        self.hunted = hunted
        self.runs = runs
        self.entries = [json.loads(line) for line in output.splitlines() if line.startswith("{")]


def _every_logger_at_debug() -> dict[str, int]:
    """Each existing logger down to DEBUG (a library's own quieter level included); returns
    the levels to put back."""
    before = {}
    for name, logger in logging.root.manager.loggerDict.items():
        if isinstance(logger, logging.Logger):
            before[name] = logger.level
            logger.setLevel(logging.DEBUG)
    return before


@pytest.fixture(scope="module")
def onboarded(tmp_path_factory) -> Iterator[Onboarded]:
    home = tmp_path_factory.mktemp("logs") / "home"
    settings = Settings(
        home=home,
        local_backoff_scale=0.02,
        gcp_project=PROJECT,
        log_format="json",
        **distinct_secrets(),
    )
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    stream = io.StringIO()
    configure_logging(
        "json", logging.DEBUG, settings.secret_values(), project=PROJECT, stream=stream
    )
    levels = _every_logger_at_debug()
    sdk = logging.getLogger("python_http_client.client")
    pinned = pytest.MonkeyPatch()
    # The SendGrid client quiets its SDK's header log (Authorization included) when it is
    # built; held at DEBUG here, so that redaction alone keeps the key out of the lines.
    pinned.setattr(sdk, "setLevel", lambda level: None)
    # Over HTTP, as Cloud Tasks delivers: the server's access lines and urllib3's log too.
    stack = LocalStack(
        settings,
        faults="*.error=0.2,*.rate_limit=0.1,*.garbage=0.05,seed=7",
        serve_port=0,
        over_http=True,
    )
    try:
        stack.start()
        _, key = Keys(stack.runtime.store, home).create("crm")
        intake = Client(stack.apps["orchestrator-intake"])
        run_ids = [
            intake.post(
                "/runs", json=body(1), headers={"Authorization": f"Bearer {key}"}
            ).get_json()["run_id"],
            requests.post(
                f"{stack.url}/runs", json=body(2), headers=stack.auth_headers, timeout=10
            ).json()["run_id"],
        ]
        # The console's sign-in by URL puts the local credential in a request line.
        requests.get(stack.console_url, timeout=10, allow_redirects=False)
        runs = wait_until_settled(stack, run_ids, timeout=120)
        hunted = [*settings.secret_values(), key, local_credential(home)]
    finally:
        stack.stop()
        pinned.undo()
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
    yield Onboarded(stream.getvalue(), hunted, runs)


def test_no_log_line_holds_a_vendor_credential_or_an_intake_key(onboarded):
    assert len(onboarded.hunted) == 7 and all(len(s) >= 20 for s in onboarded.hunted)
    # The run really logged at DEBUG through the SDKs and retried.
    loggers = {e["logger"] for e in onboarded.entries}
    assert {"urllib3.connectionpool", "python_http_client.client", "werkzeug"} <= loggers
    assert any("will retry" in e["message"] for e in onboarded.entries)
    # Which secrets leaked, by position in `hunted`: a failure never prints one.
    out = onboarded.output
    leaked = [i for i, s in enumerate(onboarded.hunted) if s in out or json.dumps(s)[1:-1] in out]
    assert leaked == []
    decoded = [s for e in onboarded.entries for s in every_string(e)]
    assert [i for i, s in enumerate(onboarded.hunted) if any(s in d for d in decoded)] == []


def test_every_line_is_one_json_object_in_cloud_loggings_shape(onboarded):
    lines = onboarded.output.splitlines()
    assert len(lines) > 100
    assert len(onboarded.entries) == len(lines), "a line is not JSON"
    for entry in onboarded.entries:
        assert entry["severity"] in SEVERITIES, entry
        assert isinstance(entry["message"], str)
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", entry["time"])
        assert {"file", "line", "function"} <= set(entry[SOURCE_LOCATION])
        if TRACE in entry:
            assert re.fullmatch(rf"projects/{PROJECT}/traces/[0-9a-f]{{32}}", entry[TRACE])
            assert re.fullmatch(r"[0-9a-f]{16}", entry[SPAN_ID])
            assert isinstance(entry[TRACE_SAMPLED], bool)


def test_a_deliverys_lines_name_their_run_step_and_attempt(onboarded):
    delivered = [e for e in onboarded.entries if "attempt" in e]
    assert delivered
    for entry in delivered:
        assert entry["run_id"] in onboarded.runs, entry
        assert isinstance(entry["attempt"], int) and entry["attempt"] >= 1
    # Tool deliveries name the step and the tool; the SDK's lines inside them too.
    tool_lines = [e for e in delivered if "tool" in e]
    assert {e["tool"] for e in tool_lines} == set(TOOLS)
    assert any(e["logger"] == "urllib3.connectionpool" for e in tool_lines)
    assert any(e["attempt"] > 1 for e in delivered), "no retry was logged"


def test_a_deliverys_lines_carry_the_runs_trace(onboarded):
    traced = {run_id: run.trace_id for run_id, run in onboarded.runs.items()}
    assert all(traced.values()), traced
    seen: dict[str, set[str]] = defaultdict(set)
    for entry in onboarded.entries:
        if "attempt" in entry:
            assert TRACE in entry, entry
            seen[entry["run_id"]].add(entry[TRACE])
    assert seen == {r: {f"projects/{PROJECT}/traces/{t}"} for r, t in traced.items()}

"""One onboarding, one trace: its spans cover every task hop the local queue made and every
vendor request the sandbox answered, retries included (judged from the queue's and the
sandbox's own records)."""

from __future__ import annotations

import time
from collections import Counter

import pytest
from opentelemetry.trace import SpanKind

from sandbox.records import RecordStore
from shared.model import RunStatus
from tests.e2e.conftest import body, submit, wait_until_settled
from tests.telemetry_recorder import recorded

pytestmark = pytest.mark.slow


def _deliveries(stack, run_id: str) -> Counter:
    """How often the local queue delivered each of the run's tasks: a done task once more
    than it failed; a dead one as often as it failed; a queued one (a watchdog) as often as
    it failed so far."""
    rows = (
        stack.runtime.queue.db.connection()
        .execute("SELECT name, state, retry_count FROM tasks WHERE name LIKE ?", (f"{run_id}%",))
        .fetchall()
    )
    assert not any(r["state"] == "leased" for r in rows)
    return Counter(
        {r["name"]: r["retry_count"] + (r["state"] == "done") for r in rows if r["retry_count"]}
        | {r["name"]: 1 for r in rows if r["state"] == "done" and not r["retry_count"]}
    )


def _settled_spans(stack, recording, run_id: str) -> tuple[Counter, list]:
    """The deliveries and spans once the last delivery's answer is in (a run succeeds inside
    its last delivery, whose span ends just after)."""
    end = time.monotonic() + 15
    while True:
        leased = (
            stack.runtime.queue.db.connection()
            .execute(
                "SELECT COUNT(*) FROM tasks WHERE name LIKE ? AND state = 'leased'",
                (f"{run_id}%",),
            )
            .fetchone()[0]
        )
        spans = recording.spans()
        delivered = [s for s in spans if s.kind is SpanKind.SERVER and s.name != "intake http"]
        if not leased:
            deliveries = _deliveries(stack, run_id)
            if sum(deliveries.values()) <= len(delivered) or time.monotonic() > end:
                return deliveries, spans
        if time.monotonic() > end:
            raise AssertionError("the run's deliveries did not settle")
        time.sleep(0.05)


def test_one_onboarding_is_one_trace_covering_every_hop_and_vendor_request(start_stack, tmp_path):
    with recorded() as recording:
        # Seeded vendor errors: some steps fail and are retried by the queue.
        stack = start_stack("jira.error=0.4,slack.error=0.5,seed=11", local_backoff_scale=0.01)
        status, answer = submit(stack, body())
        assert status == 202
        run_id = answer["run_id"]
        run = wait_until_settled(stack, [run_id])[run_id]
        assert run.status is RunStatus.SUCCEEDED, run.reason
        deliveries, spans = _settled_spans(stack, recording, run_id)

    # Exactly one trace: every span about the run is in it, and the run document names it.
    about_run = [s for s in spans if s.attributes.get("chimera.run_id") == run_id]
    trace_ids = {f"{s.context.trace_id:032x}" for s in about_run}
    assert trace_ids == {run.trace_id}
    in_trace = [s for s in spans if f"{s.context.trace_id:032x}" == run.trace_id]
    (root,) = [s for s in in_trace if s.parent is None]
    assert root.name == "intake http" and root.kind is SpanKind.SERVER

    # Every delivery the queue made (retries too) has its own span, named by its task.
    assert any(count > 1 for count in deliveries.values()), "the seed made no retry"
    delivered = Counter(
        s.attributes["chimera.task"]
        for s in in_trace
        if s.kind is SpanKind.SERVER and "chimera.task" in s.attributes
    )
    assert delivered == deliveries
    # ...each the child of the dispatch that queued its task, in the same trace.
    by_id = {s.context.span_id: s for s in in_trace}
    for span in in_trace:
        if span.kind is SpanKind.SERVER and span is not root:
            parent = by_id[span.parent.span_id]
            assert parent.kind is SpanKind.PRODUCER
            assert parent.attributes["chimera.task"] == span.attributes["chimera.task"]
    attempts = Counter(
        (s.attributes["chimera.task"], s.attributes["chimera.attempt"])
        for s in in_trace
        if s.kind is SpanKind.SERVER and s is not root
    )
    assert set(attempts.values()) == {1}  # a retry is a new span, numbered

    # Every vendor request the sandbox answered is a CLIENT span in the trace (the only run:
    # not every request names its run, Jira's lookups and Slack's channel list do not).
    records = RecordStore(tmp_path / "home").list()
    assert {r["run_id"] for r in records} <= {run_id, None}
    requested = Counter((r["vendor"], r["method"], r["status"]) for r in records)
    traced = Counter(
        (
            s.attributes["chimera.vendor"],
            s.attributes["http.request.method"],
            s.attributes["http.response.status_code"],
        )
        for s in in_trace
        if s.kind is SpanKind.CLIENT and "chimera.vendor" in s.attributes
    )
    assert traced == requested
    assert {"jira", "slack", "sendgrid", "gemini"} <= {vendor for vendor, _, _ in traced}
    assert any(status >= 500 for _, _, status in traced)  # the seeded errors, answered
    # The model calls carry the GenAI conventions.
    chats = [s for s in in_trace if s.attributes.get("gen_ai.operation.name") == "chat"]
    assert chats and all(s.attributes["gen_ai.usage.input_tokens"] > 0 for s in chats)


def test_one_onboarding_is_measured_once_by_outcome_with_its_retries(start_stack):
    with recorded() as recording:
        stack = start_stack("jira.error=0.4,slack.error=0.5,seed=11", local_backoff_scale=0.01)
        run_id = submit(stack, body())[1]["run_id"]
        run = wait_until_settled(stack, [run_id])[run_id]
        assert run.status is RunStatus.SUCCEEDED, run.reason
        _settled_spans(stack, recording, run_id)

    def total(name: str, **where: object) -> float:
        return sum(
            p.value
            for a, p in recording.points(name)
            if all(a.get(k) == v for k, v in where.items())
        )

    assert total("chimera.runs", outcome="succeeded") == 1
    assert total("chimera.runs") == 1
    retried = total("chimera.tool.retries")
    assert retried > 0 and total("chimera.tool.calls", outcome="retry") == retried
    assert total("chimera.tool.calls", outcome="ok") == len(run.steps)
    assert total("chimera.tool.errors", **{"error.code": "unavailable"}) == retried
    statuses = {
        a.get("http.response.status_code")
        for a, _ in recording.points("chimera.vendor.request.duration")
    }
    assert 200 in statuses and statuses & {500, 503}
    assert {a["gen_ai.token.type"] for a, _ in recording.points("gen_ai.client.token.usage")} == {
        "input",
        "output",
    }

"""shared/metrics.py: each metric of the contract table, by its name, unit and attributes."""

from __future__ import annotations

from shared import metrics
from shared.local_queue import LocalTaskQueue
from shared.model import Task
from shared.queues import QUEUES
from shared.sqlite_db import SqliteDatabase
from tests.telemetry_recorder import recorded


def _sum(recording, name: str, **attributes) -> float:
    return sum(
        p.value
        for a, p in recording.points(name)
        if all(a.get(k) == v for k, v in attributes.items())
    )


def test_a_tool_attempt_counts_its_call_error_retry_and_latency():
    with recorded() as recording:
        metrics.tool_attempt("create_jira_project", "jira", "retry", 0.2, "unavailable")
        metrics.tool_attempt("create_jira_project", "jira", "ok", 0.1)
        metrics.tool_attempt("post_slack_notice", "slack", "failed", 0.3, "auth_failed")
    where = {"tool": "create_jira_project", "vendor": "jira"}
    assert _sum(recording, "chimera.tool.calls", **where, outcome="retry") == 1
    assert _sum(recording, "chimera.tool.calls", **where, outcome="ok") == 1
    assert _sum(recording, "chimera.tool.retries", **where) == 1
    assert _sum(recording, "chimera.tool.errors", **where, **{"error.code": "unavailable"}) == 1
    assert (
        _sum(recording, "chimera.tool.errors", vendor="slack", **{"error.code": "auth_failed"}) == 1
    )
    assert _sum(recording, "chimera.tool.retries", vendor="slack") == 0
    durations = {tuple(sorted(a.items())): p for a, p in recording.points("chimera.tool.duration")}
    jira = durations[tuple(sorted(where.items()))]
    assert jira.count == 2 and abs(jira.sum - 0.3) < 1e-9
    units = recording.units()
    assert units["chimera.tool.calls"] == "{call}" and units["chimera.tool.duration"] == "s"
    assert units["chimera.tool.errors"] == "{error}" and units["chimera.tool.retries"] == "{retry}"


def test_a_vendor_request_is_timed_by_its_status():
    with recorded() as recording:
        metrics.vendor_request("slack", 429, 0.05)
        metrics.vendor_request("slack", None, 3.0)  # no answer: no status
    points = recording.points("chimera.vendor.request.duration")
    found = {a.get("http.response.status_code"): p.count for a, p in points}
    assert found == {429: 1, None: 1}
    assert all(a["vendor"] == "slack" for a, _ in points)
    assert recording.units()["chimera.vendor.request.duration"] == "s"


def test_the_breaker_gauge_says_its_state_as_a_number():
    with recorded() as recording:
        metrics.breaker_state("jira", "open")
        metrics.breaker_state("slack", "half_open")
        metrics.breaker_state("slack", "closed")
    found = {a["vendor"]: p.value for a, p in recording.points("chimera.breaker.state")}
    assert found == {"jira": 2, "slack": 0}
    assert recording.units()["chimera.breaker.state"] == "1"


def test_runs_are_counted_by_outcome_and_only_the_contracts_outcomes():
    with recorded() as recording:
        for outcome in ("succeeded", "parked", "parked", "running", "pending"):
            metrics.run_entered(outcome)
    found = {a["outcome"]: p.value for a, p in recording.points("chimera.runs")}
    assert found == {"succeeded": 1, "parked": 2}
    assert recording.units()["chimera.runs"] == "{run}"


def test_a_model_call_records_its_tokens_by_type_and_its_cost():
    with recorded() as recording:
        metrics.model_call("gemini-2.5-flash", 120, 30, 0.0001)
    tokens = {
        a["gen_ai.token.type"]: (a, p) for a, p in recording.points("gen_ai.client.token.usage")
    }
    assert tokens["input"][1].sum == 120 and tokens["output"][1].sum == 30
    assert tokens["input"][0]["gen_ai.operation.name"] == "chat"
    assert tokens["input"][0]["gen_ai.request.model"] == "gemini-2.5-flash"
    assert (
        _sum(recording, "chimera.llm.cost", **{"gen_ai.request.model": "gemini-2.5-flash"})
        == 0.0001
    )
    units = recording.units()
    assert units["gen_ai.client.token.usage"] == "{token}" and units["chimera.llm.cost"] == "USD"


def test_the_queue_gauges_read_the_observed_queues_stats(tmp_path):
    queue = LocalTaskQueue(SqliteDatabase(tmp_path / "q.db"), QUEUES)
    for n in range(3):
        queue.enqueue(Task(queue="tool-jira", name=f"t-{n}", payload={}))
    with recorded() as recording:
        metrics.observe_queues(lambda: queue)
        depth = {a["queue"]: p.value for a, p in recording.points("chimera.queue.depth")}
        age = {a["queue"]: p.value for a, p in recording.points("chimera.queue.oldest_task_age")}
    assert depth == {name: (3 if name == "tool-jira" else 0) for name in QUEUES}
    assert age["tool-jira"] >= 0 and age["orchestrator"] == 0
    assert recording.units()["chimera.queue.depth"] == "{task}"


def test_the_queue_gauges_read_the_installed_runtimes_queue_and_nothing_else(tmp_path):
    from shared.runtime import build_runtime, install
    from shared.settings import Settings

    with recorded() as recording:
        built = build_runtime(Settings(home=tmp_path / "home"))
        assert recording.points("chimera.queue.depth") == []  # built, not installed
        install(built)
        built.queue.enqueue(Task(queue="orchestrator", name="t-1", payload={}))
        depth = {a["queue"]: p.value for a, p in recording.points("chimera.queue.depth")}
        install(None)
    assert depth["orchestrator"] == 1 and set(depth) == set(QUEUES)

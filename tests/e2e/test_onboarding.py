"""Whole onboardings on the embedded stack, through the real SDKs and the vendor sandbox."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from sandbox.effects import side_effects
from sandbox.records import RecordStore
from shared.local_targets import Delivery, WsgiTarget
from shared.model import RunStatus, StepStatus
from tests.e2e.conftest import ONE_ONBOARDING, body, submit, wait_until_settled

pytestmark = pytest.mark.slow


def test_onboarding_succeeds_with_one_of_each_side_effect(start_stack, tmp_path):
    stack = start_stack()
    status, answer = submit(stack, body())
    assert status == 202
    run = wait_until_settled(stack, [answer["run_id"]])[answer["run_id"]]

    assert run.status is RunStatus.SUCCEEDED, run.reason
    assert all(s.status is StepStatus.SUCCEEDED and s.attempts == 1 for s in run.steps.values())
    assert run.totals.llm_tokens > 0 and run.totals.cost_usd > 0
    assert side_effects(tmp_path / "home")[run.run_id] == ONE_ONBOARDING

    records = RecordStore(tmp_path / "home").list(run_id=run.run_id)
    actions = Counter((r["vendor"], r["action"]) for r in records)
    assert actions[("jira", "project.create")] == 1
    assert actions[("sendgrid", "mail.send")] == 1
    assert actions[("slack", "chat.postMessage")] == 1
    # The plan, its revision after enrichment, and the draft.
    assert actions[("gemini", "generateContent")] == 3
    mail = next(r for r in records if r["action"] == "mail.send")["request"]
    assert mail["personalizations"][0]["to"][0]["email"] == "ceo@client0.example"

    store = stack.runtime.store
    kinds = [e.kind for e in store.events(run.run_id)]
    assert kinds[0] == "run.created" and kinds[-1] == "run.succeeded"
    assert kinds.count("step.dispatched") == kinds.count("step.succeeded") == 5
    assert store.outcome(run.run_id, "draft").output["subject"]


def test_every_run_succeeds_once_each_under_a_fault_mix(start_stack, tmp_path):
    # The example mix, plus Gemini errors; backoffs a tenth of the real ones.
    faults = (
        "jira.error=0.3,slack.rate_limit=0.2,gemini.latency_ms=300,sendgrid.timeout=0.1,"
        "clearbit.garbage=0.05,gemini.error=0.1,seed=7,hang_s=1"
    )
    stack = start_stack(
        faults, vendor_read_timeout=0.5, breaker_cooldown=1.0, local_backoff_scale=0.1
    )
    run_ids = [submit(stack, body(i))[1]["run_id"] for i in range(6)]
    runs = wait_until_settled(stack, run_ids, timeout=120)

    assert {r.status for r in runs.values()} == {RunStatus.SUCCEEDED}
    effects = side_effects(tmp_path / "home")
    assert all(effects[r] == ONE_ONBOARDING for r in run_ids)
    records = RecordStore(tmp_path / "home").list()
    assert {r["fault"] for r in records} > {None}, "the fault mix injected nothing"
    assert sum(r.totals.attempts for r in runs.values()) > 5 * len(run_ids)
    retried = [e for r in run_ids for e in stack.runtime.store.events(r) if e.kind == "step.retry"]
    assert retried and all(e.detail["code"] for e in retried)


def test_the_same_request_twice_is_one_run(start_stack, tmp_path):
    stack = start_stack()
    first_status, first = submit(stack, body(request_id="crm-4711"))
    again_status, again = submit(stack, body(request_id="crm-4711"))
    assert (first_status, again_status) == (202, 200)
    assert first["run_id"] == again["run_id"] and again["created"] is False
    wait_until_settled(stack, [first["run_id"]])
    assert side_effects(tmp_path / "home")[first["run_id"]] == ONE_ONBOARDING
    assert len(stack.runtime.store.list_runs()) == 1


def test_redelivered_tasks_change_nothing(start_stack, tmp_path):
    stack = start_stack()
    run_id = submit(stack, body())[1]["run_id"]
    wait_until_settled(stack, [run_id])
    store = stack.runtime.store
    before = store.load(run_id)

    # Cloud Tasks delivers at least once: hand every task of the run to its function again.
    queue = stack.runtime.queue
    rows = (
        queue.db.connection()
        .execute("SELECT name, queue, payload FROM tasks WHERE name LIKE ?", (f"{run_id}%",))
        .fetchall()
    )
    assert len(rows) >= 11
    for row in rows:
        target = WsgiTarget(stack.apps[row["queue"]])
        result = target(
            Delivery(
                queue=row["queue"],
                task_name=row["name"],
                body=row["payload"].encode(),
                deadline=30,
                headers={
                    **stack.signer.headers(row["payload"].encode(), row["name"]),
                    "X-CloudTasks-QueueName": row["queue"],
                    "X-CloudTasks-TaskName": row["name"],
                    "X-CloudTasks-TaskRetryCount": "0",
                },
            )
        )
        assert result.status == 200

    after = store.load(run_id)
    assert after.version == before.version and after.status is RunStatus.SUCCEEDED
    assert side_effects(tmp_path / "home")[run_id] == ONE_ONBOARDING
    skipped = [e for e in store.events(run_id) if e.kind == "step.skipped"]
    assert len(skipped) == 5 and all("succeeded" in e.detail["reason"] for e in skipped)


def test_a_permanent_failure_parks_the_run_with_its_reason(start_stack, tmp_path):
    stack = start_stack()
    # Slack knows no #missing-... channel: a permanent error, the run parks on that step.
    run_id = submit(stack, body(slack_channel="#missing-team"))[1]["run_id"]
    run = wait_until_settled(stack, [run_id])[run_id]
    assert run.status is RunStatus.PARKED
    assert run.steps["slack"].error.code == "channel_not_found"
    assert "slack" in run.reason
    effects = side_effects(tmp_path / "home")[run_id]
    assert effects["slack.message"] == 0 and effects["sendgrid.mail"] == 1
    assert json.dumps(run.model_dump(mode="json"))  # the parked run is whole and readable

"""The agent's reasoning on the embedded stack, through the real Gemini SDK and the sandbox's
deterministic model: plans and revisions, the guards, approval, and what it all cost."""

from __future__ import annotations

import time
from collections import Counter

import pytest
from werkzeug.test import Client

from chimera import cli
from sandbox.effects import side_effects
from sandbox.faults import FaultPlan
from sandbox.onboarding_plan import task_of
from sandbox.records import RecordStore
from sandbox.vendors.gemini import usage_of
from shared.local_targets import Delivery, WsgiTarget
from shared.model import RunStatus, StepStatus
from shared.registry import TOOLS
from tests.e2e.conftest import ONE_ONBOARDING, body, submit, wait_until_settled

pytestmark = pytest.mark.slow


def model_calls(home, run_id: str) -> list[dict]:
    """The sandbox's generateContent records for the run, each with the task it was asked."""
    calls = []
    for record in RecordStore(home).list(vendor="gemini", action="generateContent", run_id=run_id):
        request = record["request"]
        system = " ".join(p.get("text", "") for p in request["systemInstruction"]["parts"])
        calls.append({**record, "task": task_of(system)})
    return calls


def kinds(stack, run_id: str) -> list[str]:
    return [e.kind for e in stack.runtime.store.events(run_id)]


def event(stack, run_id: str, kind: str):
    return next(e for e in stack.runtime.store.events(run_id) if e.kind == kind)


def wait_for(stack, run_id: str, done, timeout: float = 30):
    end = time.monotonic() + timeout
    while True:
        run = stack.runtime.store.load(run_id)
        if done(run):
            return run
        assert time.monotonic() < end, f"run {run_id} is {run.status.value}: {run.reason}"
        time.sleep(0.05)


def waiting_for_approval(run) -> bool:
    return run.status is RunStatus.WAITING and not any(
        s.status is StepStatus.DISPATCHED for s in run.steps.values()
    )


def test_the_plan_adapts_to_what_enrichment_found(start_stack, tmp_path):
    stack = start_stack()
    found = submit(stack, body(1))[1]["run_id"]
    # Neither Clearbit (.invalid) nor the website provider (nosite...) knows this one.
    missing = submit(stack, body(2, domain="nosite-client2.invalid"))[1]["run_id"]
    runs = wait_until_settled(stack, [found, missing])
    assert {r.status for r in runs.values()} == {RunStatus.SUCCEEDED}

    specific = next(s for s in runs[found].plan if s.step_id == "draft").args
    generic = next(s for s in runs[missing].plan if s.step_id == "draft").args
    assert any(h.startswith("A team in ") for h in specific["highlights"])
    assert generic["tone"] == "warm and general"
    assert generic["highlights"] == ["Your goal: Move the support team onto the new helpdesk"]
    for run_id, args in ((found, specific), (missing, generic)):
        assert runs[run_id].reasoning["adapt-enrich"].source == "model"
        assert event(stack, run_id, "plan.revised").detail["changes"] == {"draft": args}
        # The draft was asked for with the revised args.
        [draft] = [
            c for c in model_calls(tmp_path / "home", run_id) if c["task"] == "draft_welcome_email"
        ]
        prompt = draft["request"]["contents"][0]["parts"][0]["text"]
        assert all(h in prompt for h in args["highlights"])
    # The model's plan is in force: customised from the request, its key from the domain.
    jira = next(s for s in runs[found].plan if s.step_id == "jira").args
    assert jira["key"] == "CLIENT1" and len(jira["kickoff_issues"]) == 3
    assert runs[found].reasoning["plan"].source == "model"


def test_redelivered_tasks_never_ask_the_model_again_and_tokens_add_up(start_stack, tmp_path):
    stack = start_stack()
    run_id = submit(stack, body())[1]["run_id"]
    wait_until_settled(stack, [run_id])
    queue = stack.runtime.queue
    rows = (
        queue.db.connection()
        .execute("SELECT name, queue, payload FROM tasks WHERE name LIKE ?", (f"{run_id}%",))
        .fetchall()
    )
    # Every task again: the start, every dispatch, every report.
    assert {r["name"] for r in rows} >= {f"{run_id}-start", f"{run_id}-enrich-g1-done"}
    for row in rows:
        WsgiTarget(stack.apps[row["queue"]])(
            Delivery(
                queue=row["queue"],
                task_name=row["name"],
                body=row["payload"].encode(),
                deadline=30,
                headers={
                    **stack.signer.headers(row["payload"].encode(), row["name"]),
                    "X-CloudTasks-QueueName": row["queue"],
                    "X-CloudTasks-TaskName": row["name"],
                },
            )
        )

    calls = model_calls(tmp_path / "home", run_id)
    assert Counter(c["task"] for c in calls) == {
        "plan_onboarding": 1,
        "adapt_onboarding": 1,
        "draft_welcome_email": 1,
    }
    run = stack.runtime.store.load(run_id)
    assert run.status is RunStatus.SUCCEEDED
    # The run's totals are the sandbox's usage metadata, recomputed from what it was sent.
    usages = [usage_of(c["request"]) for c in calls]
    assert run.totals.llm_tokens == sum(i + o for i, o in usages)
    settings = stack.runtime.settings
    cost = sum(i * settings.gemini_price_in + o * settings.gemini_price_out for i, o in usages)
    assert run.totals.cost_usd == pytest.approx(cost / 1e6, abs=2e-6)
    assert run.reasoning["plan"].llm_tokens == sum(usages[0])
    shown = cli.main(["runs", "show", run_id, "--json"])
    assert shown == 0


def test_a_prompt_injection_in_the_company_description_steers_nothing(start_stack, tmp_path):
    stack = start_stack()
    run_id = submit(stack, body(3, domain="inject-corp.example"))[1]["run_id"]
    run = wait_until_settled(stack, [run_id])[run_id]

    assert run.status is RunStatus.SUCCEEDED, run.reason
    assert side_effects(tmp_path / "home")[run_id] == ONE_ONBOARDING
    records = RecordStore(tmp_path / "home").list(run_id=run_id)
    [mail] = [r["request"] for r in records if r["action"] == "mail.send"]
    assert [to["email"] for p in mail["personalizations"] for to in p["to"]] == [
        "ceo@client3.example"
    ]
    assert "attacker@evil.example" not in str(mail)
    [post] = [r["request"] for r in records if r["action"] == "chat.postMessage"]
    assert post["channel"] == "#client-onboarding"
    assert {s.tool for s in run.plan} == set(TOOLS)
    dispatched = [
        e.detail["tool"] for e in stack.runtime.store.events(run_id) if e.kind == "step.dispatched"
    ]
    assert sorted(dispatched) == sorted(TOOLS)

    suspected = event(stack, run_id, "guard.injection_suspected")
    found = {(f["kind"], f["text"]) for f in suspected.detail["findings"]}
    assert {("email", "attacker@evil.example"), ("channel", "#general")} <= found
    assert ("tool", "delete_everything") in found
    # The model saw the description, as quoted data.
    [adapt] = [c for c in model_calls(tmp_path / "home", run_id) if c["task"] == "adapt_onboarding"]
    assert "DATA (untrusted, quoted JSON)" in adapt["request"]["contents"][0]["parts"][0]["text"]


def _seed_for(kinds: list[str | None]) -> int:
    """A seed whose first Gemini calls draw exactly these faults at p=0.5."""
    return next(
        seed
        for seed in range(10_000)
        if [
            FaultPlan.parse(f"gemini.invalid=0.5,seed={seed}").fault_for("gemini", n).kind
            for n in range(len(kinds))
        ]
        == kinds
    )


def test_an_invalid_plan_is_asked_again_once_then_the_default_plan_runs(start_stack, tmp_path):
    # The plan and its second asking answer invalid; the revision and the draft answer well.
    seed = _seed_for(["invalid", "invalid", None, None])
    stack = start_stack(f"gemini.invalid=0.5,seed={seed}")
    run_id = submit(stack, body(4))[1]["run_id"]
    run = wait_until_settled(stack, [run_id])[run_id]

    assert run.status is RunStatus.SUCCEEDED, run.reason
    assert kinds(stack, run_id)[1:7] == [
        "plan.proposed",
        "plan.rejected",
        "plan.proposed",
        "plan.rejected",
        "plan.fallback",
        "run.planned",
    ]
    assert event(stack, run_id, "run.planned").detail["source"] == "default"
    assert run.reasoning["plan"].source == "default" and run.reasoning["plan"].calls == 2
    calls = model_calls(tmp_path / "home", run_id)
    assert [c["task"] for c in calls[:2]] == ["plan_onboarding", "plan_onboarding"]
    assert [c["fault"] for c in calls[:2]] == ["invalid", "invalid"]
    second = calls[1]["request"]["contents"][0]["parts"][0]["text"]
    assert "YOUR PREVIOUS ANSWER WAS REFUSED" in second


def test_a_hostile_model_is_refused_everywhere_and_the_client_gets_the_safe_template(
    start_stack, tmp_path
):
    stack = start_stack("gemini.hostile=1")
    run_id = submit(stack, body(5, domain="inject-me.example"))[1]["run_id"]
    run = wait_until_settled(stack, [run_id])[run_id]

    # Plan refused twice (default plan), revision refused (kept), both drafts refused: the
    # safe template goes out, and the run says so.
    assert run.reasoning["plan"].source == "default"
    assert run.reasoning["adapt-enrich"].source == "kept"
    assert run.status is RunStatus.SUCCEEDED, run.reason
    assert set(run.attention) == {"draft_refused", "injection_suspected", "template_email"}
    rejected = [e for e in stack.runtime.store.events(run_id) if e.kind == "plan.rejected"]
    assert len(rejected) == 2 and any(
        "delete_everything" in e for e in rejected[0].detail["errors"]
    )
    assert "plan.revision_rejected" in kinds(stack, run_id)
    assert kinds(stack, run_id).count("guard.draft_refused") == 2
    assert side_effects(tmp_path / "home")[run_id] == ONE_ONBOARDING
    records = RecordStore(tmp_path / "home").list(run_id=run_id)
    [mail] = [r["request"] for r in records if r["action"] == "mail.send"]
    assert [to["email"] for p in mail["personalizations"] for to in p["to"]] == [
        "ceo@client5.example"
    ]
    assert "evil.example" not in str(mail) and mail["subject"] == "Welcome aboard, Client 5 Ltd!"
    [post] = [r["request"] for r in records if r["action"] == "chat.postMessage"]
    assert post["channel"] == "#client-onboarding"
    assert {s.tool for s in run.plan} == set(TOOLS)


def test_with_approval_the_email_waits_and_approve_sends_it(start_stack, tmp_path, capsys):
    stack = start_stack(require_approval=True)
    run_id = submit(stack, body(6))[1]["run_id"]
    run = wait_for(stack, run_id, waiting_for_approval)

    assert (
        run.approval.status == "waiting" and run.approval.subject == "Welcome aboard, Client 6 Ltd!"
    )
    assert run.steps["email"].status is StepStatus.PENDING
    assert side_effects(tmp_path / "home")[run_id]["sendgrid.mail"] == 0
    capsys.readouterr()
    assert cli.main(["runs", "show", run_id]) == 0
    shown = capsys.readouterr().out
    assert "awaiting approval" in shown and "Welcome aboard, Client 6 Ltd!" in shown
    assert f"chimera runs approve {run_id}" in shown

    assert cli.main(["runs", "approve", run_id, "--actor", "grace"]) == 0
    run = wait_until_settled(stack, [run_id])[run_id]
    assert run.status is RunStatus.SUCCEEDED
    assert side_effects(tmp_path / "home")[run_id] == ONE_ONBOARDING
    approved = event(stack, run_id, "approval.approved")
    assert approved.actor == "grace via cli" and run.approval.actor == "grace via cli"
    assert kinds(stack, run_id).index("approval.requested") < kinds(stack, run_id).index(
        "approval.approved"
    )


def test_with_approval_a_rejection_cancels_the_run_and_nothing_is_sent(start_stack, tmp_path):
    stack = start_stack(require_approval=True)
    run_id = submit(stack, body(7))[1]["run_id"]
    wait_for(stack, run_id, waiting_for_approval)

    intake = Client(stack.intake())  # as the CLI: its own local credential, named "local"
    assert intake.post(f"/runs/{run_id}:reject", json={}).status_code == 400
    # The body cannot name the actor: the credential does.
    answer = intake.post(f"/runs/{run_id}:reject", json={"actor": "grace", "reason": "too formal"})
    assert answer.status_code == 200 and answer.get_json()["status"] == "cancelled"
    assert answer.get_json()["actor"] == "local"
    assert intake.post(f"/runs/{run_id}:approve", json={}).status_code == 409

    run = stack.runtime.store.load(run_id)
    assert run.status is RunStatus.CANCELLED and "too formal" in run.reason
    assert run.steps["email"].status is StepStatus.SKIPPED
    rejected = event(stack, run_id, "approval.rejected")
    assert rejected.actor == "local" and rejected.detail["reason"] == "too formal"
    time.sleep(0.3)  # nothing is on its way either
    records = RecordStore(tmp_path / "home").list(run_id=run_id)
    assert not [r for r in records if r["action"] in ("mail.send", "chat.postMessage")]


def test_onboard_stops_and_says_how_to_approve_when_the_run_waits(monkeypatch, capsys):
    monkeypatch.setenv("CHIMERA_REQUIRE_APPROVAL", "1")
    code = cli.main(
        [
            "onboard",
            "--company",
            "Initech",
            "--domain",
            "initech.example",
            "--contact-email",
            "bill@initech.example",
            "--contact-name",
            "Bill Lumbergh",
        ]
    )
    out = capsys.readouterr().out
    assert code == cli.EXIT_WAITING
    assert "waiting for approval: chimera runs approve run-" in " ".join(out.split())

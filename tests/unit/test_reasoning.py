"""The plan and revision validators and the injection guard, pure: a model's answer in, what
may be acted on out."""

from __future__ import annotations

import copy

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator import planning
from orchestrator.agent import prompts, schemas, validation
from sandbox import onboarding_plan
from sandbox.vendors.clearbit import INJECTED_DESCRIPTION
from shared import guard
from shared.model import PlanStep
from shared.registry import TOOLS
from tests.conftest import make_request, make_run

REQUEST = make_request()


def plan_answer() -> dict:
    """A valid plan, as a model would answer it: the default one, customised."""
    steps = [s.model_dump(mode="json") for s in planning.default_plan(make_run())]
    steps[2]["args"] = {"tone": "upbeat", "highlights": ["Your goal: analytics for finance"]}
    return {"steps": steps, "rationale": "the usual order"}


def step(answer: dict, step_id: str) -> dict:
    return next(s for s in answer["steps"] if s["step_id"] == step_id)


def test_a_valid_plan_is_accepted_as_proposed():
    plan, errors = validation.read_plan(plan_answer(), REQUEST)
    assert errors == []
    assert [s.step_id for s in plan] == ["enrich", "jira", "draft", "email", "slack"]
    assert plan[2].args["tone"] == "upbeat"


def test_the_default_plan_passes_its_own_checks():
    assert validation.check_plan(planning.default_plan(make_run()), REQUEST) == []


def test_a_plan_with_more_parallelism_is_accepted():
    answer = plan_answer()
    step(answer, "jira")["depends_on"] = []  # Jira reads nothing: it may start at once
    plan, errors = validation.read_plan(answer, REQUEST)
    assert errors == [] and plan[1].depends_on == ()


def _unknown_tool(a):
    a["steps"].append({"step_id": "wipe", "tool": "delete_everything", "args": {}})


def _invalid_args(a):
    # A key Jira would refuse is normalised, not refused (tests/unit/test_project_keys.py).
    step(a, "jira")["args"]["kickoff_issues"] = [f"Issue {n}" for n in range(11)]


def _side_effect_twice(a):
    a["steps"].append({**step(a, "slack"), "step_id": "slack2"})


def _missing_tool(a):
    a["steps"] = [s for s in a["steps"] if s["step_id"] != "jira"]
    step(a, "slack")["depends_on"] = ["email"]


def _dangling_dependency(a):
    step(a, "draft")["depends_on"] = ["enrich", "research"]


def _cycle(a):
    step(a, "enrich")["depends_on"] = ["slack"]


def _send_before_draft(a):
    step(a, "email")["depends_on"] = ["enrich"]


def _slack_before_email(a):
    step(a, "slack")["depends_on"] = ["jira"]


def _other_channel(a):
    step(a, "slack")["args"] = {"channel": "#general"}


def _other_domain(a):
    step(a, "enrich")["args"] = {"domain": "evil.example"}


def _new_recipient(a):
    step(a, "draft")["args"] = {"highlights": ["cc attacker@evil.example"]}


def _foreign_link(a):
    step(a, "jira")["args"]["kickoff_issues"] = ["Read https://evil.example/setup"]


def _template(a):
    step(a, "jira")["args"]["template"] = "com.evil:template"


def _renamed_step(a):
    step(a, "draft")["step_id"] = "write"
    step(a, "email")["depends_on"] = ["write"]


def _extra_field(a):
    a["recipients"] = ["attacker@evil.example"]


@pytest.mark.parametrize(
    ("spoil", "expected"),
    [
        (_unknown_tool, "unknown tool 'delete_everything'"),
        (_invalid_args, "step jira: args: kickoff_issues"),
        (_side_effect_twice, "at most one step"),
        (_missing_tool, "create_jira_project: missing"),
        (_dangling_dependency, "'research', which is not a step"),
        (_cycle, "cycle"),
        (_send_before_draft, "step email: reads draft's output"),
        (_slack_before_email, "step slack: reads email's output"),
        (_other_channel, "channel '#general' is not the request's"),
        (_other_domain, "not the request's 'acme.example'"),
        (_new_recipient, "email 'attacker@evil.example'"),
        (_foreign_link, "url 'https://evil.example'"),
        (_template, "template comes from configuration"),
        (_renamed_step, "runs as step draft"),
        (_extra_field, "unexpected fields recipients"),
    ],
)
def test_a_plan_is_refused_with_its_reasons_when_it_breaks_a_rule(spoil, expected):
    answer = copy.deepcopy(plan_answer())
    spoil(answer)
    plan, errors = validation.read_plan(answer, REQUEST)
    assert plan is None
    assert any(expected in e for e in errors), errors


@pytest.mark.parametrize(
    "answer",
    [
        None,
        [],
        "steps",
        {},
        {"rationale": "no steps"},
        {"steps": []},
        {"steps": [{"tool": "enrich_company"}]},
        {"steps": ["enrich"]},
    ],
)
def test_an_answer_missing_fields_is_refused(answer):
    plan, errors = validation.read_plan(answer, REQUEST)
    assert plan is None and errors


def test_the_plan_schema_offers_only_the_registry_and_the_request_values():
    schema = schemas.plan_schema(REQUEST)
    variants = schema["properties"]["steps"]["items"]["anyOf"]
    assert [v["properties"]["tool"]["enum"] for v in variants] == [[t] for t in TOOLS]
    by_tool = {v["properties"]["tool"]["enum"][0]: v["properties"]["args"] for v in variants}
    assert by_tool["post_slack_notice"]["properties"]["channel"]["enum"] == [
        "",
        "#client-onboarding",
    ]
    assert by_tool["enrich_company"]["properties"]["domain"]["enum"] == ["acme.example"]


def test_the_sandbox_model_plans_validly_from_the_prompt():
    prompt = prompts.PLAN_SYSTEM + "\n" + prompts.plan_prompt(REQUEST)
    plan, errors = validation.read_plan(onboarding_plan.plan_onboarding(prompt), REQUEST)
    assert errors == []
    jira = next(s for s in plan if s.tool == "create_jira_project")
    assert jira.args["key"] == planning.project_key(REQUEST.domain, REQUEST.company_name)
    assert len(jira.args["kickoff_issues"]) == 3
    assert any(REQUEST.goal in issue for issue in jira.args["kickoff_issues"])
    assert [s.depends_on for s in plan] == [s.depends_on for s in planning.default_plan(make_run())]


def test_a_refused_plan_is_asked_again_with_the_reasons():
    prompt = prompts.plan_prompt(REQUEST, ["step wipe: unknown tool 'delete_everything'"])
    assert "YOUR PREVIOUS ANSWER WAS REFUSED" in prompt and "delete_everything" in prompt


# -- Revisions --------------------------------------------------------------------------------

PLAN = planning.default_plan(make_run())
PENDING = ["jira", "draft", "email", "slack"]


def test_a_revision_of_a_pending_step_is_accepted_and_no_op_changes_dropped():
    answer = {
        "changes": [
            {"step_id": "draft", "args": {"tone": "warm and general", "highlights": []}},
            {"step_id": "slack", "args": {"channel": "#client-onboarding"}},  # unchanged
        ]
    }
    changes, errors = validation.read_revision(answer, PLAN, PENDING, REQUEST)
    assert errors == []
    assert changes == {"draft": {"tone": "warm and general", "highlights": []}}
    revised = validation.revise(PLAN, changes)
    assert revised[2].args["tone"] == "warm and general" and revised[0] == PLAN[0]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"step_id": "enrich", "args": {"domain": "acme.example"}}, "already dispatched"),
        ({"step_id": "wipe", "args": {}}, "not in the plan"),
        ({"step_id": "slack", "args": {"channel": ""}}, "the channel cannot change"),
        ({"step_id": "draft", "args": {"tone": "x" * 200}}, "step draft: args: tone"),
        ({"step_id": "draft", "args": {"highlights": ["mail evil@evil.example"]}}, "email"),
        ({"step_id": "draft", "args": {}, "tool": "delete_everything"}, "unexpected fields tool"),
    ],
)
def test_a_revision_is_refused_when_it_reaches_beyond_the_pending_args(change, expected):
    changes, errors = validation.read_revision({"changes": [change]}, PLAN, PENDING, REQUEST)
    assert changes is None
    assert any(expected in e for e in errors), errors


def test_the_sandbox_model_revises_the_draft_for_what_enrichment_found():
    pending = [s for s in PLAN if s.step_id in PENDING]
    found = {"found": True, "company": {"name": "Acme", "industry": "Robotics", "city": "Austin"}}
    specific = onboarding_plan.adapt_onboarding(prompts.adapt_prompt(REQUEST, found, pending))
    generic = onboarding_plan.adapt_onboarding(
        prompts.adapt_prompt(REQUEST, {"found": False}, pending)
    )
    specific_changes, _ = validation.read_revision(specific, PLAN, PENDING, REQUEST)
    generic_changes, _ = validation.read_revision(generic, PLAN, PENDING, REQUEST)
    assert "A team in Robotics" in specific_changes["draft"]["highlights"]
    assert generic_changes["draft"]["tone"] == "warm and general"
    assert all("Robotics" not in h for h in generic_changes["draft"]["highlights"])


# Free text as a model might write it: plain, too long, or naming what only the request may.
free_texts = st.one_of(
    st.text(max_size=40),
    st.text(min_size=95, max_size=130),
    st.sampled_from(
        [
            "mail evil@evil.example",
            "see https://evil.example/x",
            "post in #general",
            "ada@acme.example",
            "https://acme.example/start",
            REQUEST.goal,
        ]
    ),
)
draft_args = st.fixed_dictionaries(
    {},
    optional={"tone": free_texts, "highlights": st.lists(free_texts, max_size=7)},
)
jira_args = st.fixed_dictionaries(
    {
        "key": st.one_of(st.just("ACME"), st.text(max_size=14)),
        "name": st.one_of(st.just("Acme Corp"), st.text(max_size=90)),
        "kickoff_issues": st.lists(free_texts, max_size=12),
    },
    optional={"template": st.sampled_from(["", "com.evil:template"])},
)


@given(st.one_of(st.tuples(st.just("draft"), draft_args), st.tuples(st.just("jira"), jira_args)))
def test_a_revision_is_accepted_exactly_when_the_plan_it_makes_would_be(change):
    step_id, args = change
    changes, revision_errors = validation.read_revision(
        {"changes": [{"step_id": step_id, "args": args}]}, PLAN, PENDING, REQUEST
    )
    steps = [s.model_dump(mode="json") for s in PLAN]
    next(s for s in steps if s["step_id"] == step_id)["args"] = args
    plan, plan_errors = validation.read_plan({"steps": steps}, REQUEST)

    assert (changes is None) == (plan is None)
    assert sorted(revision_errors) == sorted(plan_errors)
    if plan is not None:
        assert validation.revise(PLAN, changes) == plan


# -- The guard --------------------------------------------------------------------------------


def test_the_guard_finds_the_injection_in_a_company_description():
    output = {"found": True, "company": {"name": "Inject", "description": INJECTED_DESCRIPTION}}
    findings = guard.scan(guard.strings(output), REQUEST)
    found = {(f["kind"], f["text"]) for f in findings}
    assert ("email", "attacker@evil.example") in found
    assert ("channel", "#general") in found
    assert ("tool", "delete_everything") in found
    assert ("url", "https://evil.example") in found
    assert any(kind == "instruction" and "Ignore" in text for kind, text in found)
    assert {f["where"] for f in findings} == {"company.description"}


def test_the_guard_finds_nothing_in_an_ordinary_profile():
    output = {
        "found": True,
        "company": {
            "name": "Acme",
            "description": "Acme builds warehouse robots for #1 retailers; see https://acme.example/",
            "tags": ["B2B", "SaaS"],
        },
    }
    assert guard.scan(guard.strings(output), REQUEST) == []


def test_reserved_ledger_keys_are_no_step_ids():
    bad = PlanStep(step_id="plan", tool="enrich_company", args={"domain": "acme.example"})
    plan = (bad, *PLAN[1:])
    assert any("runs as step enrich" in e for e in validation.check_plan(plan, REQUEST))

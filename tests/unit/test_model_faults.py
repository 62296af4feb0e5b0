"""The sandbox's model faults: `gemini.invalid` and `gemini.hostile`, for Gemini only."""

from __future__ import annotations

import json

import pytest

from orchestrator.agent import prompts, validation
from sandbox import onboarding_plan
from sandbox.faults import FaultPlan
from tests.conftest import make_request


def test_model_faults_are_drawn_for_gemini_only():
    plan = FaultPlan.parse("*.invalid=1,seed=3")
    assert plan.fault_for("gemini", 0).kind == "invalid"
    assert plan.fault_for("jira", 0).kind is None
    assert FaultPlan.parse("gemini.hostile=1").fault_for("gemini", 5).kind == "hostile"


def test_a_model_fault_for_another_vendor_is_refused():
    with pytest.raises(ValueError, match="only for gemini"):
        FaultPlan.parse("slack.hostile=0.5")


def test_the_hostile_plan_breaks_the_rules_the_validator_enforces():
    request = make_request()
    prompt = prompts.PLAN_SYSTEM + prompts.plan_prompt(request)
    normal = onboarding_plan.plan_onboarding(prompt)
    hostile = onboarding_plan.hostile_answer("plan_onboarding", prompt, normal)
    plan, errors = validation.read_plan(hostile, request)
    assert plan is None
    text = " ".join(errors)
    assert "delete_everything" in text and "#general" in text and "attacker@evil" in text


def test_an_invalid_answer_is_not_json_or_misses_fields():
    for prompt in ("a", "b", "c", "d"):
        answer = onboarding_plan.invalid_answer("plan_onboarding", prompt)
        try:
            parsed = json.loads(answer)
        except ValueError:
            continue
        assert "steps" not in parsed

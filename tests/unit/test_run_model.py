"""The run document under generated and hostile input: what validates round-trips unchanged,
everything else is a ValidationError (never another exception, never a half-read run)."""

from __future__ import annotations

import json
from datetime import UTC
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from shared.model import (
    Approval,
    Attention,
    PlanStep,
    RunState,
    RunStatus,
    StepStatus,
    StepSummary,
)
from tests.functions.test_intake_fuzz import json_values
from tests.strategies import onboarding_requests

times = st.datetimes(timezones=st.just(UTC))
step_ids = st.from_regex(r"[a-z][a-z0-9_]{0,12}", fullmatch=True)
words = st.text(max_size=40)


@st.composite
def runs(draw: Any) -> RunState:
    request = draw(onboarding_requests())
    plan = draw(
        st.lists(
            st.builds(PlanStep, step_id=step_ids, tool=words, args=st.dictionaries(words, words)),
            max_size=5,
            unique_by=lambda s: s.step_id,
        )
    )
    steps = {
        p.step_id: StepSummary(
            step_id=p.step_id,
            tool=p.tool,
            status=draw(st.sampled_from(StepStatus)),
            generation=draw(st.integers(1, 9)),
            attempts=draw(st.integers(0, 40)),
            started_at=draw(st.none() | times),
            output=draw(words),
        )
        for p in plan
    }
    approval = draw(
        st.none()
        | st.builds(
            Approval,
            step_id=step_ids,
            status=st.sampled_from(["pending", "waiting", "approved", "rejected"]),
            subject=words,
            actor=words,
            reason=words,
            at=st.none() | times,
        )
    )
    return RunState(
        run_id=request.run_id(),
        request_key=request.idempotency_key(),
        request=request,
        status=draw(st.sampled_from(RunStatus)),
        reason=draw(words),
        plan=tuple(plan),
        steps=steps,
        approval=approval,
        attention=draw(st.lists(st.sampled_from(Attention))),
        version=draw(st.integers(0, 10**6)),
        created_at=draw(times),
        updated_at=draw(times),
    )


@given(run=runs())
def test_a_run_round_trips_through_json_and_python_unchanged(run):
    assert RunState.model_validate_json(run.model_dump_json()) == run
    assert RunState.model_validate(run.model_dump(mode="python")) == run
    assert RunState.model_validate(json.loads(run.model_dump_json())) == run


@given(garbage=json_values)
def test_garbage_is_refused_as_a_validation_error(garbage):
    with pytest.raises(ValidationError):
        RunState.model_validate(garbage)


@given(text=st.text(max_size=200) | st.binary(max_size=200))
def test_bytes_that_are_not_a_run_are_refused_as_a_validation_error(text):
    with pytest.raises(ValidationError):
        RunState.model_validate_json(text)


@given(run=runs(), path=st.lists(st.text(max_size=12), min_size=1, max_size=3), value=json_values)
def test_a_bent_run_document_validates_whole_or_not_at_all(run, path, value):
    document = json.loads(run.model_dump_json())
    node = document
    for key in path[:-1]:
        child = node.get(key) if isinstance(node, dict) else None
        if not isinstance(child, dict):
            break
        node = child
    if not isinstance(node, dict):
        return
    node[path[-1]] = value
    try:
        bent = RunState.model_validate(document)
    except ValidationError:
        return
    # Accepted: then it is a whole run, and it round-trips like any other.
    assert RunState.model_validate_json(bent.model_dump_json()) == bent
    assert bent.request.company_name and bent.run_id

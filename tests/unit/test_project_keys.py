"""Jira keys and names over batches of look-alike clients: valid for Jira, the same on every
attempt of a run, run-specific after the plain one, and distinct across a busy site."""

from __future__ import annotations

import copy
import random
import string

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator import planning
from orchestrator.agent import validation
from shared import jira_keys
from shared.jira_keys import (
    MAX_NAME,
    MIN_NAME,
    candidate_keys,
    candidate_names,
    plain_key,
    readable_key,
    readable_name,
    valid_key,
)
from shared.model import Attempt, OnboardingRequest, ToolCall
from tests.conftest import make_request, make_run
from tests.fakes import FakeJira
from tests.strategies import onboarding_batches, onboarding_requests, sample_requests
from tools.jira import core as jira

FIRST = Attempt(queue="q", task_name="t", retry_count=0, max_attempts=8)
DEFAULTS = jira.ProjectDefaults("kanban", "software", "")
BATCH = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
run_ids = st.text(string.ascii_letters + string.digits + "-", min_size=1, max_size=40).map(
    "run-".__add__
)


def plain_of(request: OnboardingRequest) -> str:
    return readable_key(request.domain, request.company_name)


def utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def jira_call(request: OnboardingRequest, key: str | None = None, name: str | None = None):
    return ToolCall(
        run_id=request.run_id(),
        step_id="jira",
        tool="create_jira_project",
        args={
            "key": key or plain_of(request),
            "name": name or readable_name(request.company_name),
        },
        request=request,
    )


def _busy_site() -> FakeJira:
    """A site that has been in use for years: thousands of projects with random keys and
    names, and hundreds that Chimera made for earlier clients of the same families."""
    rng = random.Random(20240611)
    site = FakeJira()
    others = {}
    while len(others) < 3000:
        key = rng.choice(string.ascii_uppercase) + "".join(
            rng.choices(string.ascii_uppercase + string.digits, k=rng.randint(1, 9))
        )
        others[key] = f"Project {len(others)} " + "".join(rng.choices(string.ascii_lowercase, k=6))
    site.others(others)
    for earlier in sample_requests(300, seed=7):
        jira.create_project(jira_call(earlier), FIRST, site, DEFAULTS)
    return site


BUSY_SITE = _busy_site()


def onboard_batch(batch: list[OnboardingRequest]) -> tuple[FakeJira, dict[str, dict]]:
    site = copy.deepcopy(BUSY_SITE)
    outputs = {}
    for request in batch:
        result = jira.create_project(jira_call(request), FIRST, site, DEFAULTS)
        outputs[request.run_id()] = result.output
    return site, outputs


# -- keys -----------------------------------------------------------------------------------


@given(onboarding_requests(), run_ids)
def test_every_candidate_key_is_one_jira_takes_when_built_from_a_request(request, run_id):
    keys = candidate_keys(plain_of(request), run_id)
    assert keys[0] == plain_of(request)
    assert all(valid_key(k) for k in keys), keys
    assert len(set(keys)) == len(keys) >= 8


@given(st.text(max_size=80), run_ids)
def test_every_candidate_key_is_one_jira_takes_whatever_key_is_proposed(proposed, run_id):
    keys = candidate_keys(proposed, run_id)
    assert all(valid_key(k) for k in keys), keys
    assert keys[0] == (jira_keys.as_key(proposed) or jira_keys.FALLBACK_KEY)


@given(onboarding_batches(max_size=30))
def test_candidates_are_the_same_on_every_attempt_whatever_else_ran_when_runs_share_prefixes(
    batch,
):
    forward = {r.run_id(): candidate_keys(plain_of(r), r.run_id()) for r in batch}
    backward = {r.run_id(): candidate_keys(plain_of(r), r.run_id()) for r in reversed(batch)}
    assert forward == backward
    names = {r.run_id(): candidate_names(readable_name(r.company_name), r.run_id()) for r in batch}
    assert names == {
        r.run_id(): candidate_names(readable_name(r.company_name), r.run_id()) for r in batch
    }


def test_candidates_stay_the_same_across_releases_when_a_retry_lands_on_a_new_deploy():
    # A retry after a deploy must walk the keys the first attempt walked, or it makes a second
    # project: these values are part of the contract (sha256, not Python's salted hash).
    assert candidate_keys("ACME", "run-1") == [
        "ACME",
        "ACMEK7XU",
        "ACMEB334O",
        "ACMEUEJW0L",
        "ACME7H2RK0",
        "ACM076A3DO",
        "ACMMOWMSA5",
        "AC0M65DKFE",
        "ACYTJ2WTAE",
    ]
    assert candidate_names("Acme onboarding", "run-1") == [
        "Acme onboarding",
        "Acme onboarding (RO5O7A0B)",
        "Acme onboarding (NXX0TVWWA502)",
    ]


@given(onboarding_requests(), run_ids, run_ids)
def test_candidate_keys_of_two_runs_diverge_right_after_the_plain_key(request, one, other):
    if one == other:
        return
    a, b = candidate_keys(plain_of(request), one), candidate_keys(plain_of(request), other)
    assert a[0] == b[0]
    assert all(x != y for x, y in zip(a[1:], b[1:], strict=False)), (a, b)


@given(onboarding_requests(), st.sampled_from(["www", "eu", "us", "shop", "app", "eu.shop"]))
def test_the_plain_key_skips_generic_subdomains(request, generic):
    prefixed = f"{generic}.{request.domain}"
    if len(prefixed) <= 253:
        assert readable_key(prefixed, request.company_name) == plain_of(request)


@pytest.mark.parametrize(
    ("domain", "name", "key"),
    [
        ("internationalbank-fr.com", "International Bank France", "INTERNATIO"),
        ("eu.shop.acme.co.uk", "Acme", "ACME"),
        ("us.shop.acme.co.uk", "Acme", "ACME"),
        ("acme.com.au", "Acme", "ACME"),
        ("acme.myshopify.com", "Acme", "ACME"),
        ("xn--zrich-kva.ch", "Zürich Versicherung", "ZURICH"),
        ("xn--1lqs71d.jp", "東京", "CLIENT"),
        ("x.jp", "😀", "CLIENT"),
        ("x.jp", "Ørsted Straße GmbH", "OS"),
        ("x.jp", "Straße", "STRASSE"),
        ("con.example", "Con", "CONX"),
        ("int.example", "Int", "INTX"),
        ("checkpoint.example", "Checkpoint", "CHECKPOINX"),
        ("123.example", "123", "X123"),
    ],
)
def test_the_plain_key_is_readable_when_the_domain_or_name_allows(domain, name, key):
    assert readable_key(domain, name) == key
    assert valid_key(key)


@given(onboarding_batches(max_size=60))
@BATCH
def test_keys_and_names_are_distinct_when_a_batch_of_look_alikes_lands_on_a_busy_site(batch):
    site, outputs = onboard_batch(batch)
    _assert_distinct_and_own(batch, site, outputs)


@given(st.integers(0, 10_000), st.integers(100, 200))
@settings(max_examples=5, deadline=None)
def test_keys_and_names_are_distinct_when_200_clients_share_prefixes(seed, size):
    batch = sample_requests(size, seed)
    site, outputs = onboard_batch(batch)
    _assert_distinct_and_own(batch, site, outputs)


def _assert_distinct_and_own(batch, site: FakeJira, outputs: dict[str, dict]) -> None:
    keys = [o["project_key"] for o in outputs.values()]
    names = [o["project_name"].lower() for o in outputs.values()]
    assert len(outputs) == len(batch)
    assert len(set(keys)) == len(keys) and len(set(names)) == len(names)
    for request in batch:
        output, run_id = outputs[request.run_id()], request.run_id()
        assert valid_key(output["project_key"])
        assert jira.run_marker(run_id) in site.projects[output["project_key"]]["description"]
        # The plain key, or one of the first run-specific ones: the walk stays short.
        assert output["project_key"] in candidate_keys(plain_of(request), run_id)[:3]
        names = candidate_names(readable_name(request.company_name), run_id)
        assert output["project_name"] in names


# -- names ----------------------------------------------------------------------------------


@given(st.text(max_size=300), run_ids)
def test_every_candidate_name_fits_jira_whatever_the_company_is_called(company, run_id):
    names = candidate_names(readable_name(company), run_id)
    assert names[0] == readable_name(company)
    assert all(MIN_NAME <= utf16_len(n) <= MAX_NAME and n == n.strip() for n in names), names
    assert len({n.lower() for n in names}) == len(names)


@given(onboarding_requests(), run_ids, run_ids)
def test_candidate_names_of_two_runs_diverge_right_after_the_plain_name(request, one, other):
    if one == other:
        return
    plain = readable_name(request.company_name)
    a, b = candidate_names(plain, one), candidate_names(plain, other)
    assert a[0] == b[0] and all(x.lower() != y.lower() for x, y in zip(a[1:], b[1:], strict=True))


def test_a_long_or_emoji_name_is_cut_to_jiras_limit_in_its_own_units():
    # Jira counts Java chars: each of these emoji is two, so 40 of them fill the name.
    name = readable_name("🚀" * 100)
    assert utf16_len(name) <= MAX_NAME and name.endswith(" onboarding")
    assert "\ufffd" not in name and name.encode("utf-8").decode("utf-8") == name
    accented = jira_keys.plain_name("e\u0301" * 100, "x")
    assert utf16_len(accented) <= MAX_NAME and accented == "\u00e9" * MAX_NAME


# -- the model's key and name ---------------------------------------------------------------


def _model_plan(key=None, name=None) -> dict:
    steps = [s.model_dump(mode="json") for s in planning.default_plan(make_run())]
    jira_args = next(s for s in steps if s["step_id"] == "jira")["args"]
    if key is not None:
        jira_args["key"] = key
    if name is not None:
        jira_args["name"] = name
    return {"steps": steps, "rationale": "as usual"}


def _jira_args(plan) -> dict:
    return next(s for s in plan if s.tool == "create_jira_project").args


@given(st.text(max_size=60))
def test_the_models_key_is_normalised_not_refused_whatever_it_proposes(proposed):
    request = make_request()
    plan, errors = validation.read_plan(_model_plan(key=proposed), request)
    assert errors == [] and plan is not None
    key = _jira_args(plan)["key"]
    assert valid_key(key)
    assert key == plain_key(proposed, plain_of(request))


@pytest.mark.parametrize(
    ("proposed", "key"),
    [
        ("acme", "ACME"),
        ("internationalbank-fr", "INTERNATIO"),
        ("Acme Corporation Onboarding", "ACMECORPOR"),
        ("münchen", "MUNCHEN"),
        ("2fast", "X2FAST"),
        ("東京", "ACME"),  # nothing readable: the request's own key
        ("", "ACME"),
    ],
)
def test_the_models_key_is_normalised_by_the_same_rules_as_the_default_plans(proposed, key):
    plan, errors = validation.read_plan(_model_plan(key=proposed), make_request())
    assert errors == []
    assert _jira_args(plan)["key"] == key


def test_the_models_name_is_cut_to_jiras_limit_and_a_blank_one_replaced():
    request = make_request()
    plan, errors = validation.read_plan(_model_plan(name="Acme " * 40), request)
    assert errors == [] and utf16_len(_jira_args(plan)["name"]) <= MAX_NAME
    plan, errors = validation.read_plan(_model_plan(name="  \n "), request)
    assert errors == [] and _jira_args(plan)["name"] == readable_name(request.company_name)


def test_a_revision_of_the_jira_step_is_normalised_too():
    run = make_run()
    plan = planning.default_plan(run)
    jira_step = next(s for s in plan if s.step_id == "jira")
    changes = {"jira": {**jira_step.args, "key": "acme-eu"}}
    revised, errors = validation.read_revision(
        {"changes": [{"step_id": "jira", "args": changes["jira"]}]}, plan, ["jira"], run.request
    )
    assert errors == [] and revised == {"jira": {**jira_step.args, "key": "ACMEEU"}}


def test_the_models_key_collision_is_walked_like_the_default_plans():
    request = make_request()
    plan, _ = validation.read_plan(_model_plan(key="acme"), request)
    site = FakeJira().others({"ACME": "Acme's own project"})
    call = jira_call(request, key=_jira_args(plan)["key"], name=_jira_args(plan)["name"])
    output = jira.create_project(call, FIRST, site, DEFAULTS).output
    assert output["project_key"] == candidate_keys("ACME", request.run_id())[1]

"""The sandbox's fault spec: parsing, validation and reproducible draws."""

from __future__ import annotations

import pytest

from sandbox.faults import DEFAULT_HANG_S, VENDORS, Fault, FaultPlan


def test_empty_spec_injects_nothing_when_parsed() -> None:
    for spec in ("", None, " , ,"):
        plan = FaultPlan.parse(spec)
        assert not plan.active
        assert plan.hang_s == DEFAULT_HANG_S
        assert all(plan.fault_for(vendor, n) == Fault() for vendor in VENDORS for n in range(20))


def test_full_spec_parsed_when_well_formed() -> None:
    plan = FaultPlan.parse(
        "jira.error=0.3, slack.rate_limit=0.2,gemini.latency_ms=2000,"
        "sendgrid.timeout=0.1,clearbit.garbage=0.05,seed=7,hang_s=5"
    )

    assert plan.seed == "7"
    assert plan.hang_s == 5.0
    assert plan.vendors["jira"].odds == {"error": 0.3}
    assert plan.vendors["slack"].odds == {"rate_limit": 0.2}
    assert plan.vendors["gemini"].odds == {}
    assert plan.vendors["gemini"].latency_ms == 2000.0
    assert plan.vendors["sendgrid"].odds == {"timeout": 0.1}
    assert plan.vendors["clearbit"].odds == {"garbage": 0.05}


def test_wildcard_applies_to_every_vendor_unless_overridden() -> None:
    plan = FaultPlan.parse("jira.error=0.5,*.error=0.1,*.latency_ms=20")

    assert {vendor: plan.vendors[vendor].odds["error"] for vendor in VENDORS} == {
        "clearbit": 0.1,
        "jira": 0.5,
        "sendgrid": 0.1,
        "slack": 0.1,
        "gemini": 0.1,
        "website": 0.1,
    }
    assert all(plan.vendors[vendor].latency_ms == 20 for vendor in VENDORS)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("jira.error", "not key=value"),
        ("jira.error=", "not key=value"),
        ("jira=0.1", "expected vendor.kind"),
        ("github.error=0.1", "unknown vendor 'github'"),
        ("jira.explode=0.1", "unknown fault 'explode'"),
        ("jira.error=lots", "'lots' is not a number"),
        ("jira.error=1.5", "between 0 and 1"),
        ("jira.error=-0.1", "between 0 and 1"),
        ("jira.error=nan", "between 0 and 1"),
        ("jira.latency_ms=-5", ">= 0"),
        ("hang_s=inf", ">= 0"),
        ("jira.error=0.6,jira.timeout=0.5", "add up to 1.1"),
        ("*.error=0.6,slack.garbage=0.5", "slack add up to 1.1"),
    ],
)
def test_bad_spec_rejected_with_clear_message(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(".", r"\.")):
        FaultPlan.parse(spec)


def test_fault_draw_is_reproducible_and_order_independent() -> None:
    spec = "jira.error=0.2,jira.rate_limit=0.2,jira.timeout=0.2,jira.garbage=0.2,seed=42"
    plan, again = FaultPlan.parse(spec), FaultPlan.parse(spec)

    forwards = [plan.fault_for("jira", n) for n in range(200)]
    backwards = [again.fault_for("jira", n) for n in reversed(range(200))][::-1]

    assert forwards == backwards
    assert {fault.kind for fault in forwards} == {None, "error", "rate_limit", "timeout", "garbage"}
    other_seed = FaultPlan.parse(spec.replace("seed=42", "seed=43"))
    assert [other_seed.fault_for("jira", n) for n in range(200)] != forwards


def test_vendor_sequences_do_not_depend_on_each_other() -> None:
    alone = FaultPlan.parse("slack.error=0.5,seed=3")
    together = FaultPlan.parse("slack.error=0.5,jira.error=0.9,seed=3")

    assert [alone.fault_for("slack", n) for n in range(100)] == [
        together.fault_for("slack", n) for n in range(100)
    ]


def test_fault_rate_follows_probability_when_drawn_often() -> None:
    plan = FaultPlan.parse("sendgrid.rate_limit=0.3,seed=1")

    hits = sum(plan.fault_for("sendgrid", n).kind == "rate_limit" for n in range(2000))

    assert 500 < hits < 700


def test_error_fault_carries_a_5xx_status() -> None:
    plan = FaultPlan.parse("gemini.error=1,seed=9")

    statuses = {plan.fault_for("gemini", n).status for n in range(50)}

    assert statuses == {500, 503}
    assert plan.fault_for("gemini", 0).kind == "error"


def test_latency_applies_to_every_call_when_set() -> None:
    plan = FaultPlan.parse("clearbit.latency_ms=250")

    assert all(plan.fault_for("clearbit", n) == Fault(latency_s=0.25) for n in range(10))
    assert plan.fault_for("jira", 0) == Fault()


def test_brownout_adds_latency_only_inside_its_window():
    plan = FaultPlan.parse("gemini.brownout_ms=45000,brownout=10-40,t0=1000")
    assert plan.fault_for("gemini", 0, now=1005).latency_s == 0
    assert plan.fault_for("gemini", 1, now=1010).latency_s == 45
    assert plan.fault_for("gemini", 2, now=1039.9).latency_s == 45
    assert plan.fault_for("gemini", 3, now=1040).latency_s == 0
    assert plan.fault_for("jira", 0, now=1020).latency_s == 0


@pytest.mark.parametrize(
    "spec",
    [
        "gemini.brownout_ms=100",
        "gemini.brownout_ms=1,brownout=5-2",
        "gemini.brownout_ms=1,brownout=5",
    ],
)
def test_brownout_needs_a_valid_window(spec):
    with pytest.raises(ValueError):
        FaultPlan.parse(spec)

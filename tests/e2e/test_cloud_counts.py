"""bench/cloud_counts.py: docs/scale.md's tables are what its counts make, and the counts are
what an onboarding on the real Google Cloud adapters does today."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench import cloud_counts
from sandbox.faults import FaultPlan


def test_scale_doc_tables_are_the_ones_its_counts_make():
    generated = cloud_counts.tables(cloud_counts.read_counts())
    in_doc = cloud_counts.doc_tables()
    assert sorted(in_doc) == sorted(generated), "a table docs/scale.md lacks, or one no longer made"
    for name, table in generated.items():
        assert in_doc[name] == table, (
            f"docs/scale.md's {name!r} table is stale: "
            "run .venv/bin/python bench/cloud_counts.py --update-doc"
        )


def test_scale_counts_cover_every_scenario_and_count():
    results = {r["scenario"]: r for r in cloud_counts.read_counts()}
    assert sorted(results) == sorted(s.name for s in cloud_counts.SCENARIOS)
    for result in results.values():
        totals = cloud_counts.totals(result)
        for count in ("reads", "writes", "transactions", "tasks", "dispatches", "invocations"):
            assert totals[count] > 0, (result["scenario"], count)
        assert result["invocation_seconds"], result["scenario"]
        assert totals["output_tokens"] > 0  # the draft asks the model in every scenario
    default, retry = results["default"], results["one-retry"]
    assert cloud_counts.totals(retry)["dispatches"] > cloud_counts.totals(default)["dispatches"]
    assert results["no-planning"]["tokens"].get("plan.input", 0) == 0
    assert "verification" not in results["no-verification"]["invocations"]


@pytest.mark.slow
def test_default_onboarding_counts_are_what_docs_scale_says_when_counted_again(
    firestore_emulator, tmp_path
):
    (default,) = cloud_counts.SCENARIOS[:1]
    counted = cloud_counts.run_scenario(default, firestore_emulator.host, 1, tmp_path)
    documented = next(r for r in cloud_counts.read_counts() if r["scenario"] == default.name)
    assert cloud_counts.counts_only(counted) == cloud_counts.counts_only(documented), (
        "an onboarding's Google Cloud counts changed: "
        "run .venv/bin/python bench/cloud_counts.py --update-doc and review docs/scale.md"
    )


@settings(max_examples=10)  # each looks through a few hundred seeds
@given(st.integers(min_value=0, max_value=30))
def test_one_fault_spec_fails_exactly_the_call_it_names(index):
    plan = FaultPlan.parse(cloud_counts.one_fault_spec("slack", index))
    failed = [n for n in range(index + 100) if plan.fault_for("slack", n).kind is not None]
    assert failed == [index]
    assert plan.fault_for("slack", index).kind == "error"


@given(
    st.lists(st.text("abcdefgh-_", min_size=1, max_size=12), min_size=1, max_size=6).filter(
        lambda parts: len(parts) % 2 == 0
    )
)
def test_a_document_counts_under_its_collection_path_without_ids(parts):
    name = "projects/p/databases/(default)/documents/" + "/".join(parts)
    assert cloud_counts.collection_of(name) == "/".join(parts[0::2])

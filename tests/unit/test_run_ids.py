"""A run named by its whole id or a unique prefix, as git names commits."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chimera.run_ids import CANDIDATES_SHOWN, AmbiguousRunId, RunNotFound, resolve_run_id
from tests.conftest import make_request, make_run
from tests.fakes import FakeStateStore


def _store(*run_ids: str) -> FakeStateStore:
    store = FakeStateStore()
    for run_id in run_ids:
        run = make_run(request=make_request(request_id=run_id))
        store.create_run(run.model_copy(update={"run_id": run_id}))
    return store


# Ids as Chimera makes them, drawn from a few hex digits so that they share long prefixes.
IDS = st.lists(
    st.from_regex(r"run-[0-3]{1,6}", fullmatch=True), min_size=1, max_size=12, unique=True
)


@given(IDS, st.data())
def test_a_prefix_names_the_run_exactly_when_no_other_id_starts_with_it(ids, data):
    store = _store(*ids)
    run_id = data.draw(st.sampled_from(ids))
    prefix = run_id[: data.draw(st.integers(1, len(run_id)))]
    starting = sorted(i for i in ids if i.startswith(prefix))
    if prefix in ids:  # a whole id, maybe another run's
        assert resolve_run_id(store, prefix) == prefix
    elif starting == [run_id]:
        assert resolve_run_id(store, prefix) == run_id
    else:
        with pytest.raises(AmbiguousRunId) as refused:
            resolve_run_id(store, prefix)
        assert refused.value.candidates == starting[: CANDIDATES_SHOWN + 1]
        assert all(c in str(refused.value) for c in starting[:CANDIDATES_SHOWN])


def test_a_whole_id_names_its_run_even_when_it_starts_longer_ids():
    store = _store("run-ab", "run-abc", "run-abd")
    assert resolve_run_id(store, "run-ab") == "run-ab"
    assert resolve_run_id(store, "run-abc") == "run-abc"


def test_an_ambiguous_prefix_names_a_few_candidates_and_says_there_are_more():
    store = _store(*(f"run-a{i:02d}" for i in range(12)))
    with pytest.raises(AmbiguousRunId) as refused:
        resolve_run_id(store, "run-a")
    message = str(refused.value)
    assert "run-a00, run-a01, run-a02, run-a03, run-a04 and more" in message
    assert "run-a05" not in message and "give more of the id" in message


def test_the_hex_part_alone_is_a_prefix_too():
    run = make_run()
    store = _store(run.run_id, "run-ffff")
    assert resolve_run_id(store, run.run_id[4:10]) == run.run_id
    assert resolve_run_id(store, "ff") == "run-ffff"


@pytest.mark.parametrize("text", ["run-9", "nope", "", "run-\udcff", "x/y"])
def test_an_unknown_or_impossible_id_is_refused_with_what_was_asked(text):
    store = _store("run-0a", "run-0b")
    with pytest.raises(RunNotFound) as refused:
        resolve_run_id(store, text)
    assert "no run" in str(refused.value)

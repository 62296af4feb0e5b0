"""A run named as people name it: its whole id, or a unique prefix of it, as git does."""

from __future__ import annotations

from shared.state import StateStore

RUN_ID_START = "run-"
# How many of the runs an ambiguous prefix starts are named in the error.
CANDIDATES_SHOWN = 5


class RunNotFound(LookupError):
    """No run has this id or starts with it."""


class AmbiguousRunId(LookupError):
    """The prefix starts more than one run id."""

    def __init__(self, prefix: str, candidates: list[str]) -> None:
        shown = ", ".join(candidates[:CANDIDATES_SHOWN])
        more = " and more" if len(candidates) > CANDIDATES_SHOWN else ""
        super().__init__(
            f"{prefix!r} is ambiguous, the start of several runs: {shown}{more}; "
            "give more of the id"
        )
        self.candidates = candidates


def resolve_run_id(store: StateStore, text: str) -> str:
    """The id of the one run `text` names: the run with that id, else the only run whose id
    starts with `text` (or with `run-` and `text`, for the hex part alone).

    Raises RunNotFound or AmbiguousRunId (LookupErrors) with a message for a person.
    """
    if not text or not _encodable(text):
        raise RunNotFound(f"no run {text!r}: give a run id or the start of one")
    if store.load(text) is not None:
        return text
    candidates = store.run_ids_with_prefix(text, CANDIDATES_SHOWN + 1)
    hex_only = not (text.startswith(RUN_ID_START) or RUN_ID_START.startswith(text))
    if not candidates and hex_only:
        candidates = store.run_ids_with_prefix(RUN_ID_START + text, CANDIDATES_SHOWN + 1)
    if not candidates:
        raise RunNotFound(f"no run {text}: no run id is or starts with it")
    if len(candidates) > 1:
        raise AmbiguousRunId(text, candidates)
    return candidates[0]


def _encodable(text: str) -> bool:
    """False for what no stored id can be (an argument's undecodable bytes, kept as lone
    surrogates): the stores keep UTF-8 and would refuse to look it up at all."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True

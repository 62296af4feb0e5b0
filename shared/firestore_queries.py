"""The console's reads on Firestore: filtered, searched and paged runs, counts per status,
recently changed runs, and a run's change mark.

Firestore takes one array condition per query and no substring match, so each run document
carries two small arrays written with it (no extra write): `search_keys` (its business keys
and the words of its company name, folded) and `current_tools` (the tools of its current
steps). A query sends the one condition an index serves best (terraform/firestore.tf) and
the filter's other conditions are checked on the documents as they stream, up to SCAN_CAP.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from google.cloud import firestore
from google.cloud.firestore_v1.base_query import FieldFilter
from google.cloud.firestore_v1.field_path import FieldPath

from shared.model import RunState, RunStatus
from shared.run_filter import (
    RunFilter,
    business_keys,
    current_tools,
    folded,
    newest_first,
    status_counts,
)

log = logging.getLogger(__name__)

SEARCH_KEYS = "search_keys"
CURRENT_TOOLS = "current_tools"
QUERY_FIELDS = (SEARCH_KEYS, CURRENT_TOOLS)
# Documents one list or count reads at most when conditions are checked as they stream.
SCAN_CAP = 5000
# The highest code point Firestore orders: a prefix's range ends just below it.
PREFIX_END = "\uf8ff"

RunOf = Callable[[Any], RunState]


def query_fields(run: RunState) -> dict[str, list[str]]:
    """The arrays a run document carries for the queries (not part of the run model)."""
    words = folded(run.request.company_name).split()
    keys = dict.fromkeys([*business_keys(run), *words])  # ordered, each once
    return {SEARCH_KEYS: list(keys), CURRENT_TOOLS: list(current_tools(run))}


def _served(runs: Any, query: RunFilter) -> tuple[Any, bool]:
    """`runs` narrowed by what one Firestore query can serve, and whether that is everything
    the filter asks (so no condition is left to check on the documents)."""
    complete = True
    if query.status is not None:
        # Needs the composite index (status ASC, created_at DESC), or with an array condition
        # (status ASC, <array> CONTAINS, created_at DESC).
        runs = runs.where(filter=FieldFilter("status", "==", query.status.value))
    if query.tool is not None:
        runs = runs.where(filter=FieldFilter(CURRENT_TOOLS, "array_contains", query.tool))
        complete = query.attention is None
    elif query.attention is not None:
        runs = runs.where(filter=FieldFilter("attention", "array_contains", query.attention))
    if query.created_after is not None:
        runs = runs.where(filter=FieldFilter("created_at", ">=", query.created_after))
    if query.created_before is not None:
        runs = runs.where(filter=FieldFilter("created_at", "<", query.created_before))
    return runs, complete


def _searched(collection: Any, query: RunFilter, run_of: RunOf) -> list[RunState]:
    """Every run the search can find (a whole business key or company word, or a run id's
    prefix), newest first, checked against the whole filter."""
    found: dict[str, RunState] = {}
    keyed = collection.where(filter=FieldFilter(SEARCH_KEYS, "array_contains", query.needle))
    # Needs the composite index (search_keys CONTAINS, created_at DESC).
    keyed = keyed.order_by("created_at", direction=firestore.Query.DESCENDING)
    prefix = query.search or ""
    by_id = collection.where(
        filter=FieldFilter(FieldPath.document_id(), ">=", collection.document(prefix))
    ).where(
        filter=FieldFilter(FieldPath.document_id(), "<", collection.document(prefix + PREFIX_END))
    )
    for docs in (keyed.limit(SCAN_CAP).stream(), by_id.limit(SCAN_CAP).stream()):
        for doc in docs:
            run = run_of(doc)
            found[run.run_id] = run
    return [r for r in newest_first(found.values()) if query.matches(r)]


def _streamed(
    collection: Any, query: RunFilter, run_of: RunOf, wanted: int | None
) -> Iterable[RunState]:
    """The runs passing the filter, newest first, at most `wanted` (None: every one)."""
    if query.needle:
        yield from _searched(collection, query, run_of)[:wanted]
        return
    runs, complete = _served(collection, query)
    runs = runs.order_by("created_at", direction=firestore.Query.DESCENDING)
    if complete and wanted is not None:
        yield from (run_of(doc) for doc in runs.limit(wanted).stream())
        return
    seen = 0
    for doc in runs.limit(SCAN_CAP).stream():
        run = run_of(doc)
        if query.matches(run):
            yield run
            seen += 1
            if wanted is not None and seen >= wanted:
                return


def list_runs(collection: Any, query: RunFilter, run_of: RunOf) -> list[RunState]:
    runs = list(_streamed(collection, query, run_of, query.offset + query.limit))
    # Firestore orders by created_at only: ties are put in the filter's order here.
    return query.page(newest_first(runs))


def count_runs(collection: Any, query: RunFilter, run_of: RunOf) -> dict[str, int]:
    every = query.without_status()
    if every.needle or (every.tool is not None and every.attention is not None):
        return status_counts(_streamed(collection, every, run_of, None))
    counts = status_counts(())
    for status in RunStatus:
        narrowed, _ = _served(collection, every.model_copy(update={"status": status}))
        (result,) = narrowed.count().get()[0]
        counts[status.value] = int(result.value)
    return counts


def recent_runs(collection: Any, since: datetime, limit: int, run_of: RunOf) -> list[RunState]:
    recent = collection.where(filter=FieldFilter("updated_at", ">=", since))
    recent = recent.order_by("updated_at", direction=firestore.Query.DESCENDING).limit(limit)
    return [run_of(doc) for doc in recent.stream()]


def change_mark(run_ref: Any, events: str) -> tuple[int, str] | None:
    snapshot = run_ref.get(field_paths=["version"])
    if not snapshot.exists:
        return None
    # By time: Firestore scans document ids in ascending order only. An append is the newest
    # event (a fold keeps the newest retry as it was).
    newest = run_ref.collection(events).order_by("at", direction=firestore.Query.DESCENDING)
    last = next(iter(newest.limit(1).select([]).stream()), None)
    return int(snapshot.get("version")), last.id if last is not None else ""

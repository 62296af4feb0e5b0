"""What one onboarding costs on Google Cloud, counted: Firestore reads, writes and
transactions, Cloud Tasks creations, function invocations and GB-seconds, LLM tokens.

    .venv/bin/python bench/cloud_counts.py [--onboardings 1] [--update-doc]

Onboardings run through Chimera's real Google Cloud adapters and deployed targets:
FirestoreStateStore on the Firestore emulator, counted at the wire by a gRPC proxy in front
of it (each document a get or a query returns is a read, a query that returns none is one, a
count aggregation is one; each write of a commit is a write; a commit with a transaction is a
transaction); CloudTasksQueue building its real CreateTask requests, handed to an in-process
stand-in for the Cloud Tasks client that keeps Cloud Tasks' rules (a name is taken once, a
task waits for its schedule_time, a non-2xx answer is retried on the queue's backoff) and
delivers one task at a time to the functions' Functions Framework apps, so that the counts are
the same on every run. The Cloud Tasks emulator is not used for the counts: it dispatches at
once and in parallel and ignores retry configs (tests/cloud_tasks_emulator.py), which would make
contention, not Chimera, decide some reads. The watchdog tasks, due long after a run ends, are
delivered too: they are invoked in the cloud as well. The vendors and Gemini are the sandbox.

Scenarios: the default (model planning and verification on), planning off, verification off,
both off, and the default with one vendor call faulted (its difference from the default is
the cost of one retry). Each vendor call reads its breaker's document (breaker_state_cache=0:
a cold instance each time, an upper bound; a warm instance reads each at most every 2 s).

Function durations are wall time in this process: a proxy for the instances' billed time (the
functions, Firestore and the vendors all on this machine). GB-seconds use the memory
terraform/functions.tf gives each function. --update-doc rewrites the generated tables of
docs/scale.md (between its `<!-- cloud-counts:... -->` markers); tests/e2e/test_cloud_counts.py
recomputes them and compares, so the document cannot drift from the code.
"""

from __future__ import annotations

import argparse
import base64
import heapq
import itertools
import json
import math
import re
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Mapping
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# The repository for its packages, bench/ for support.py (as when run as a script).
for folder in (ROOT, ROOT / "bench"):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

import grpc  # noqa: E402
from google.api_core import exceptions  # noqa: E402
from support import Table, onboarding, save_results  # noqa: E402

from sandbox.faults import FaultPlan  # noqa: E402
from sandbox.records import RecordStore  # noqa: E402
from sandbox.server import SandboxServer  # noqa: E402
from shared.model import OnboardingRequest, RunStatus  # noqa: E402
from shared.queues import QUEUES  # noqa: E402
from shared.runtime import Runtime, install  # noqa: E402
from shared.settings import Settings  # noqa: E402
from tests.emulators import environment  # noqa: E402

DOC = ROOT / "docs" / "scale.md"
FUNCTIONS_TF = ROOT / "terraform" / "functions.tf"
LOCATION = "us-central1"
# The functions' base URL as terraform/functions.tf builds it: the stand-in routes each task
# by the function name at its end, as Cloud Run would.
FUNCTIONS_URL = "https://us-central1-chimera-counts.cloudfunctions.net"
# A run that needs more deliveries than this is looping: stop and say so.
DELIVERIES_PER_ONBOARDING = 200
# The vendor the retry scenario faults once, on its first call.
FAULTED_VENDOR = "slack"

# --- Firestore, counted at the wire ------------------------------------------------------

FIRESTORE = "/google.firestore.v1.Firestore/"
UNARY = {
    "Commit",
    "BeginTransaction",
    "Rollback",
    "GetDocument",
    "ListDocuments",
    "CreateDocument",
    "UpdateDocument",
    "DeleteDocument",
    "BatchWrite",
    "ListCollectionIds",
    "PartitionQuery",
}
STREAMING = {"BatchGetDocuments", "RunQuery", "RunAggregationQuery"}
# Metadata the client sends that the emulator needs (its owner token, routing headers).
FORWARDED = ("authorization", "x-goog-", "google-cloud-resource-prefix")


def collection_of(name: str) -> str:
    """`runs`, `runs/events`, `breakers`...: a document's collection path without its ids."""
    _, _, path = name.partition("/documents/")
    return "/".join(path.split("/")[0::2])


class FirestoreWire(grpc.GenericRpcHandler):
    """A gRPC proxy before the Firestore emulator, counting what Firestore bills: reads (each
    document a get or query returns; one for a query that returns none; one per count
    aggregation), writes (each write of a committed commit) and commits, by collection."""

    def __init__(self, upstream: str) -> None:
        from google.cloud.firestore_v1.types import firestore as types

        self.types = types
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._upstream = grpc.insecure_channel(upstream)
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
        self._server.add_generic_rpc_handlers((self,))
        port = self._server.add_insecure_port("127.0.0.1:0")
        self.host = f"127.0.0.1:{port}"

    def start(self) -> FirestoreWire:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop(None)
        self._upstream.close()

    def take(self) -> Counter[str]:
        """The counts so far, and start again from zero."""
        with self._lock:
            counts, self.counts = self.counts, Counter()
        return counts

    def _count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self.counts[key] += n

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        method = details.method or ""
        if not method.startswith(FIRESTORE):
            return None
        name = method.removeprefix(FIRESTORE)
        if name in UNARY:
            return grpc.unary_unary_rpc_method_handler(self._unary(method, name))
        if name in STREAMING:
            return grpc.unary_stream_rpc_method_handler(self._streaming(method, name))
        return None  # Listen and Write: Chimera never opens them (UNIMPLEMENTED if it did)

    @staticmethod
    def _metadata(context: grpc.ServicerContext) -> list[tuple[str, str]]:
        return [
            (key, value)
            for key, value in context.invocation_metadata()
            if key.startswith(FORWARDED) and isinstance(value, str)
        ]

    def _unary(self, method: str, name: str) -> Callable[[bytes, Any], bytes]:
        call = self._upstream.unary_unary(method)

        def forward(request: bytes, context: grpc.ServicerContext) -> bytes:
            self._count(f"rpc.{name}")
            try:
                response = call(request, metadata=self._metadata(context), timeout=30)
            except grpc.RpcError as exc:
                self._count(f"failed.{name}.{exc.code().name}")
                context.abort(exc.code(), exc.details() or "")
            if name == "Commit":
                self._commit(request)
            elif name == "GetDocument":
                self._count("reads")
            return response

        return forward

    def _commit(self, raw: bytes) -> None:
        commit = self.types.CommitRequest.deserialize(raw)
        kind = "transactions" if commit.transaction else "batch_commits"
        self._count(kind)
        for write in commit.writes:
            operation = write._pb.WhichOneof("operation")
            if operation == "update":
                target = write.update.name
            elif operation == "delete":
                target = write.delete
            else:
                target = write.transform.document
            self._count("writes")
            self._count(f"writes.{collection_of(target)}")
            self._count(f"writes.{operation}")

    def _streaming(self, method: str, name: str) -> Callable[[bytes, Any], Iterator[bytes]]:
        call = self._upstream.unary_stream(method)

        def forward(request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
            self._count(f"rpc.{name}")
            returned = 0
            try:
                for response in call(request, metadata=self._metadata(context), timeout=30):
                    # Counted as it passes, not at the end: a client that has what it asked
                    # for may cancel the rest of the stream, which ends this generator early.
                    documents = self._documents(name, response)
                    for document in documents:
                        self._read(document, get=name == "BatchGetDocuments")
                    returned += len(documents)
                    yield response
            except grpc.RpcError as exc:
                self._count(f"failed.{name}.{exc.code().name}")
                context.abort(exc.code(), exc.details() or "")
            finally:
                self._query_reads(name, request, returned)

        return forward

    def _read(self, document: str, *, get: bool) -> None:
        with self._lock:
            self.counts["reads"] += 1
            self.counts[f"reads.{collection_of(document)}"] += 1
            self.counts["gets" if get else "query_documents"] += 1

    def _documents(self, name: str, raw: bytes) -> list[str]:
        """The documents (names) one streamed response returns."""
        if name == "BatchGetDocuments":
            got = self.types.BatchGetDocumentsResponse.deserialize(raw)
            if got.found.name:
                return [got.found.name]
            if got.missing:
                self._count("missing_gets")  # looked up and not there: counted a read too
                return [got.missing]
            return []
        if name == "RunQuery":
            found = self.types.RunQueryResponse.deserialize(raw)
            return [found.document.name] if found.document.name else []
        return []

    def _query_reads(self, name: str, raw: bytes, returned: int) -> None:
        """What a query is billed beyond its documents: one read when it returns none; one
        for a count aggregation (per batch of up to 1,000 index entries: these count few)."""
        if name == "RunAggregationQuery":
            query = self.types.RunAggregationQueryRequest.deserialize(raw)
            structured = query.structured_aggregation_query.structured_query
            self._count("aggregations")
            self._read(_queried(query.parent, structured), get=False)
        elif name == "RunQuery":
            query = self.types.RunQueryRequest.deserialize(raw)
            self._count("queries")
            if not returned:
                self._count("empty_queries")
                self._read(_queried(query.parent, query.structured_query), get=False)


def _queried(parent: str, query: Any) -> str:
    """A stand-in document name in the collection `query` reads under `parent`."""
    return f"{parent}/{query.from_[0].collection_id}/-"


# --- Cloud Tasks: the adapter's client, and the deliveries -------------------------------


@dataclass(order=True)
class Queued:
    due: float
    seq: int
    queue: str = field(compare=False)
    name: str = field(compare=False)
    function: str = field(compare=False)
    headers: dict[str, str] = field(compare=False)
    body: bytes = field(compare=False)
    retries: int = field(default=0, compare=False)


class CloudTasksStandIn:
    """What CloudTasksQueue calls (`create_task`), keeping Cloud Tasks' rules: a task name is
    taken once, even after its task is done (AlreadyExists); a task is due at its
    schedule_time; a delivery answered other than 2xx is retried after the queue's backoff
    (or the answer's Retry-After, if longer) until its max_attempts. Time is virtual: tasks are
    delivered one at a time in the order they fall due, without waiting."""

    def __init__(self) -> None:
        self.created: Counter[str] = Counter()
        self.duplicates: Counter[str] = Counter()
        self.deleted: Counter[str] = Counter()
        self.given_up = 0
        self._names: set[str] = set()
        self._due: list[Queued] = []
        self._seq = itertools.count()
        self._lock = threading.Lock()
        self.now = time.time()

    def create_task(self, request: Any, **_: Any) -> Any:
        task = request.task
        queue = request.parent.rpartition("/")[2]
        with self._lock:
            if task.name in self._names:
                self.duplicates[queue] += 1
                raise exceptions.AlreadyExists(f"task {task.name} exists")
            self._names.add(task.name)
            self.created[queue] += 1
            scheduled = task.schedule_time.timestamp() if "schedule_time" in task else 0.0
            http = task.http_request
            heapq.heappush(
                self._due,
                Queued(
                    due=max(scheduled, self.now),
                    seq=next(self._seq),
                    queue=queue,
                    name=task.name.rpartition("/")[2],
                    function=http.url.rstrip("/").rpartition("/")[2],
                    headers=dict(http.headers),
                    body=bytes(http.body),
                ),
            )
        return task

    def delete_task(self, name: str, **_: Any) -> None:
        """DeleteTask: a waiting task is dropped (the name stays taken); one that ran, or
        never was, is NotFound. Each call is a billable operation."""
        path, _sep, short = name.rpartition("/tasks/")
        queue = path.rpartition("/")[2]
        with self._lock:
            waiting = [t for t in self._due if t.name == short and t.queue == queue]
            if not waiting:
                raise exceptions.NotFound(f"task {name} not found")
            self._due = [t for t in self._due if t not in waiting]
            heapq.heapify(self._due)
            self.deleted[queue] += 1

    def next_due(self) -> Queued | None:
        with self._lock:
            if not self._due:
                # Drained: the next tasks are scheduled from the real clock again.
                self.now = time.time()
                return None
            task = heapq.heappop(self._due)
            self.now = max(self.now, task.due)
            return task

    def answered(self, task: Queued, status: int, retry_after: str | None) -> None:
        """Done on 2xx; otherwise due again after the queue's backoff, or given up."""
        if 200 <= status < 300:
            return
        config = QUEUES[task.queue]
        if task.retries + 1 >= config.max_attempts:
            self.given_up += 1
            return
        delay = config.backoff(task.retries + 1)
        if retry_after and retry_after.replace(".", "", 1).isdigit():
            delay = max(delay, float(retry_after))
        with self._lock:
            task.retries += 1
            task.due = self.now + delay
            task.seq = next(self._seq)
            heapq.heappush(self._due, task)

    def take(self) -> tuple[Counter[str], Counter[str], Counter[str]]:
        with self._lock:
            created, duplicates, deleted = self.created, self.duplicates, self.deleted
            self.created, self.duplicates, self.deleted = Counter(), Counter(), Counter()
        return created, duplicates, deleted


# --- The functions -----------------------------------------------------------------------


@dataclass(frozen=True)
class Invocation:
    function: str
    kind: str  # the orchestrator task's kind; a tool's "call" or "verify"; "intake"
    seconds: float
    status: int


class Functions:
    """The deployed targets as the Functions Framework serves them, invoked in this process
    and timed."""

    def __init__(self) -> None:
        import functions_framework
        from werkzeug.test import Client

        from chimera.stack import function_sources

        self.clients = {
            name: Client(functions_framework.create_app(source.target, str(source.source)))
            for name, source in function_sources().items()
        }
        self.invocations: list[Invocation] = []

    def deliver(self, task: Queued) -> tuple[int, str | None]:
        headers = {
            **task.headers,
            "X-CloudTasks-QueueName": task.queue,
            "X-CloudTasks-TaskName": task.name,
            "X-CloudTasks-TaskRetryCount": str(task.retries),
            "X-CloudTasks-TaskExecutionCount": str(task.retries),
        }
        payload = json.loads(task.body or b"{}")
        kind = payload.get("kind", "")
        if task.function != "orchestrator":
            kind = "verify" if kind == "verify" else "call"
        started = time.perf_counter()
        response = self.clients[task.function].post("/", data=task.body, headers=headers)
        seconds = time.perf_counter() - started
        self.invocations.append(Invocation(task.function, kind, seconds, response.status_code))
        return response.status_code, response.headers.get("Retry-After")

    def publish(self, request: OnboardingRequest, message_id: str) -> None:
        """The intake topic's push to orchestrator-pubsub, as Eventarc delivers it."""
        data = base64.b64encode(request.model_dump_json().encode()).decode()
        headers = {
            "ce-specversion": "1.0",
            "ce-type": "google.cloud.pubsub.topic.v1.messagePublished",
            "ce-source": "//pubsub.googleapis.com/projects/chimera-counts/topics/chimera-intake",
            "ce-id": message_id,
            "Content-Type": "application/json",
        }
        body = json.dumps({"message": {"data": data, "messageId": message_id}})
        started = time.perf_counter()
        response = self.clients["orchestrator-pubsub"].post("/", data=body, headers=headers)
        seconds = time.perf_counter() - started
        if response.status_code >= 300:
            raise SystemExit(f"orchestrator-pubsub answered {response.status_code}")
        self.invocations.append(Invocation("orchestrator-pubsub", "intake", seconds, 200))

    def take(self) -> list[Invocation]:
        taken, self.invocations = self.invocations, []
        return taken


# --- Scenarios ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    name: str
    agent_reasoning: bool = True
    verify_steps: bool = True
    faulted: bool = False

    @property
    def label(self) -> str:
        planning = "planning on" if self.agent_reasoning else "planning off"
        verifying = "verification on" if self.verify_steps else "verification off"
        fault = f", one {FAULTED_VENDOR} call faulted" if self.faulted else ""
        return f"{planning}, {verifying}{fault}"


SCENARIOS = (
    Scenario("default"),
    Scenario("no-planning", agent_reasoning=False),
    Scenario("no-verification", verify_steps=False),
    Scenario("neither", agent_reasoning=False, verify_steps=False),
    Scenario("one-retry", faulted=True),
)


def one_fault_spec(vendor: str, index: int, calls: int = 100) -> str:
    """A fault plan under which `vendor`'s call number `index` (0-based) fails with a 5xx and
    none other of its first `calls` does: the sandbox draws each call's fault from (seed,
    vendor, n), so a seed that does so is looked for."""
    calls = max(calls, index + 100)
    odds = 1 / calls  # the likeliest odds for exactly one given call in `calls` to fail
    for seed in range(100_000):
        spec = f"{vendor}.error={odds:.6f},seed={seed}"
        plan = FaultPlan.parse(spec)
        if all((plan.fault_for(vendor, n).kind == "error") == (n == index) for n in range(calls)):
            return spec
    raise RuntimeError(f"no seed faults only {vendor}'s call {index}")


def run_scenario(
    scenario: Scenario, firestore_host: str, n: int, workdir: Path, fault_index: int = 0
) -> dict[str, Any]:
    """One warm-up onboarding, then `n` submitted together and delivered to the end: their
    counts, per onboarding. A faulted scenario fails `FAULTED_VENDOR`'s call `fault_index`,
    which should be its first after the warm-up."""
    from shared.cloud_tasks_queue import CloudTasksQueue
    from shared.firestore_state import FirestoreStateStore

    # Fixed-length names: request ids reach the prompts, whose lengths are counted.
    project = f"chimera-counts-{uuid.uuid4().hex[:10]}"
    faults = one_fault_spec(FAULTED_VENDOR, fault_index) if scenario.faulted else ""
    sandbox = SandboxServer(workdir / scenario.name / "sandbox", faults=faults, port=0).start()
    wire = FirestoreWire(firestore_host).start()
    tasks = CloudTasksStandIn()
    try:
        settings = Settings(
            backend="gcp",
            home=workdir / scenario.name / "home",
            state_url=f"firestore://{project}",
            gcp_project=project,
            gcp_location=LOCATION,
            functions_url=FUNCTIONS_URL,
            # The stand-in, like the emulator, mints no ID tokens: targets let it in on IAM.
            tasks_emulator_host="in-process-stand-in",
            sandbox_url=sandbox.url,
            website_url=f"{sandbox.url}/website/{{domain}}/",
            agent_reasoning=scenario.agent_reasoning,
            verify_steps=scenario.verify_steps,
            breaker_state_cache=0.0,
        )
        settings.check()
        queue = CloudTasksQueue(
            tasks,
            project,
            LOCATION,
            FUNCTIONS_URL,
            settings.tasks_service_account,
            settings.dispatch_deadline,
        )
        with environment(FIRESTORE_EMULATOR_HOST=wire.host):
            store = FirestoreStateStore.from_url(
                settings.state_location,
                queue,
                retention=settings.retention,
                event_cap=settings.event_log_cap,
            )
        install(Runtime(settings, store, queue))
        functions = Functions()
        tag = f"counts-{scenario.name[:2]}-{project[-10:]}"
        # One onboarding first, not counted, so that the counted ones find warm instances
        # (imports and clients built): a function's first request is not what it bills.
        _onboard(
            functions, tasks, store, [OnboardingRequest(**onboarding(0, f"{tag}-warm-up", "Warm"))]
        )
        warmed = RecordStore(sandbox.home).list()
        warm_calls = Counter(c["vendor"] for c in warmed)
        last_warm = max((c["id"] for c in warmed), default=0)
        wire.take()
        tasks.take()
        functions.take()
        requests = [OnboardingRequest(**onboarding(i, tag, "Counts")) for i in range(n)]
        _onboard(functions, tasks, store, requests)
        firestore = wire.take()
        created, duplicates, deleted = tasks.take()
        invocations = functions.take()
        run_ids = {r.run_id() for r in requests}
        tokens, steps_by_tokens = _tokens(store, sorted(run_ids))
        # Every call after the warm-up's: some (a client's first lookups, cached after) name
        # no run.
        calls = [c for c in RecordStore(sandbox.home).list() if c["id"] > last_warm]
        faulted = [c for c in RecordStore(sandbox.home).list() if c["fault"]]
        wanted = 1 if scenario.faulted else 0
        if len(faulted) != wanted or any(c["id"] <= last_warm for c in faulted):
            raise SystemExit(f"{scenario.name}: {len(faulted)} faulted calls, not {wanted}")
    finally:
        install(None)
        wire.stop()
        sandbox.stop()
    counted = Counted(firestore, created, duplicates, deleted, invocations, tokens, calls)
    result = _per_onboarding(scenario, n, counted, _prompt_chars(calls, steps_by_tokens))
    result["warm_up_vendor_calls"] = dict(sorted(warm_calls.items()))
    return result


def _onboard(
    functions: Functions, tasks: CloudTasksStandIn, store: Any, requests: list[OnboardingRequest]
) -> None:
    """Publish `requests` together, then deliver every task (watchdogs too) until none is left;
    every run must have succeeded."""
    for request in requests:
        functions.publish(request, f"message-{request.run_id()}")
    deliveries = 0
    while (task := tasks.next_due()) is not None:
        deliveries += 1
        if deliveries > DELIVERIES_PER_ONBOARDING * len(requests):
            raise SystemExit(f"over {deliveries} deliveries for {len(requests)} runs: looping?")
        status, retry_after = functions.deliver(task)
        tasks.answered(task, status, retry_after)
    for request in requests:
        run = store.load(request.run_id())
        if run is None or run.status is not RunStatus.SUCCEEDED or tasks.given_up:
            state = run.status.value if run else "missing"
            raise SystemExit(f"run {request.run_id()} {state}: {run.reason if run else ''}")


@dataclass(frozen=True)
class Counted:
    firestore: Counter[str]
    created: Counter[str]
    duplicates: Counter[str]
    deleted: Counter[str]
    invocations: list[Invocation]
    tokens: dict[str, int]
    calls: list[dict[str, Any]]


def _tokens(store: Any, run_ids: list[str]) -> tuple[dict[str, int], dict[int, str]]:
    """Input and output tokens the runs recorded (their ledger's usage), by step; and each
    step by its input tokens (to tell the sandbox's records apart)."""
    used: Counter[str] = Counter()
    steps: dict[int, str] = {}
    for run_id in run_ids:
        for step_id, outcome in store.outcomes(run_id).items():
            if outcome.usage is not None:
                step = re.sub(r"-g\d+$", "", step_id)
                used[f"{step}.input"] += outcome.usage.input_tokens
                used[f"{step}.output"] += outcome.usage.output_tokens
                steps[outcome.usage.input_tokens] = step
    return dict(used), steps


def _prompt_chars(calls: list[dict[str, Any]], steps_by_tokens: Mapping[int, str]) -> dict:
    """The characters of each step's Gemini prompt (system + user text) as sent, by step: a
    call is the step whose recorded input tokens the sandbox counted for it (chars / 4)."""
    sizes: dict[str, list[int]] = defaultdict(list)
    for call in calls:
        body = call["request"]
        if call["vendor"] != "gemini" or call["status"] >= 300 or not isinstance(body, dict):
            continue
        contents = [*body.get("contents", []), body.get("systemInstruction") or {}]
        chars = sum(
            len(str(part.get("text", "")))
            for content in contents
            if isinstance(content, dict)
            for part in content.get("parts", [])
            if isinstance(part, dict)
        )
        sizes[steps_by_tokens.get(math.ceil(chars / 4), "other")].append(chars)
    return {step: round(sum(v) / len(v)) for step, v in sorted(sizes.items())}


def _per_onboarding(
    scenario: Scenario, n: int, counted: Counted, prompt_chars: dict[str, int]
) -> dict[str, Any]:
    def each(value: float) -> float:
        return round(value / n, 3)

    by_function: dict[str, Counter[str]] = defaultdict(Counter)
    seconds: dict[str, float] = defaultdict(float)
    for invocation in counted.invocations:
        group = "verification" if invocation.kind == "verify" else invocation.function
        by_function[group][invocation.kind] += 1
        seconds[group] += invocation.seconds
    vendor_calls = Counter(f"{c['vendor']}.{c['action']}" for c in counted.calls)
    # Push deliveries per queue (a queue is named as its target function): what its rate and
    # concurrency limits meter, and a billable Cloud Tasks operation each.
    dispatches = Counter(i.function for i in counted.invocations if i.kind != "intake")
    dispatch_seconds: dict[str, float] = defaultdict(float)
    for invocation in counted.invocations:
        if invocation.kind != "intake":
            dispatch_seconds[invocation.function] += invocation.seconds
    return {
        "scenario": scenario.name,
        "label": scenario.label,
        "onboardings": n,
        "planning": scenario.agent_reasoning,
        "verification": scenario.verify_steps,
        "firestore": {key: each(value) for key, value in sorted(counted.firestore.items())},
        "tasks_created": {key: each(value) for key, value in sorted(counted.created.items())},
        "tasks_deleted": {key: each(value) for key, value in sorted(counted.deleted.items())},
        "tasks_already_existing": {
            key: each(value) for key, value in sorted(counted.duplicates.items())
        },
        "invocations": {
            group: {kind: each(count) for kind, count in sorted(kinds.items())}
            for group, kinds in sorted(by_function.items())
        },
        "invocation_seconds": {group: each(s) for group, s in sorted(seconds.items())},
        "dispatches": {queue: each(count) for queue, count in sorted(dispatches.items())},
        "dispatch_seconds": {q: each(seconds) for q, seconds in sorted(dispatch_seconds.items())},
        "tokens": {key: each(value) for key, value in sorted(counted.tokens.items())},
        "vendor_calls": {key: each(value) for key, value in sorted(vendor_calls.items())},
        "prompt_chars": prompt_chars,
    }


# --- What the counts come to -------------------------------------------------------------


def function_memory_gib() -> dict[str, float]:
    """Each function's memory in GiB, as terraform/functions.tf configures it."""
    text = FUNCTIONS_TF.read_text()
    found = {}
    for name, body in re.findall(r'^    "([a-z-]+)" = \{(.*?)^    \}', text, re.M | re.S):
        memory = re.search(r'memory\s*=\s*"(\d+)(Mi|Gi)"', body)
        if memory:
            amount, unit = int(memory[1]), memory[2]
            found[name] = amount / 1024 if unit == "Mi" else float(amount)
    return found


def function_cpu() -> dict[str, float]:
    text = FUNCTIONS_TF.read_text()
    return {
        name: float(cpu[1])
        for name, body in re.findall(r'^    "([a-z-]+)" = \{(.*?)^    \}', text, re.M | re.S)
        if (cpu := re.search(r'cpu\s*=\s*"([\d.]+)"', body))
    }


# Google's list prices (USD), as docs/scale.md cites them: its "Prices" section gives each
# page and the day it was read. Firestore: Standard edition, us-central1 (regional).
PRICES = {
    "firestore_read_per_100k": 0.03,
    "firestore_write_per_100k": 0.09,
    "firestore_delete_per_100k": 0.01,
    "tasks_per_million": 0.40,
    "invocations_per_million": 0.40,
    "vcpu_second": 0.000024,
    "gib_second": 0.0000025,
    "gemini_input_per_million": 0.30,
    "gemini_output_per_million": 2.50,
}
# Each vendor call's assumed latency in the cloud (ms), for the realistic durations and the
# run-document write rate in docs/scale.md.
ASSUMED_LATENCY_MS = {
    "clearbit": 300,
    "jira": 800,
    "sendgrid": 300,
    "slack": 300,
    "gemini": 4000,
    "website": 500,
}
# One Firestore RPC and one task creation from a function in the same region (ms).
FIRESTORE_RPC_MS = 15
CREATE_TASK_MS = 25


def totals(result: Mapping[str, Any]) -> dict[str, float]:
    """One scenario's per-onboarding totals, the figures the tables show."""
    firestore = result["firestore"]
    writes = firestore.get("writes", 0.0)
    deletes = firestore.get("writes.delete", 0.0)
    tokens = result["tokens"]
    invocations = sum(sum(kinds.values()) for kinds in result["invocations"].values())
    return {
        "reads": firestore.get("reads", 0.0),
        "writes": round(writes - deletes, 3),
        "deletes": deletes,
        "run_doc_writes": firestore.get("writes.runs", 0.0),
        "transactions": firestore.get("transactions", 0.0),
        "batch_commits": firestore.get("batch_commits", 0.0),
        "tasks": round(sum(result["tasks_created"].values()), 3),
        "dispatches": round(sum(result["dispatches"].values()), 3),
        "tasks_deleted": round(sum(result["tasks_deleted"].values()), 3),
        # Cloud Tasks bills each API call (a create, even one refused as a duplicate, a
        # delete of a moot watchdog) and each push delivery attempt.
        "tasks_billable": round(
            sum(result["tasks_created"].values())
            + sum(result["tasks_deleted"].values())
            + sum(result["tasks_already_existing"].values())
            + sum(result["dispatches"].values()),
            3,
        ),
        "invocations": round(invocations, 3),
        "input_tokens": round(sum(v for k, v in tokens.items() if k.endswith(".input")), 3),
        "output_tokens": round(sum(v for k, v in tokens.items() if k.endswith(".output")), 3),
    }


def seconds_at_cloud_latency(result: Mapping[str, Any]) -> dict[str, float]:
    """Each function group's seconds per onboarding with the vendors, Firestore and Cloud
    Tasks at the assumed cloud latencies added to what was measured here (their time here is
    near zero). Firestore RPCs and task creations are spread over the groups by invocations."""
    seconds = dict(result["invocation_seconds"])
    vendor_of_group = {
        "tool-clearbit": ("clearbit", "website"),
        "tool-jira": ("jira",),
        "tool-sendgrid": ("sendgrid",),
        "tool-slack": ("slack",),
        "orchestrator": ("gemini",),
    }
    calls = result["vendor_calls"]
    verify_calls = _verification_vendor_calls(result)
    for group, vendors in vendor_of_group.items():
        spent = sum(
            count * ASSUMED_LATENCY_MS[key.partition(".")[0]] / 1000
            for key, count in calls.items()
            if key.partition(".")[0] in vendors and key not in verify_calls
        )
        seconds[group] = seconds.get(group, 0.0) + spent
    # The draft asks Gemini from the sendgrid function, planning from the orchestrator.
    drafts = result["tokens"].get("draft.input", 0) and 1
    gemini_calls = sum(v for k, v in calls.items() if k.startswith("gemini."))
    seconds["orchestrator"] -= drafts * ASSUMED_LATENCY_MS["gemini"] / 1000
    seconds["tool-sendgrid"] = seconds.get("tool-sendgrid", 0.0) + (
        min(drafts, gemini_calls) * ASSUMED_LATENCY_MS["gemini"] / 1000
    )
    seconds["verification"] = seconds.get("verification", 0.0) + sum(
        count * ASSUMED_LATENCY_MS[key.partition(".")[0]] / 1000
        for key, count in verify_calls.items()
    )
    invocations = {g: sum(k.values()) for g, k in result["invocations"].items()}
    every = sum(invocations.values())
    rpcs = sum(v for k, v in result["firestore"].items() if k.startswith("rpc."))
    queued = sum(result["tasks_created"].values()) + sum(result["tasks_already_existing"].values())
    overhead = rpcs * FIRESTORE_RPC_MS / 1000 + queued * CREATE_TASK_MS / 1000
    for group, count in invocations.items():
        seconds[group] = seconds.get(group, 0.0) + overhead * count / every
    return {group: round(value, 3) for group, value in sorted(seconds.items())}


# The read-only lookups verifiers make (shared/verification.py and each tool's verifier).
VERIFY_ACTIONS = ("project.get", "issues.search", "messages.search", "conversations.history")


def _verification_vendor_calls(result: Mapping[str, Any]) -> dict[str, float]:
    return {
        key: count
        for key, count in result["vendor_calls"].items()
        if key.partition(".")[2] in VERIFY_ACTIONS
    }


def dollars_per_1000(result: Mapping[str, Any]) -> dict[str, float]:
    """What 1,000 onboardings of this scenario cost at PRICES, by item."""
    t = totals(result)
    memory = function_memory_gib()
    cpu = function_cpu()
    cloud = seconds_at_cloud_latency(result)

    def resources_of(group: str) -> tuple[float, float]:
        function = next((f for f in memory if group.startswith(f)), "tool-slack")
        if group == "verification":  # the tool functions verify: the same size
            function = "tool-jira"
        return memory[function], cpu[function]

    gib_s = sum(s * resources_of(g)[0] for g, s in cloud.items())
    vcpu_s = sum(s * resources_of(g)[1] for g, s in cloud.items())
    items = {
        "firestore_reads": t["reads"] * PRICES["firestore_read_per_100k"] / 100,
        "firestore_writes": t["writes"] * PRICES["firestore_write_per_100k"] / 100,
        "firestore_deletes": t["deletes"] * PRICES["firestore_delete_per_100k"] / 100,
        "tasks": t["tasks_billable"] * PRICES["tasks_per_million"] / 1000,
        "invocations": t["invocations"] * PRICES["invocations_per_million"] / 1000,
        "memory": gib_s * PRICES["gib_second"] * 1000,
        "cpu": vcpu_s * PRICES["vcpu_second"] * 1000,
        "gemini_input": t["input_tokens"] * PRICES["gemini_input_per_million"] / 1000,
        "gemini_output": t["output_tokens"] * PRICES["gemini_output_per_million"] / 1000,
    }
    items["total"] = sum(items.values())
    items["gib_seconds_per_onboarding"] = gib_s
    items["vcpu_seconds_per_onboarding"] = vcpu_s
    return {key: round(value, 4) for key, value in items.items()}


# --- The tables, for the terminal and for docs/scale.md ----------------------------------

MARKER = re.compile(
    r"(<!-- cloud-counts:(?P<name>[a-z-]+) -->\n)(?P<body>.*?)(<!-- /cloud-counts -->)", re.S
)


def _number(value: float) -> str:
    return f"{value:g}" if value == int(value) else f"{value:.2f}".rstrip("0").rstrip(".")


def _markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def tables(results: list[dict[str, Any]]) -> dict[str, str]:
    """The generated parts of docs/scale.md, by marker name, from the counts."""
    by_name = {r["scenario"]: r for r in results}
    names = [r["scenario"] for r in results]
    every = {name: totals(by_name[name]) for name in names}
    out: dict[str, str] = {}

    header = ["per onboarding", *names]
    rows = [
        ["Firestore document reads", *(_number(every[n]["reads"]) for n in names)],
        ["Firestore document writes", *(_number(every[n]["writes"]) for n in names)],
        ["of which to the run's document", *(_number(every[n]["run_doc_writes"]) for n in names)],
        ["Firestore deletes", *(_number(every[n]["deletes"]) for n in names)],
        ["Firestore transactions (commits)", *(_number(every[n]["transactions"]) for n in names)],
        ["Firestore batch commits", *(_number(every[n]["batch_commits"]) for n in names)],
        ["Cloud Tasks tasks created", *(_number(every[n]["tasks"]) for n in names)],
        [
            "Cloud Tasks tasks deleted (moot watchdogs)",
            *(_number(every[n]["tasks_deleted"]) for n in names),
        ],
        ["Cloud Tasks push deliveries", *(_number(every[n]["dispatches"]) for n in names)],
        ["function invocations", *(_number(every[n]["invocations"]) for n in names)],
        ["Gemini input tokens", *(_number(every[n]["input_tokens"]) for n in names)],
        ["Gemini output tokens", *(_number(every[n]["output_tokens"]) for n in names)],
    ]
    out["counts"] = _markdown(header, rows)

    collections = sorted(
        {k for r in results for k in r["firestore"] if k.startswith(("reads.", "writes."))}
        - {"writes.update", "writes.delete", "writes.transform"}
    )
    out["collections"] = _markdown(
        ["per onboarding", *names],
        [
            [
                key.replace(".", " of ", 1),
                *(_number(by_name[n]["firestore"].get(key, 0)) for n in names),
            ]
            for key in collections
        ],
    )

    queues = sorted({q for r in results for q in r["tasks_created"]})
    out["tasks"] = _markdown(
        ["tasks created per onboarding", *names],
        [[q, *(_number(by_name[n]["tasks_created"].get(q, 0)) for n in names)] for q in queues],
    )

    groups = sorted({g for r in results for g in r["invocations"]})
    rows = []
    for group in groups:
        kinds = sorted({k for r in results for k in r["invocations"].get(group, {})})
        for kind in kinds:
            rows.append(
                [
                    f"{group} ({kind})",
                    *(
                        _number(by_name[n]["invocations"].get(group, {}).get(kind, 0))
                        for n in names
                    ),
                ]
            )
    out["invocations"] = _markdown(["invocations per onboarding", *names], rows)

    default = by_name[names[0]]
    memory = function_memory_gib()
    cloud = seconds_at_cloud_latency(default)
    rows = []
    for group in sorted(default["invocation_seconds"]):
        function = "tool-jira" if group == "verification" else group
        gib = memory.get(function, 0.5)
        rows.append(
            [
                group,
                _number(sum(default["invocations"][group].values())),
                f"{default['invocation_seconds'][group]:.3f}",
                f"{cloud[group]:.2f}",
                _number(gib),
                f"{cloud[group] * gib:.2f}",
            ]
        )
    out["seconds"] = _markdown(
        [
            f"function ({names[0]})",
            "invocations",
            "s measured here",
            "s at cloud latencies",
            "GiB",
            "GiB-s",
        ],
        rows,
    )

    tokens = sorted({k for r in results for k in r["tokens"]})
    prompts = default["prompt_chars"]
    out["tokens"] = (
        _markdown(
            ["tokens per onboarding", *names],
            [[k, *(_number(by_name[n]["tokens"].get(k, 0)) for n in names)] for k in tokens],
        )
        + "\nPrompt sizes as sent (system + user text, characters, mean): "
        + ", ".join(f"{kind} {chars:,}" for kind, chars in sorted(prompts.items()))
        + ".\n"
    )

    dollars = {n: dollars_per_1000(by_name[n]) for n in names}
    items = [
        ("Firestore reads", "firestore_reads"),
        ("Firestore writes", "firestore_writes"),
        ("Firestore deletes", "firestore_deletes"),
        ("Cloud Tasks", "tasks"),
        ("function invocations", "invocations"),
        ("function memory (GiB-s)", "memory"),
        ("function CPU (vCPU-s)", "cpu"),
        ("Gemini input", "gemini_input"),
        ("Gemini output", "gemini_output"),
        ("**total**", "total"),
    ]
    out["dollars"] = _markdown(
        ["USD per 1,000 onboardings", *names],
        [[label, *(f"{dollars[n][key]:.4f}" for n in names)] for label, key in items],
    )

    out["ceilings"] = _ceilings(default)
    out["ramp"] = _ramp(every[names[0]])

    if "one-retry" in by_name:
        retry, base = totals(by_name["one-retry"]), every[names[0]]
        labels = {
            "reads": "Firestore reads",
            "writes": "Firestore writes",
            "run_doc_writes": "of which to the run's document",
            "transactions": "Firestore transactions",
            "tasks_billable": "Cloud Tasks billable operations",
            "invocations": "function invocations",
            "input_tokens": "Gemini input tokens",
            "output_tokens": "Gemini output tokens",
        }
        # One fault in the counted batch: the difference over the batch is one retry's.
        batch = by_name["one-retry"]["onboardings"]
        out["retry"] = _markdown(
            ["one retried vendor call adds", "per retry"],
            [
                [label, _number(round((retry[key] - base[key]) * batch, 3))]
                for key, label in labels.items()
            ],
        )
    return out


# Cloud Tasks' own limits per queue (https://cloud.google.com/tasks/docs/quotas).
TASKS_MAX_DISPATCHES_PER_SECOND = 500
TASKS_MAX_CONCURRENT = 5000


def queue_seconds(result: Mapping[str, Any]) -> dict[str, float]:
    """Each queue's seconds of dispatches per onboarding at cloud latencies: its target's
    own, plus its share of the verifications (which ride on the tool's queue)."""
    cloud = seconds_at_cloud_latency(result)
    invocations = result["invocations"]
    verifying = sum(invocations.get("verification", {}).values())
    per_verification = cloud.get("verification", 0.0) / verifying if verifying else 0.0
    found = {}
    for queue, dispatches in result["dispatches"].items():
        calls = sum(invocations.get(queue, {}).values())
        found[queue] = cloud.get(queue, 0.0) + (dispatches - calls) * per_verification
    return found


def _ceilings(result: Mapping[str, Any]) -> str:
    seconds = queue_seconds(result)
    rows = []
    for queue, config in QUEUES.items():
        dispatches = result["dispatches"].get(queue, 0.0)
        busy = seconds.get(queue, 0.0)
        if not dispatches:
            continue
        rows.append(
            [
                queue,
                _number(dispatches),
                f"{busy / dispatches:.2f}",
                f"{_number(config.max_dispatches_per_second)} / {config.max_concurrent_dispatches}",
                f"{config.max_dispatches_per_second / dispatches:.1f}",
                f"{config.max_concurrent_dispatches / busy:.1f}",
                f"{TASKS_MAX_DISPATCHES_PER_SECOND / dispatches:.1f}",
                f"{TASKS_MAX_CONCURRENT / busy:.1f}",
            ]
        )
    return _markdown(
        [
            "queue",
            "dispatches per onboarding",
            "s per dispatch (cloud)",
            "configured rate/s / concurrent",
            "onboardings/s at configured rate",
            "at configured concurrency",
            "at 500/s",
            "at 5,000 concurrent",
        ],
        rows,
    )


RAMP_TARGETS = (1, 5, 10, 25, 50)
RAMP_START_OPS = 500
RAMP_STEP = 1.5
RAMP_MINUTES = 5


def _ramp(total: Mapping[str, float]) -> str:
    ops = total["reads"] + total["writes"] + total["deletes"]
    rows = []
    for target in RAMP_TARGETS:
        needed = target * ops
        steps = max(0, math.ceil(math.log(needed / RAMP_START_OPS, RAMP_STEP))) if needed else 0
        rows.append(
            [
                _number(target),
                f"{needed:,.0f}",
                _number(steps),
                _number(steps * RAMP_MINUTES),
            ]
        )
    return (
        f"Firestore operations per onboarding (reads + writes + deletes): {_number(ops)}.\n\n"
        + _markdown(
            ["onboardings/s", "Firestore ops/s", "50% steps from 500 ops/s", "minutes from cold"],
            rows,
        )
    )


COUNTS_JSON = ROOT / "docs" / "scale-counts.json"


def write_counts(results: list[dict[str, Any]], path: Path = COUNTS_JSON) -> None:
    """The counts docs/scale.md is generated from (durations rounded: they vary run to run)."""
    path.write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")


def read_counts(path: Path = COUNTS_JSON) -> list[dict[str, Any]]:
    return json.loads(path.read_text())


# What varies from run to run (wall time) and so stays out of a comparison of counts.
TIMED = ("invocation_seconds", "dispatch_seconds")


def counts_only(result: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in result.items() if key not in TIMED}


def update_doc(generated: Mapping[str, str], path: Path = DOC) -> None:
    text = path.read_text()

    def replace(match: re.Match[str]) -> str:
        name = match["name"]
        if name not in generated:
            raise SystemExit(f"{path}: no generated table named {name!r}")
        return match[1] + generated[name] + match[4]

    path.write_text(MARKER.sub(replace, text))


def doc_tables(path: Path = DOC) -> dict[str, str]:
    """The generated tables as docs/scale.md has them now."""
    return {m["name"]: m["body"] for m in MARKER.finditer(path.read_text())}


def count_all(
    firestore_host: str, n: int, scenarios: tuple[Scenario, ...] = SCENARIOS
) -> list[dict[str, Any]]:
    """Every scenario's counts; a faulted one after the unfaulted one it varies, whose
    warm-up tells which call of the vendor is the first counted one."""
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="chimera-cloud-counts-") as workdir:
        for scenario in scenarios:
            index = 0
            if scenario.faulted:
                base = next(
                    r
                    for r in results
                    if r["planning"] == scenario.agent_reasoning
                    and r["verification"] == scenario.verify_steps
                )
                index = base["warm_up_vendor_calls"].get(FAULTED_VENDOR, 0)
            results.append(run_scenario(scenario, firestore_host, n, Path(workdir), index))
    return results


def _firestore_emulator() -> str:
    import pytest

    from tests.emulators import emulator

    try:
        return emulator("firestore").host
    except (pytest.skip.Exception, pytest.fail.Exception) as exc:
        raise SystemExit(f"the Firestore emulator cannot run here: {exc}") from None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--onboardings", type=int, default=1, help="per scenario")
    parser.add_argument("--update-doc", action="store_true", help="rewrite docs/scale.md's tables")
    args = parser.parse_args()
    import logging

    logging.basicConfig(level=logging.ERROR)
    results = count_all(_firestore_emulator(), args.onboardings)
    summary = Table(
        "Per onboarding on Firestore and Cloud Tasks (bench/cloud_counts.py)",
        ["scenario", "reads", "writes", "run doc", "txns", "tasks", "invocations", "tokens in/out"],
    )
    for result in results:
        t = totals(result)
        summary.row(
            result["scenario"],
            _number(t["reads"]),
            _number(t["writes"] + t["deletes"]),
            _number(t["run_doc_writes"]),
            _number(t["transactions"]),
            _number(t["tasks"]),
            _number(t["invocations"]),
            f"{_number(t['input_tokens'])}/{_number(t['output_tokens'])}",
        )
    summary.print()
    dollars = Table(
        "USD per 1,000 onboardings",
        ["scenario", "firestore", "tasks", "functions", "gemini", "total"],
    )
    for result in results:
        d = dollars_per_1000(result)
        dollars.row(
            result["scenario"],
            f"{d['firestore_reads'] + d['firestore_writes'] + d['firestore_deletes']:.4f}",
            f"{d['tasks']:.4f}",
            f"{d['invocations'] + d['memory'] + d['cpu']:.4f}",
            f"{d['gemini_input'] + d['gemini_output']:.4f}",
            f"{d['total']:.4f}",
        )
    dollars.print()
    save_results(
        "cloud-counts",
        {
            "command": " ".join(sys.argv),
            "prices": PRICES,
            "assumed_latency_ms": ASSUMED_LATENCY_MS,
            "results": results,
            "dollars_per_1000": {r["scenario"]: dollars_per_1000(r) for r in results},
        },
    )
    if args.update_doc:
        write_counts(results)
        update_doc(tables(read_counts()))
        print(f"(updated {DOC.relative_to(ROOT)} and {COUNTS_JSON.relative_to(ROOT)})")


if __name__ == "__main__":
    main()

"""In-memory fakes of Chimera's ports, for fast tests. They pass the same contract suites."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from shared.errors import Conflict, NotFound
from shared.history import EVENT_LOG_CAP, fold_retries, prunable
from shared.jira_keys import ProjectTaken
from shared.keys import ApiKey
from shared.model import (
    BreakerState,
    Event,
    LlmUsage,
    Rejection,
    RunState,
    StepOutcome,
    Task,
    utcnow,
)
from shared.run_filter import RunFilter, newest_first, status_counts
from shared.state import Pruned, no_tasks
from shared.task_queue import TaskRef


class FakeTaskQueue:
    def __init__(self) -> None:
        self.tasks: dict[str, Task] = {}
        self.cancelled: list[str] = []

    def enqueue(self, task: Task) -> bool:
        if task.name in self.tasks:
            return False
        self.tasks[task.name] = task
        return True

    def on(self, queue: str) -> list[Task]:
        return [t for t in self.tasks.values() if t.queue == queue]

    def cancel(self, task: TaskRef) -> bool:
        found = self.tasks.get(task.name)
        if found is None or found.queue != task.queue:
            return False
        del self.tasks[task.name]
        self.cancelled.append(task.name)
        return True


class FakeStateStore:
    def __init__(
        self, queue: FakeTaskQueue | None = None, *, event_cap: int = EVENT_LOG_CAP
    ) -> None:
        self.queue = queue or FakeTaskQueue()
        self.event_cap = event_cap
        self.runs: dict[str, RunState] = {}
        # Each event under a sequence number, its key when retries are folded.
        self._events: list[tuple[int, Event]] = []
        self._seq = itertools.count()
        self._outcomes: dict[tuple[str, str], StepOutcome] = {}
        self._rejections: list[Rejection] = []
        self._breakers: dict[str, BreakerState] = {}
        self._keys: dict[str, ApiKey] = {}
        self._lock = threading.Lock()

    def _emit(self, tasks: Sequence[Task]) -> None:
        for task in tasks:
            self.queue.enqueue(task)

    def create_run(
        self,
        run: RunState,
        *,
        events: Sequence[Event] = (),
        tasks: Sequence[Task] = (),
        watchdogs: Sequence[Task] = (),
    ) -> tuple[RunState, bool]:
        self._emit(watchdogs)  # before the change, as a store whose queue is elsewhere does
        with self._lock:
            if run.run_id in self.runs:
                return self.runs[run.run_id], False
            stored = run.evolve(version=1, updated_at=utcnow())
            self.runs[run.run_id] = stored
            self._add_events(events)
            self._emit(tasks)
            return stored, True

    def load(self, run_id: str) -> RunState | None:
        return self.runs.get(run_id)

    def transition(
        self,
        run: RunState,
        *,
        expected_version: int,
        events: Sequence[Event] = (),
        tasks: Sequence[Task] = (),
        watchdogs: Sequence[Task] = (),
        outcomes: Sequence[StepOutcome] = (),
        cancelled: Sequence[TaskRef] = (),
    ) -> RunState:
        self._emit(watchdogs)
        with self._lock:
            current = self.runs.get(run.run_id)
            if current is None or current.version != expected_version:
                raise Conflict(f"run {run.run_id} is not at version {expected_version}")
            stored = run.evolve(version=expected_version + 1, updated_at=utcnow())
            self.runs[run.run_id] = stored
            self._add_events(events)
            for outcome in outcomes:
                self._outcomes.setdefault((outcome.run_id, outcome.step_id), outcome)
            for task in cancelled:
                self.queue.cancel(task)
            self._emit(tasks)
            return stored

    def _add_events(self, events: Sequence[Event]) -> None:
        self._events.extend((next(self._seq), e) for e in events)

    def append_event(self, event: Event) -> None:
        with self._lock:
            self._add_events([event])
            keyed = [(seq, e) for seq, e in self._events if e.run_id == event.run_id]
            if len(keyed) <= self.event_cap:
                return
            folding = fold_retries(keyed)
            gone = set(folding.deletes)
            self._events = [
                (seq, folding.writes.get(seq, e)) for seq, e in self._events if seq not in gone
            ]

    def events(self, run_id: str) -> list[Event]:
        return [e for _, e in self._events if e.run_id == run_id]

    def prune(
        self, older_than: datetime, *, limit: int | None = None, dry_run: bool = False
    ) -> Pruned:
        with self._lock:
            old = sorted(
                (r for r in self.runs.values() if prunable(r, older_than)),
                key=lambda r: (r.updated_at, r.run_id),
            )[:limit]
            ids = {r.run_id for r in old}
            pruned = Pruned(
                tuple(r.run_id for r in old),
                events=sum(e.run_id in ids for _, e in self._events),
                ledger=sum(run_id in ids for run_id, _ in self._outcomes),
            )
            if not dry_run:
                for run_id in ids:
                    del self.runs[run_id]
                self._events = [(seq, e) for seq, e in self._events if e.run_id not in ids]
                self._outcomes = {k: o for k, o in self._outcomes.items() if k[0] not in ids}
            return pruned

    def record_outcome(
        self, outcome: StepOutcome, *, then: Callable[[StepOutcome], Sequence[Task]] = no_tasks
    ) -> StepOutcome:
        with self._lock:
            stored = self._outcomes.setdefault((outcome.run_id, outcome.step_id), outcome)
            self._emit(then(stored))
            return stored

    def outcome(self, run_id: str, step_id: str) -> StepOutcome | None:
        return self._outcomes.get((run_id, step_id))

    def outcomes(self, run_id: str) -> dict[str, StepOutcome]:
        return {s: o for (r, s), o in self._outcomes.items() if r == run_id}

    def discard_outcome(self, run_id: str, step_id: str) -> None:
        self._outcomes.pop((run_id, step_id), None)

    def list_runs(self, query: RunFilter | None = None) -> list[RunState]:
        query = query or RunFilter()
        return query.page(newest_first(r for r in self.runs.values() if query.matches(r)))

    def count_runs(self, query: RunFilter | None = None) -> dict[str, int]:
        every = (query or RunFilter()).without_status()
        return status_counts(r for r in self.runs.values() if every.matches(r))

    def recent_runs(self, since: datetime, limit: int = 500) -> list[RunState]:
        recent = [r for r in self.runs.values() if r.updated_at >= since]
        return sorted(recent, key=lambda r: r.updated_at, reverse=True)[:limit]

    def change_mark(self, run_id: str) -> tuple[int, str] | None:
        run = self.runs.get(run_id)
        if run is None:
            return None
        seqs = [seq for seq, e in self._events if e.run_id == run_id]
        return run.version, str(max(seqs, default=-1))

    def run_ids_with_prefix(self, prefix: str, limit: int) -> list[str]:
        return sorted(r for r in self.runs if r.startswith(prefix))[:limit]

    def record_rejection(self, rejection: Rejection) -> None:
        self._rejections.append(rejection)

    def rejections(self, limit: int = 50) -> list[Rejection]:
        return list(reversed(self._rejections))[:limit]

    def breaker(self, name: str) -> BreakerState:
        return self._breakers.get(name) or BreakerState(name=name)

    def save_breaker(self, state: BreakerState, *, expected_version: int) -> bool:
        with self._lock:
            if self.breaker(state.name).version != expected_version:
                return False
            self._breakers[state.name] = state.model_copy(update={"version": expected_version + 1})
            return True

    def create_key(self, key: ApiKey) -> bool:
        with self._lock:
            if key.name in self._keys or any(
                k.key_hash == key.key_hash for k in self._keys.values()
            ):
                return False
            self._keys[key.name] = key
            return True

    def list_keys(self) -> list[ApiKey]:
        return sorted(self._keys.values(), key=lambda k: k.name)

    def key_by_hash(self, key_hash: str) -> ApiKey | None:
        return next((k for k in self._keys.values() if k.key_hash == key_hash), None)

    def revoke_key(self, name: str, at: datetime) -> ApiKey | None:
        with self._lock:
            key = self._keys.get(name)
            if key is not None and key.revoked_at is None:
                key = self._keys[name] = key.model_copy(update={"revoked_at": at})
            return key


class FakeDirectory:
    def __init__(self, companies: dict[str, Any] | None = None, error: Exception | None = None):
        self.companies = companies or {}
        self.error = error
        self.calls: list[str] = []

    def find_company(self, domain: str, *, run_id: str) -> dict[str, Any] | None:
        self.calls.append(domain)
        if self.error:
            raise self.error
        return self.companies.get(domain)


class FakeJira:
    """Keys and names unique on the site, as Jira keeps them (names compared without case).

    `projects` may be filled directly (other people's projects); `others(...)` fills it with
    many at once.
    """

    def __init__(self) -> None:
        self.projects: dict[str, dict[str, Any]] = {}
        self.issues: list[dict[str, Any]] = []
        self.creates = 0
        self.refused: list[tuple[str, str]] = []  # (key, name) of every create Jira refused
        self.fail_next: Exception | None = None
        # Names taken, kept up to date by create_project and rebuilt when a test added projects
        # itself: a site of thousands of projects stays fast.
        self._names: set[str] = set()
        self._names_of = 0

    def others(self, projects: dict[str, str]) -> FakeJira:
        """Add somebody else's projects, key to name."""
        for key, name in projects.items():
            self.projects[key] = {"key": key, "name": name, "description": "not ours"}
        return self

    def _taken_names(self) -> set[str]:
        if self._names_of != len(self.projects):
            self._names = {str(p.get("name", "")).lower() for p in self.projects.values()}
            self._names_of = len(self.projects)
        return self._names

    def find_project(self, key: str) -> dict[str, Any] | None:
        return self.projects.get(key)

    def create_project(
        self,
        *,
        key: str,
        name: str,
        description: str,
        template: str,
        project_type: str,
        lead_account_id: str,
    ) -> dict[str, Any]:
        names = self._taken_names()
        key_taken = key in self.projects
        name_taken = name.lower() in names
        if key_taken or name_taken:
            self.refused.append((key, name))
            raise ProjectTaken(
                "A project with that project key already exists."
                if key_taken
                else "A project with that name already exists.",
                key_taken=key_taken,
                name_taken=name_taken,
            )
        self.creates += 1
        self.projects[key] = {
            "key": key,
            "id": str(10000 + self.creates),
            "name": name,
            "description": description,
            "url": f"https://jira/{key}",
            "lead": lead_account_id,
        }
        names.add(name.lower())
        self._names_of = len(self.projects)
        if self.fail_next:
            error, self.fail_next = self.fail_next, None
            raise error  # done at the vendor, but the answer is lost
        return self.projects[key]

    def find_issues(self, project_key: str, label: str) -> list[dict[str, Any]]:
        if project_key not in self.projects:  # Jira refuses a query naming no project
            raise NotFound(f"no project {project_key}", code="project_not_found")
        return [i for i in self.issues if i["project"] == project_key and label in i["labels"]]

    def create_issues(
        self, *, project_key: str, summaries: list[str], description: str, labels: list[str]
    ) -> list[dict[str, Any]]:
        created = []
        for summary in summaries:
            issue = {
                "key": f"{project_key}-{len(self.issues) + 1}",
                "project": project_key,
                "summary": summary,
                "labels": list(labels),
            }
            self.issues.append(issue)
            created.append(issue)
        return created


class FakeMail:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.fail_after_send: Exception | None = None
        # Indexes of sent messages the vendor accepted and then lost (never found again).
        self.lost: set[int] = set()

    def send(self, **message: Any) -> str:
        self.sent.append(message)
        if self.fail_after_send:
            error, self.fail_after_send = self.fail_after_send, None
            raise error
        return f"msg-{len(self.sent)}"

    def find_sent(self, *, step_key: str) -> str | None:
        found = self.find_message(step_key=step_key)
        return found["message_id"] if found else None

    def find_message(self, *, step_key: str) -> dict[str, str] | None:
        for i, m in enumerate(self.sent):
            if m["custom_args"]["chimera_step"] == step_key and i not in self.lost:
                return {"message_id": f"msg-{i + 1}", "to_email": m["to_email"]}
        return None


class FakeChat:
    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []

    def post_message(
        self, *, channel: str, text: str, blocks: Any, metadata: dict[str, Any]
    ) -> str:
        self.messages.append({"channel": channel, "text": text, "metadata": metadata})
        return f"1700000000.{len(self.messages):06d}"

    def find_message(
        self, *, channel: str, event_type: str, step_key: str, since: Any = None
    ) -> str | None:
        for i, m in enumerate(self.messages):
            if (
                m["channel"] == channel
                and m["metadata"]["event_type"] == event_type
                and m["metadata"]["event_payload"]["step_key"] == step_key
            ):
                return f"1700000000.{i + 1:06d}"
        return None


class FakeLanguageModel:
    def __init__(self, answer: dict[str, Any] | None = None) -> None:
        self.answer = answer or {
            "subject": "Welcome aboard, Acme!",
            "text": "Hi Ada, welcome to our onboarding. We start with a kickoff call.",
            "html": "<p>Hi Ada, welcome to our onboarding. We start with a kickoff call.</p>",
        }
        self.prompts: list[str] = []

    def generate_json(
        self, *, system: str, prompt: str, schema: dict[str, Any], run_id: str
    ) -> tuple[dict[str, Any], LlmUsage]:
        self.prompts.append(prompt)
        return self.answer, LlmUsage(
            model="fake", input_tokens=100, output_tokens=50, cost_usd=0.0001
        )


class ScriptedLanguageModel:
    """Answers each task (the `TASK: name` line of the system prompt) from its own script,
    in order, the last answer repeating; an Exception in a script is raised instead."""

    def __init__(self, scripts: dict[str, list[Any]], usage: tuple[int, int] = (100, 50)) -> None:
        self.scripts = {task: list(answers) for task, answers in scripts.items()}
        self.usage = usage
        self.calls: list[dict[str, Any]] = []

    def generate_json(
        self, *, system: str, prompt: str, schema: dict[str, Any], run_id: str
    ) -> tuple[dict[str, Any], LlmUsage]:
        task = system.split("\n", 1)[0].removeprefix("TASK: ").strip()
        self.calls.append(
            {"task": task, "system": system, "prompt": prompt, "schema": schema, "run_id": run_id}
        )
        script = self.scripts.get(task) or [{}]
        answer = script.pop(0) if len(script) > 1 else script[0]
        if isinstance(answer, Exception):
            raise answer
        tokens_in, tokens_out = self.usage
        return answer, LlmUsage(
            model="fake",
            input_tokens=tokens_in,
            output_tokens=tokens_out,
            cost_usd=(tokens_in * 0.30 + tokens_out * 2.50) / 1_000_000,
        )

    def asked(self, task: str) -> int:
        return sum(call["task"] == task for call in self.calls)


def rsa_key_pair() -> tuple[str, str]:
    """A stand-in for Google's token-signing key: (private PEM, public PEM)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private, public

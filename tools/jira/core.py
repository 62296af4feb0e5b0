"""The client's Jira project, created once per run even when a crash hides the outcome."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from shared.errors import PermanentError
from shared.model import Attempt, StepResult, ToolCall, stable_hash
from shared.registry import JiraProjectArgs

KEY_TAKEN = "project_key_taken"


class JiraPort(Protocol):
    def find_project(self, key: str) -> dict[str, Any] | None: ...

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
        """Raises a PermanentError with code project_key_taken when the key exists."""
        ...

    def find_issues(self, project_key: str, label: str) -> list[dict[str, Any]]: ...

    def create_issues(
        self,
        *,
        project_key: str,
        summaries: Sequence[str],
        description: str,
        labels: Sequence[str],
    ) -> list[dict[str, Any]]:
        """Create issues in one call; their keys, in order."""
        ...


@dataclass(frozen=True)
class ProjectDefaults:
    template: str
    project_type: str
    lead_account_id: str


def run_marker(run_id: str) -> str:
    """Written into the project's description: how a retry knows the project is its own."""
    return f"chimera-run:{run_id}"


def candidate_keys(key: str, tries: int = 9) -> list[str]:
    """The plan's key, then KEY2..KEY9: another client may own the plain initials."""
    return [key] + [f"{key[: 10 - len(str(n))]}{n}" for n in range(2, tries + 1)]


def create_project(
    call: ToolCall, attempt: Attempt, jira: JiraPort, defaults: ProjectDefaults
) -> StepResult:
    """Create the project under the first free candidate key, or adopt our own.

    The candidates are walked in the same order on every attempt, so a retry finds the
    project an earlier attempt created (its description carries this run's marker).
    """
    args = JiraProjectArgs.model_validate(call.args)
    marker = run_marker(call.run_id)
    request = call.request
    description = (
        f"Onboarding of {request.company_name} ({request.domain}).\n"
        f"Goal: {request.goal}\n\n{marker}"
    )
    project, key, existed = None, "", False
    for key in candidate_keys(args.key):
        found = jira.find_project(key) if attempt.may_have_run else None
        if found is not None:
            if _ours(found, marker):
                project, existed = found, True
                break
            continue
        try:
            project = jira.create_project(
                key=key,
                name=args.name,
                description=description,
                template=args.template or defaults.template,
                project_type=defaults.project_type,
                lead_account_id=defaults.lead_account_id,
            )
            break
        except PermanentError as exc:
            if exc.code != KEY_TAKEN:
                raise
            # Made by an attempt of ours whose answer was lost, or somebody else's project.
            found = jira.find_project(key)
            if found is not None and _ours(found, marker):
                project, existed = found, True
                break
    if project is None:
        raise PermanentError(
            f"Jira keys {args.key}..{key} all belong to other projects", code=KEY_TAKEN
        )

    label = "chimera-" + stable_hash(f"{call.run_id}:{call.step_id}", 12)
    known = {i["summary"]: i["key"] for i in jira.find_issues(key, label)} if existed else {}
    missing = [summary for summary in args.kickoff_issues if summary not in known]
    if missing:
        # One call for all of them: fewer calls, fewer chances for a flaky vendor to fail us.
        created = jira.create_issues(
            project_key=key,
            summaries=missing,
            labels=[label],
            description=f"Kickoff task for {request.company_name}.\n\n{marker}",
        )
        known.update(
            (summary, issue["key"]) for summary, issue in zip(missing, created, strict=True)
        )
    issues = [known[summary] for summary in args.kickoff_issues]
    return StepResult(
        output={
            "project_key": key,
            "project_id": str(project.get("id", "")),
            "project_url": project.get("url", ""),
            "issues": issues,
        },
        summary=f"project {key} with {len(issues)} kickoff issues",
    )


def _ours(project: dict[str, Any], marker: str) -> bool:
    return marker in (project.get("description") or "")

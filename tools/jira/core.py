"""The client's Jira project, created once per run even when a crash hides the outcome."""

from __future__ import annotations

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

    def create_issue(
        self, *, project_key: str, summary: str, description: str, labels: list[str]
    ) -> dict[str, Any]: ...


@dataclass(frozen=True)
class ProjectDefaults:
    template: str
    project_type: str
    lead_account_id: str


def run_marker(run_id: str) -> str:
    """Written into the project's description: how a retry knows the project is its own."""
    return f"chimera-run:{run_id}"


def create_project(
    call: ToolCall, attempt: Attempt, jira: JiraPort, defaults: ProjectDefaults
) -> StepResult:
    args = JiraProjectArgs.model_validate(call.args)
    marker = run_marker(call.run_id)
    request = call.request
    existed = attempt.may_have_run and _ours(jira.find_project(args.key), marker, args.key)
    project = existed or None
    if project is None:
        description = (
            f"Onboarding of {request.company_name} ({request.domain}).\n"
            f"Goal: {request.goal}\n\n{marker}"
        )
        try:
            project = jira.create_project(
                key=args.key,
                name=args.name,
                description=description,
                template=args.template or defaults.template,
                project_type=defaults.project_type,
                lead_account_id=defaults.lead_account_id,
            )
        except PermanentError as exc:
            if exc.code != KEY_TAKEN:
                raise
            # Made by an attempt of ours whose answer was lost, or somebody else's project.
            project = _ours(jira.find_project(args.key), marker, args.key)
            existed = project

    label = "chimera-" + stable_hash(f"{call.run_id}:{call.step_id}", 12)
    known = {i["summary"]: i for i in jira.find_issues(args.key, label)} if existed else {}
    issues = []
    for summary in args.kickoff_issues:
        issue = known.get(summary) or jira.create_issue(
            project_key=args.key,
            summary=summary,
            description=f"Kickoff task for {request.company_name}.\n\n{marker}",
            labels=[label],
        )
        issues.append(issue["key"])
    return StepResult(
        output={
            "project_key": args.key,
            "project_id": str(project.get("id", "")),
            "project_url": project.get("url", ""),
            "issues": issues,
        },
        summary=f"project {args.key} with {len(issues)} kickoff issues",
    )


def _ours(project: dict[str, Any] | None, marker: str, key: str) -> dict[str, Any] | None:
    if project is None:
        return None
    if marker not in (project.get("description") or ""):
        raise PermanentError(f"Jira project key {key} belongs to another project", code=KEY_TAKEN)
    return project

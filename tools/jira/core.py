"""The client's Jira project, created once per run even when a crash hides the outcome."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from shared.errors import NotFound, PermanentError, VendorUnavailable
from shared.jira_keys import (
    KEY_TAKEN,
    NAME_TAKEN,
    ProjectTaken,
    candidate_keys,
    candidate_names,
)
from shared.model import (
    Attempt,
    StepResult,
    ToolCall,
    VerificationResult,
    VerificationSubject,
    stable_hash,
)
from shared.registry import JiraProjectArgs
from shared.verification import mismatch, verified

__all__ = [
    "KEY_TAKEN",
    "NAME_TAKEN",
    "JiraPort",
    "ProjectDefaults",
    "create_project",
    "verify_project",
]
PROJECT_NOT_FOUND = "project_not_found"


class JiraPort(Protocol):
    def find_project(self, key: str) -> dict[str, Any] | None:
        """The project (key, id, name, description, url, lead: its account id), or None."""
        ...

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
        """Raises a PermanentError with code project_key_taken when the key exists, or
        project_name_taken when only the name does; a shared.jira_keys.ProjectTaken says
        whether the name was taken as well as the key."""
        ...

    def find_issues(self, project_key: str, label: str) -> list[dict[str, Any]]:
        """Issues (key, summary) carrying the label; NotFound (project_not_found) when the
        project does not exist."""
        ...

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


def create_project(
    call: ToolCall, attempt: Attempt, jira: JiraPort, defaults: ProjectDefaults
) -> StepResult:
    """Create the project under the first free candidate key and name, or adopt our own.

    The candidates are walked in the same order on every attempt, so a retry finds the
    project an earlier attempt created (its description carries this run's marker); after the
    plain key and name every candidate is this run's own, so another client never blocks it.
    """
    args = JiraProjectArgs.model_validate(call.args)
    marker = run_marker(call.run_id)
    request = call.request
    description = (
        f"Onboarding of {request.company_name} ({request.domain}).\n"
        f"Goal: {request.goal}\n\n{marker}"
    )

    def create(key: str, name: str) -> dict[str, Any]:
        return jira.create_project(
            key=key,
            name=name,
            description=description,
            template=args.template or defaults.template,
            project_type=defaults.project_type,
            lead_account_id=defaults.lead_account_id,
        )

    project, key, existed = _first_free(
        candidate_keys(args.key, call.run_id),
        candidate_names(args.name, call.run_id),
        create,
        jira.find_project,
        marker,
        look_first=attempt.may_have_run,
    )

    label = issue_label(call.run_id, call.step_id)
    known = {i["summary"]: i["key"] for i in jira.find_issues(key, label)} if existed else {}
    missing = [summary for summary in args.kickoff_issues if summary not in known]
    if missing:
        # One call for all of them: fewer calls, fewer chances for a flaky vendor to fail us.
        try:
            created = jira.create_issues(
                project_key=key,
                summaries=missing,
                labels=[label],
                description=f"Kickoff task for {request.company_name}.\n\n{marker}",
            )
        except NotFound as exc:
            if exc.code != PROJECT_NOT_FOUND:
                raise
            # Jira said it created the project, then does not know it: it lost it. The next
            # attempt looks first, finds no project of ours and creates it again.
            raise VendorUnavailable(
                f"Jira lost project {key} right after creating it", code="project_lost"
            ) from None
        known.update(
            (summary, issue["key"]) for summary, issue in zip(missing, created, strict=True)
        )
    issues = [known[summary] for summary in args.kickoff_issues]
    return StepResult(
        output={
            "project_key": key,
            "project_id": str(project.get("id", "")),
            "project_name": project.get("name", ""),
            "project_url": project.get("url", ""),
            "issues": issues,
        },
        summary=f"project {key} ({project.get('name', '')}) with {len(issues)} kickoff issues",
    )


def issue_label(run_id: str, step_id: str) -> str:
    """The label of the step's kickoff issues: the same for every attempt and generation."""
    return "chimera-" + stable_hash(f"{run_id}:{step_id}", 12)


def verify_project(
    subject: VerificationSubject, jira: JiraPort, lead_account_id: str = ""
) -> VerificationResult:
    """The project the step answered exists, carries this run's marker (and the configured
    lead), and holds every kickoff issue the plan asked for."""
    args = JiraProjectArgs.model_validate(subject.args)
    key = str(subject.output.get("project_key") or "")
    if not key:
        return mismatch("the step's output names no project")
    project = jira.find_project(key)
    if project is None:
        return mismatch(f"project {key} does not exist")
    if not _ours(project, run_marker(subject.run_id)):
        return mismatch(f"project {key} does not carry this run's marker")
    if lead_account_id and project.get("lead") != lead_account_id:
        return mismatch(
            f"project {key} is led by {project.get('lead') or 'nobody'}, not {lead_account_id}"
        )
    try:
        found = jira.find_issues(key, issue_label(subject.run_id, subject.step_id))
    except NotFound:
        return mismatch(f"project {key} cannot be searched: Jira does not know it")
    summaries = {issue.get("summary") for issue in found}
    missing = [summary for summary in args.kickoff_issues if summary not in summaries]
    if missing:
        return mismatch(
            f"{len(missing)} of {len(args.kickoff_issues)} kickoff issues missing in {key}, "
            f"first {missing[0]!r}"
        )
    return verified(f"project {key} with its {len(args.kickoff_issues)} kickoff issues")


def _first_free(
    keys: Sequence[str],
    names: Sequence[str],
    create: Callable[[str, str], dict[str, Any]],
    find: Callable[[str], dict[str, Any] | None],
    marker: str,
    *,
    look_first: bool,
) -> tuple[dict[str, Any], str, bool]:
    """The project under the first key Jira lets us have, and whether it is ours from before.

    A taken key moves to the next key, a taken name to the next name (under the same key); a
    retry (`look_first`) or a taken key first checks whether the project there is ours.
    """
    name_at = 0
    for key in keys:
        found = find(key) if look_first else None
        if found is not None:
            if _ours(found, marker):
                return found, key, True
            continue
        while True:
            try:
                return create(key, names[name_at]), key, False
            except PermanentError as exc:
                if exc.code not in (KEY_TAKEN, NAME_TAKEN):
                    raise
                key_taken = exc.code == KEY_TAKEN
                name_taken = not key_taken or (isinstance(exc, ProjectTaken) and exc.name_taken)
            if key_taken:
                # Made by an attempt of ours whose answer was lost, or somebody else's project.
                found = find(key)
                if found is not None and _ours(found, marker):
                    return found, key, True
            if name_taken:
                name_at += 1
                if name_at == len(names):
                    raise PermanentError(
                        f"Jira project names {names[0]!r}.. all belong to other projects",
                        code=NAME_TAKEN,
                    )
            if key_taken:
                break
    raise PermanentError(
        f"Jira keys {keys[0]}..{keys[-1]} all belong to other projects", code=KEY_TAKEN
    )


def _ours(project: dict[str, Any], marker: str) -> bool:
    return marker in (project.get("description") or "")

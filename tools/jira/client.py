"""Jira Cloud through the `jira` library: the only place Jira is called."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import requests
from jira import JIRA, JIRAError
from requests.adapters import BaseAdapter

from shared.errors import BadVendorReply, ChimeraError, InvalidInput, NotFound
from shared.jira_keys import ProjectTaken
from shared.settings import Settings
from shared.traced_http import trace_session
from shared.vendor_errors import answer_message, error_for_status, transport_error
from shared.vendor_requests import counted_request

logger = logging.getLogger(__name__)

ISSUE_TYPE = "Task"
SEARCH_LIMIT = 50
T = TypeVar("T")


class ProjectKeyTaken(ProjectTaken):
    """Jira already has a project with this key (ours from an earlier try, or someone else's);
    `name_taken` says whether the name is taken too."""

    def __init__(self, message: str, *, name_taken: bool = False) -> None:
        super().__init__(message, key_taken=True, name_taken=name_taken)


class ProjectNameTaken(ProjectTaken):
    """Jira already has a project with this name (names are unique on a site, like keys)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, key_taken=False, name_taken=True)


class JiraClient:
    """Projects and issues. Built once per instance; the library's own retries are off."""

    def __init__(self, settings: Settings, *, adapter: BaseAdapter | None = None) -> None:
        """`adapter` replaces the library session's HTTP transport (a test's recorder)."""
        self._server = settings.vendor_url("jira")
        # get_server_info=False: constructing must not call Jira (nothing connects at startup).
        self._jira = JIRA(
            server=self._server,
            basic_auth=(settings.jira_user, settings.jira_token),
            get_server_info=False,
            max_retries=0,
            timeout=settings.vendor_timeout,
        )
        # Chimera targets Jira Cloud. The library learns that from serverInfo, which we skip;
        # without it, it searches through /rest/api/2/search, which Cloud removed (410 Gone
        # since 2025, CHANGE-2046), instead of the token-paged /rest/api/2/search/jql.
        self._jira.deploymentType = "Cloud"
        if adapter is not None:
            self._jira._session.mount("https://", adapter)
            self._jira._session.mount("http://", adapter)
        trace_session(self._jira._session, "jira")
        self._lead_account_id = settings.jira_lead_account_id

    def find_project(self, key: str) -> dict[str, Any] | None:
        """The project with this key, or None."""
        try:
            raw = self._call("project.get", lambda: self._jira.project(key).raw)
        except NotFound:
            return None
        return self._project_dict(raw, fallback_key=key)

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
        """Create a project; ProjectKeyTaken when the key exists, ProjectNameTaken when only
        the name does.

        Posts the payload itself instead of `JIRA.create_project`, which always sends an empty
        description, sends the Server-only `lead` unless it fetched server info first, and
        first reads permission, security and category schemes (admin-only, and it raises
        RuntimeError on sites without an issue security scheme).
        """
        lead = lead_account_id or self._lead_account_id or self._my_account_id()
        payload = {
            "key": key,
            "name": name,
            "description": description,
            "projectTypeKey": project_type,
            "projectTemplateKey": template,
            "leadAccountId": lead,
            "assigneeType": "PROJECT_LEAD",
        }
        try:
            created = self._call("project.create", lambda: self._post_json("project", payload))
        except _RejectedFields as exc:
            # Taken is something another key or name can fix; anything else Jira refused is not.
            errors = exc.field_errors
            key_taken = _taken(errors.get("projectKey"))
            name_taken = _taken(errors.get("projectName"))
            if set(errors) - {"projectKey", "projectName"}:
                raise
            if key_taken and (name_taken or "projectName" not in errors):
                raise ProjectKeyTaken(
                    f"Jira project key {key} is already taken"
                    + (", and so is the name" if name_taken else ""),
                    name_taken=name_taken,
                ) from None
            if name_taken and "projectKey" not in errors:
                raise ProjectNameTaken(f"Jira project name {name!r} is already taken") from None
            raise
        if not isinstance(created, dict) or not created.get("key"):
            raise BadVendorReply("Jira created a project but did not answer its key")
        return {
            "key": created["key"],
            "id": str(created.get("id", "")),
            "name": name,
            "description": description,
            "url": self._browse_url(created["key"]),
        }

    def find_issues(self, project_key: str, label: str) -> list[dict[str, Any]]:
        """Issues in the project carrying the label, oldest first (for idempotency lookups).

        Raises NotFound when the project does not exist (Jira rejects the query then).
        """
        jql = (
            f"project = {_jql_string(project_key)} AND labels = {_jql_string(label)}"
            " ORDER BY created ASC"
        )
        found = self._call(
            "issue.search",
            lambda: self._jira.enhanced_search_issues(
                jql, maxResults=SEARCH_LIMIT, fields="summary,labels", json_result=True
            ),
        )
        issues = found.get("issues") if isinstance(found, dict) else None
        if not isinstance(issues, list):
            raise BadVendorReply("Jira search answered without an issues list")
        return [
            {"key": issue["key"], "summary": (issue.get("fields") or {}).get("summary", "")}
            for issue in issues
            if isinstance(issue, dict) and issue.get("key")
        ]

    def create_issues(
        self,
        *,
        project_key: str,
        summaries: Sequence[str],
        description: str,
        labels: Sequence[str],
    ) -> list[dict[str, Any]]:
        """Create Tasks in one bulk call; returns each one's key and browse URL, in order."""
        field_list = [
            {
                # Dicts, not bare strings: a bare key or type name makes the library look them
                # up first (GET project/{key}, and the project's issue types).
                "project": {"key": project_key},
                "issuetype": {"name": ISSUE_TYPE},
                "summary": summary,
                "description": description,
                "labels": list(labels),
            }
            for summary in summaries
        ]
        results = self._call(
            "issue.bulk_create",
            lambda: self._jira.create_issues(field_list=field_list, prefetch=False),
        )
        created = []
        for result in results:
            if result.get("status") != "Success":
                error = result.get("error")
                if isinstance(error, dict) and set(error) == {"project"}:
                    # Only "Specify a valid project ID or key": the project is not there.
                    raise NotFound(
                        f"Jira refused an issue: {error['project']}", code="project_not_found"
                    )
                raise InvalidInput(f"Jira refused an issue: {error}")
            key = getattr(result.get("issue"), "key", None)
            if not key:
                raise BadVendorReply("Jira created an issue but did not answer its key")
            created.append({"key": key, "url": self._browse_url(key)})
        return created

    # -- plumbing ---------------------------------------------------------------------------

    def _my_account_id(self) -> str:
        # GET /myself, cached by the library for the life of this client.
        account_id = self._call("myself", lambda: self._jira.current_user("accountId"))
        if not account_id:
            raise BadVendorReply("Jira did not say who the API user is")
        return str(account_id)

    def _post_json(self, path: str, payload: dict[str, Any]) -> Any:
        # The library's session: its auth, headers, timeout and (disabled) retries.
        response = self._jira._session.post(self._jira._get_url(path), data=json.dumps(payload))
        return response.json()

    def _project_dict(self, raw: Any, *, fallback_key: str) -> dict[str, Any]:
        if not isinstance(raw, dict) or not raw.get("key"):
            raise BadVendorReply("Jira answered a project without a key")
        return {
            "key": raw["key"],
            "id": str(raw.get("id", "")),
            "name": raw.get("name", ""),
            "description": raw.get("description") or "",
            "url": self._browse_url(raw.get("key", fallback_key)),
            "lead": str((raw.get("lead") or {}).get("accountId") or ""),
        }

    def _browse_url(self, key: str) -> str:
        return f"{self._server}/browse/{key}"

    @counted_request  # each request weighs in the vendor's circuit breaker
    def _call(self, action: str, work: Callable[[], T]) -> T:
        """Run one library call, turning every failure into a shared error."""
        try:
            result = work()
        except JIRAError as exc:
            raise _error_for(action, exc) from None
        except ValueError:
            # Includes requests' JSONDecodeError: a 2xx whose body is not JSON.
            raise BadVendorReply(f"Jira {action} answered a body that is not JSON") from None
        except KeyError:
            raise BadVendorReply(f"Jira {action} answered an unexpected shape") from None
        except requests.RequestException as exc:
            raise transport_error("Jira", action, exc, timeouts=(requests.Timeout,)) from None
        logger.debug("jira %s ok", action)
        return result


class _RejectedFields(InvalidInput):
    """Jira's 400, keeping its per-field errors so create_project can spot a taken key."""

    def __init__(self, message: str, field_errors: dict[str, str]) -> None:
        super().__init__(message)
        self.field_errors = field_errors


def _error_for(action: str, exc: JIRAError) -> ChimeraError:
    """Jira's own 400s (a project the search names does not exist, fields it refused), else the
    shared map."""
    status = exc.status_code or 0
    response = exc.response if isinstance(exc.response, requests.Response) else None
    body = _json_body(response)
    if status == 400:
        message = answer_message("Jira", action, status, body, reason=exc.text or "")
        messages = body.get("errorMessages") if isinstance(body, dict) else None
        if action == "issue.search" and any(
            "does not exist for the field 'project'" in str(m)
            for m in (messages if isinstance(messages, list) else [])
        ):
            return NotFound(message, code="project_not_found")
        return _RejectedFields(message, _field_errors(body))
    return error_for_status(
        "Jira",
        action,
        status,
        body,
        response.headers if response is not None else None,
        reason=exc.text or "",
    )


def _json_body(response: requests.Response | None) -> Any:
    """Jira's error body, {"errorMessages": [...], "errors": {field: message}}, or None."""
    if response is None:
        return None
    try:
        return response.json()
    except ValueError:
        return None


def _field_errors(body: Any) -> dict[str, str]:
    errors = body.get("errors") if isinstance(body, dict) else None
    if not isinstance(errors, dict):
        return {}
    return {str(k): str(v) for k, v in errors.items()}


def _taken(field_error: str | None) -> bool:
    # Jira Cloud: "A project with that project key already exists." and "A project with that
    # name already exists."
    text = field_error or ""
    return "already exists" in text or "already in use" in text


def _jql_string(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'

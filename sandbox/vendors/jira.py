"""Jira Cloud REST v2, as the `jira` library calls it: projects, issues, JQL search."""

from __future__ import annotations

import base64
import json
import re
import sqlite3
from datetime import UTC, datetime
from typing import Any

from sandbox.calls import Call, Reply, Route, json_reply
from sandbox.vendors import jira_json as shapes
from sandbox.vendors import jira_search as search
from sandbox.vendors import jira_site as site
from sandbox.vendors.jira_search import errors_reply as _errors
from sandbox.vendors.jira_search import requested_fields as _requested_fields
from shared.sqlite_db import SqliteDatabase

API = "/rest/api/<any('2', 'latest'):api>"
RUN_MARKER_RE = re.compile(r"chimera-run:([A-Za-z0-9][A-Za-z0-9_.:-]*)")
PROJECT_KEY_RE = re.compile(r"^[A-Z][A-Z0-9]+$")
PROJECT_TYPES = ("software", "business", "service_desk")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jira_projects (
    id INTEGER PRIMARY KEY,
    key TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    description TEXT NOT NULL,
    lead TEXT NOT NULL,
    project_type TEXT NOT NULL,
    template TEXT,
    url TEXT,
    next_issue INTEGER NOT NULL DEFAULT 1,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS jira_issues (
    id INTEGER PRIMARY KEY,
    key TEXT NOT NULL UNIQUE,
    project_id INTEGER NOT NULL,
    summary TEXT NOT NULL,
    description TEXT,
    labels TEXT NOT NULL,
    issuetype TEXT NOT NULL,
    reporter TEXT NOT NULL,
    created_at TEXT NOT NULL
);
"""


class JiraApi:
    """Projects and issues live in SQLite, so lookups work across restarts and processes."""

    name = "jira"
    secret_keys: tuple[str, ...] = ()

    def __init__(self, db: SqliteDatabase) -> None:
        self._db = db
        self._db.ensure_schema(_SCHEMA)

    def routes(self) -> list[Route]:
        return [
            Route(f"{API}/serverInfo", ("GET",), "serverInfo", site.server_info),
            Route(f"{API}/myself", ("GET",), "myself", site.myself),
            Route(f"{API}/user", ("GET",), "user.get", site.user),
            Route(f"{API}/user/search", ("GET",), "user.search", site.user_search),
            Route(f"{API}/field", ("GET",), "field.list", site.fields),
            Route(f"{API}/issuetype", ("GET",), "issuetype.list", site.issue_types),
            Route(f"{API}/permissionscheme", ("GET",), "permissionscheme.list", site.schemes),
            Route(
                f"{API}/issuesecurityschemes",
                ("GET",),
                "issuesecurityschemes.list",
                site.security_schemes,
            ),
            Route(f"{API}/projectCategory", ("GET",), "projectCategory.list", site.categories),
            Route(f"{API}/project", ("GET",), "project.list", self.list_projects),
            Route(f"{API}/project", ("POST",), "project.create", self.create_project),
            Route(f"{API}/project/<key>", ("GET",), "project.get", self.get_project),
            Route(f"{API}/issue", ("POST",), "issue.create", self.create_issue),
            Route(f"{API}/issue/bulk", ("POST",), "issue.bulk_create", self.create_issues),
            Route(f"{API}/issue/<key>", ("GET",), "issue.get", self.get_issue),
            # Removed from Jira Cloud (CHANGE-2046): it answers 410 there, so here too.
            Route(f"{API}/search", ("GET", "POST"), "issue.search.removed", self.removed_search),
            Route(f"{API}/search/jql", ("GET", "POST"), "issue.search", self.search_jql),
        ]

    # -- the sandbox's contract -----------------------------------------------------------

    def authenticate(self, call: Call) -> Reply | None:
        scheme, _, credentials = call.header("Authorization").partition(" ")
        if scheme.lower() == "basic":
            try:
                user, _, token = base64.b64decode(credentials).decode().partition(":")
            except ValueError:
                user, token = "", ""
            if user and token:
                return None
        elif scheme.lower() == "bearer" and credentials.strip():
            return None
        return _errors(
            401,
            ["You are not authenticated. Authentication required to perform this operation."],
        )

    def run_id(self, call: Call) -> str | None:
        body = call.body if isinstance(call.body, dict) else {}
        fields = body.get("fields")
        if not isinstance(fields, dict):
            updates = body.get("issueUpdates")
            first = updates[0] if isinstance(updates, list) and updates else {}
            fields = first.get("fields") if isinstance(first, dict) else None
            fields = fields if isinstance(fields, dict) else {}
        for text in (body.get("description"), fields.get("description")):
            if isinstance(text, str) and (match := RUN_MARKER_RE.search(text)):
                return match.group(1)
        return None

    def error_reply(self, status: int) -> Reply:
        message = "Internal server error" if status == 500 else "Service Unavailable"
        return _errors(status, [message])

    def not_found_reply(self, path: str) -> Reply:
        return _errors(404, [f"null for uri: {path}"])

    def rate_limited_reply(self) -> Reply:
        reply = _errors(429, ["Rate limit exceeded."])
        reply.headers["Retry-After"] = "1"
        return reply

    # -- instance and users ---------------------------------------------------------------

    # -- projects -------------------------------------------------------------------------

    def list_projects(self, call: Call) -> Reply:
        rows = self._db.connection().execute("SELECT * FROM jira_projects ORDER BY id").fetchall()
        return json_reply(200, [shapes.project(call.base_url, row) for row in rows])

    def get_project(self, call: Call) -> Reply:
        row = self._find_project(call.args["key"])
        if row is None:
            return _errors(404, [f"No project could be found with key '{call.args['key']}'."])
        return json_reply(200, shapes.project(call.base_url, row))

    def create_project(self, call: Call) -> Reply:
        body = call.body
        if call.body_malformed or not isinstance(body, dict):
            return _errors(400, ["Unrecognized request body: expected a JSON object."])
        key = body.get("key")
        name = body.get("name")
        lead = body.get("leadAccountId") or body.get("lead")
        project_type = body.get("projectTypeKey")
        description = body.get("description") or ""
        problems: dict[str, str] = {}
        if not isinstance(key, str) or not key:
            problems["projectKey"] = "You must specify a valid project key."
        elif len(key) > 10:
            problems["projectKey"] = "The project key must not exceed 10 characters in length."
        elif not PROJECT_KEY_RE.match(key):
            problems["projectKey"] = (
                "Project keys must start with an uppercase letter, followed by one or more "
                "uppercase alphanumeric characters."
            )
        if not isinstance(name, str) or not name.strip():
            problems["projectName"] = "You must specify a valid project name."
        elif len(name) > 80:
            problems["projectName"] = "The project name must not exceed 80 characters in length."
        if not isinstance(lead, str) or not lead:
            problems["projectLead"] = "You must specify a valid project lead."
        if project_type not in PROJECT_TYPES:
            problems["projectType"] = f"The project type '{project_type}' is not valid."
        if not isinstance(description, str):
            problems["description"] = "The description must be a string."
        with self._db.transaction() as conn:
            if "projectKey" not in problems and _project_row(conn, "key", key):
                problems["projectKey"] = "A project with that project key already exists."
            if "projectName" not in problems and _name_taken(conn, str(name)):
                problems["projectName"] = "A project with that name already exists."
            if problems:
                return _errors(400, [], problems)
            (project_id,) = conn.execute(
                "SELECT COALESCE(MAX(id), 9999) + 1 FROM jira_projects"
            ).fetchone()
            if call.drop:
                return _dropped(_project_created(call, project_id, key))
            conn.execute(
                "INSERT INTO jira_projects (id, key, name, description, lead, project_type,"
                " template, url, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    project_id,
                    key,
                    name,
                    description,
                    lead,
                    project_type,
                    body.get("projectTemplateKey"),
                    body.get("url") or None,
                    _now_iso(),
                ),
            )
        return _project_created(call, project_id, key)

    def _find_project(self, key_or_id: str) -> sqlite3.Row | None:
        column = "id" if key_or_id.isdigit() else "key"
        return _project_row(self._db.connection(), column, key_or_id)

    # -- issues ---------------------------------------------------------------------------

    def create_issue(self, call: Call) -> Reply:
        body = call.body
        if (
            call.body_malformed
            or not isinstance(body, dict)
            or not isinstance(body.get("fields"), dict)
        ):
            return _errors(400, ['Can not deserialize the request: expected {"fields": {...}}.'])
        with self._db.transaction() as conn:
            created, problems = self._insert_issue(conn, call, body["fields"])
        if created is None:
            return _errors(400, [], problems)
        reply = json_reply(201, created)
        return _dropped(reply) if call.drop else reply

    def create_issues(self, call: Call) -> Reply:
        """POST /issue/bulk: each update is created or refused on its own, as Jira does."""
        body = call.body
        updates = body.get("issueUpdates") if isinstance(body, dict) else None
        if call.body_malformed or not isinstance(updates, list):
            return _errors(400, ['Can not deserialize the request: expected "issueUpdates".'])
        issues, errors = [], []
        with self._db.transaction() as conn:
            for number, update in enumerate(updates):
                fields = update.get("fields") if isinstance(update, dict) else None
                created, problems = (
                    self._insert_issue(conn, call, fields)
                    if isinstance(fields, dict)
                    else (None, {"fields": "expected an object"})
                )
                if created is None:
                    errors.append(
                        {
                            "status": 400,
                            "failedElementNumber": number,
                            "elementErrors": {"errorMessages": [], "errors": problems},
                        }
                    )
                else:
                    issues.append(created)
        reply = json_reply(201 if issues else 400, {"issues": issues, "errors": errors})
        return _dropped(reply) if call.drop and issues else reply

    def _insert_issue(
        self, conn: sqlite3.Connection, call: Call, fields: dict[str, Any]
    ) -> tuple[dict[str, Any] | None, dict[str, str]]:
        problems: dict[str, str] = {}
        project_ref = fields.get("project")
        project_key = None
        if isinstance(project_ref, dict):
            project_key = project_ref.get("key") or (
                str(project_ref["id"]) if project_ref.get("id") else None
            )
        issue_type = _match_issue_type(fields.get("issuetype"))
        summary = fields.get("summary")
        labels = fields.get("labels", [])
        description = fields.get("description")
        if not project_key:
            problems["project"] = "Specify a valid project ID or key"
        if issue_type is None:
            problems["issuetype"] = "The issue type selected is invalid."
        if not isinstance(summary, str) or not summary.strip():
            problems["summary"] = "You must specify a summary of the issue."
        elif len(summary) > 255:
            problems["summary"] = "Summary must be less than 255 characters."
        if not isinstance(labels, list) or not all(isinstance(label, str) for label in labels):
            problems["labels"] = "Labels must be a list of strings."
        else:
            for label in labels:
                if not label or any(ch.isspace() for ch in label):
                    problems["labels"] = f"The label '{label}' contains spaces which is invalid."
        if description is not None and not isinstance(description, str):
            problems["description"] = "Operation value must be a string"
        project = None
        if project_key:
            column = "id" if str(project_key).isdigit() else "key"
            project = _project_row(conn, column, str(project_key))
            if project is None:
                problems["project"] = "Specify a valid project ID or key"
        if problems or project is None or issue_type is None:
            return None, problems
        number = project["next_issue"]
        (issue_id,) = conn.execute(
            "SELECT COALESCE(MAX(id), 10000) + 1 FROM jira_issues"
        ).fetchone()
        key = f"{project['key']}-{number}"
        if call.drop:  # answered with a key, but the issue is never kept
            return {
                "id": str(issue_id),
                "key": key,
                "self": f"{call.base_url}/rest/api/2/issue/{issue_id}",
            }, {}
        conn.execute(
            "UPDATE jira_projects SET next_issue = next_issue + 1 WHERE id = ?",
            (project["id"],),
        )
        conn.execute(
            "INSERT INTO jira_issues (id, key, project_id, summary, description, labels,"
            " issuetype, reporter, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                issue_id,
                key,
                project["id"],
                summary,
                description,
                json.dumps(labels),
                issue_type[1],
                site.caller(call),
                _now_iso(),
            ),
        )
        return {
            "id": str(issue_id),
            "key": key,
            "self": f"{call.base_url}/rest/api/2/issue/{issue_id}",
        }, {}

    def get_issue(self, call: Call) -> Reply:
        key = call.args["key"]
        column = "i.id" if key.isdigit() else "i.key"
        row = (
            self._db.connection()
            .execute(f"{search.ISSUE_SELECT} WHERE {column} = ?", (key,))
            .fetchone()
        )
        if row is None:
            return _errors(404, ["Issue does not exist or you do not have permission to see it."])
        return json_reply(200, shapes.issue(call.base_url, row, _requested_fields(call)))

    def search_jql(self, call: Call) -> Reply:
        """Jira Cloud's token-paged search, which replaced /search there."""
        return search.search_jql(self._db.connection(), call)

    def removed_search(self, call: Call) -> Reply:
        return _errors(
            410,
            [
                "The requested API has been removed. Please migrate to the /rest/api/3/search/jql"
                " API. A full migration guideline is available at"
                " https://developer.atlassian.com/changelog/#CHANGE-2046"
            ],
        )


def _project_created(call: Call, project_id: int, key: Any) -> Reply:
    return json_reply(
        201,
        {"self": f"{call.base_url}/rest/api/2/project/{project_id}", "id": project_id, "key": key},
    )


def _dropped(reply: Reply) -> Reply:
    reply.dropped = True
    return reply


def _project_row(conn: sqlite3.Connection, column: str, value: Any) -> sqlite3.Row | None:
    assert column in ("id", "key")  # never interpolate anything else into SQL
    return conn.execute(f"SELECT * FROM jira_projects WHERE {column} = ?", (value,)).fetchone()


def _name_taken(conn: sqlite3.Connection, name: str) -> bool:
    """Names are unique on a Jira site, compared as Java's equalsIgnoreCase does: ZÜRICH and
    zürich are the same name (SQLite's lower() folds ASCII only)."""
    conn.create_function("casefold", 1, str.casefold, deterministic=True)
    found = conn.execute(
        "SELECT 1 FROM jira_projects WHERE casefold(name) = ? LIMIT 1", (name.casefold(),)
    ).fetchone()
    return found is not None


def _match_issue_type(ref: Any) -> tuple[str, str, str, bool] | None:
    if not isinstance(ref, dict):
        return None
    for entry in shapes.ISSUE_TYPES:
        if (
            str(ref.get("id", "")) == entry[0]
            or str(ref.get("name", "")).lower() == entry[1].lower()
        ):
            return entry
    return None


def _now_iso() -> str:
    return datetime.now(UTC).isoformat()

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
from sandbox.vendors.jql import Clause, JqlError, Query, parse_jql
from shared.sqlite_db import SqliteDatabase

API = "/rest/api/<any('2', 'latest'):api>"
RUN_MARKER_RE = re.compile(r"chimera-run:([A-Za-z0-9][A-Za-z0-9_.:-]*)")
PROJECT_KEY_RE = re.compile(r"^[A-Z][A-Z0-9]+$")
PROJECT_TYPES = ("software", "business", "service_desk")
SEARCH_LIMIT = 100

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
            Route(f"{API}/serverInfo", ("GET",), "serverInfo", self.server_info),
            Route(f"{API}/myself", ("GET",), "myself", self.myself),
            Route(f"{API}/user", ("GET",), "user.get", self.user),
            Route(f"{API}/user/search", ("GET",), "user.search", self.user_search),
            Route(f"{API}/field", ("GET",), "field.list", self.fields),
            Route(f"{API}/issuetype", ("GET",), "issuetype.list", self.issue_types),
            Route(f"{API}/permissionscheme", ("GET",), "permissionscheme.list", self.schemes),
            Route(
                f"{API}/issuesecurityschemes",
                ("GET",),
                "issuesecurityschemes.list",
                self.security_schemes,
            ),
            Route(f"{API}/projectCategory", ("GET",), "projectCategory.list", self.categories),
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

    def server_info(self, call: Call) -> Reply:
        return json_reply(
            200,
            {
                "baseUrl": call.base_url,
                "version": "1001.0.0-SNAPSHOT",
                "versionNumbers": [1001, 0, 0],
                "deploymentType": "Cloud",
                "buildNumber": 100280,
                "buildDate": "2026-11-01T00:00:00.000+0000",
                "serverTime": shapes.jira_time(datetime.now(UTC)),
                "scmInfo": "sandbox",
                "serverTitle": "Chimera sandbox Jira",
                "defaultLocale": {"locale": "en_US"},
                "serverTimeZone": "Etc/UTC",
            },
        )

    def myself(self, call: Call) -> Reply:
        return json_reply(200, shapes.user(call.base_url, _caller(call)))

    def user(self, call: Call) -> Reply:
        account_id = call.query.get("accountId", "")
        if not account_id:
            return _errors(400, ["The accountId query parameter needs to be provided."])
        return json_reply(200, shapes.user(call.base_url, account_id, by_account_id=True))

    def user_search(self, call: Call) -> Reply:
        query = call.query.get("query", "")
        return json_reply(200, [shapes.user(call.base_url, query)] if query else [])

    def fields(self, call: Call) -> Reply:
        names = {
            "summary": ("Summary", "string"),
            "description": ("Description", "string"),
            "labels": ("Labels", "array"),
            "project": ("Project", "project"),
            "issuetype": ("Issue Type", "issuetype"),
            "status": ("Status", "status"),
            "created": ("Created", "datetime"),
            "reporter": ("Reporter", "user"),
            "assignee": ("Assignee", "user"),
        }
        return json_reply(
            200,
            [
                {
                    "id": field_id,
                    "key": field_id,
                    "name": name,
                    "custom": False,
                    "orderable": True,
                    "navigable": True,
                    "searchable": True,
                    "clauseNames": [field_id],
                    "schema": {"type": kind, "system": field_id},
                }
                for field_id, (name, kind) in names.items()
            ],
        )

    def issue_types(self, call: Call) -> Reply:
        return json_reply(
            200, [shapes.issue_type(call.base_url, entry) for entry in shapes.ISSUE_TYPES]
        )

    def schemes(self, call: Call) -> Reply:
        scheme = {"id": 0, "name": "Default Permission Scheme", "description": ""}
        return json_reply(200, {"permissionSchemes": [scheme]})

    def security_schemes(self, call: Call) -> Reply:
        scheme = {"id": 10000, "name": "Default", "description": "", "defaultSecurityLevelId": -1}
        return json_reply(200, {"issueSecuritySchemes": [scheme]})

    def categories(self, call: Call) -> Reply:
        return json_reply(200, [{"id": "10000", "name": "Clients", "description": "Onboarding"}])

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
                _caller(call),
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
            self._db.connection().execute(f"{_ISSUE_SELECT} WHERE {column} = ?", (key,)).fetchone()
        )
        if row is None:
            return _errors(404, ["Issue does not exist or you do not have permission to see it."])
        return json_reply(200, shapes.issue(call.base_url, row, _requested_fields(call)))

    def removed_search(self, call: Call) -> Reply:
        return _errors(
            410,
            [
                "The requested API has been removed. Please migrate to the /rest/api/3/search/jql"
                " API. A full migration guideline is available at"
                " https://developer.atlassian.com/changelog/#CHANGE-2046"
            ],
        )

    def search_jql(self, call: Call) -> Reply:
        """Jira Cloud's token-paged search, which replaced /search there."""
        params = self._search_params(call)
        max_results = min(_int(params.get("maxResults"), 50), SEARCH_LIMIT)
        start_at = _int(params.get("nextPageToken"), 0)
        found = self._run_search(params)
        if isinstance(found, Reply):
            return found
        page = found[start_at : start_at + max_results]
        answer: dict[str, Any] = {
            "issues": [shapes.issue(call.base_url, row, _requested_fields(call)) for row in page],
            "isLast": start_at + max_results >= len(found),
        }
        if not answer["isLast"]:
            answer["nextPageToken"] = str(start_at + max_results)
        return json_reply(200, answer)

    @staticmethod
    def _search_params(call: Call) -> dict[str, Any]:
        if call.method == "POST" and isinstance(call.body, dict):
            return call.body
        return dict(call.query)

    def _run_search(self, params: dict[str, Any]) -> list[sqlite3.Row] | Reply:
        try:
            query = parse_jql(str(params.get("jql") or ""))
        except JqlError as exc:
            return _errors(400, [str(exc)])
        conn = self._db.connection()
        validate = str(params.get("validateQuery", "strict")).lower() not in (
            "false",
            "warn",
            "none",
        )
        for clause in query.clauses:
            if clause.field == "project" and validate:
                for value in clause.values:
                    if _project_by_reference(conn, value) is None:
                        return _errors(
                            400, [f"The value '{value}' does not exist for the field 'project'."]
                        )
        rows = conn.execute(f"{_ISSUE_SELECT} ORDER BY i.id").fetchall()
        matching = [row for row in rows if all(_matches(row, c) for c in query.clauses)]
        return _ordered(matching, query)


_ISSUE_SELECT = (
    "SELECT i.*, p.key AS project_key, p.name AS project_name, p.project_type AS project_type"
    " FROM jira_issues i JOIN jira_projects p ON p.id = i.project_id"
)


def _project_created(call: Call, project_id: int, key: Any) -> Reply:
    return json_reply(
        201,
        {"self": f"{call.base_url}/rest/api/2/project/{project_id}", "id": project_id, "key": key},
    )


def _dropped(reply: Reply) -> Reply:
    reply.dropped = True
    return reply


def _errors(status: int, messages: list[str], errors: dict[str, str] | None = None) -> Reply:
    return json_reply(status, {"errorMessages": messages, "errors": errors or {}})


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


def _project_by_reference(conn: sqlite3.Connection, value: str) -> sqlite3.Row | None:
    # JQL's `project =` takes a key, an id or a name.
    return conn.execute(
        "SELECT * FROM jira_projects"
        " WHERE key = ? OR CAST(id AS TEXT) = ? OR lower(name) = lower(?)",
        (value.upper(), value, value),
    ).fetchone()


def _matches(row: sqlite3.Row, clause: Clause) -> bool:
    labels = json.loads(row["labels"])
    values = clause.values
    if clause.field == "project":
        candidates = {
            row["project_key"].lower(),
            str(row["project_id"]),
            row["project_name"].lower(),
        }
        hit = any(value.lower() in candidates for value in values)
    elif clause.field == "labels":
        hit = any(value in labels for value in values)
    elif clause.field == "key":
        hit = row["key"].lower() in {value.lower() for value in values}
    elif clause.field == "issuetype":
        hit = row["issuetype"].lower() in {value.lower() for value in values}
    elif clause.field == "status":
        hit = "to do" in {value.lower() for value in values}
    else:  # summary ~ text
        hit = values[0].lower() in row["summary"].lower()
    return not hit if clause.operator == "!=" else hit


def _ordered(rows: list[sqlite3.Row], query: Query) -> list[sqlite3.Row]:
    for field, descending in reversed(query.order_by):
        if field in ("created", "key", "id"):
            rows = sorted(rows, key=lambda row: row["id"], reverse=descending)
        elif field == "summary":
            rows = sorted(rows, key=lambda row: row["summary"], reverse=descending)
    return rows


def _requested_fields(call: Call) -> set[str] | None:
    """None means every field; Jira accepts `fields` repeated or comma-separated."""
    raw: list[str] = []
    if call.method == "POST" and isinstance(call.body, dict):
        value = call.body.get("fields")
        raw = value if isinstance(value, list) else [str(value)] if value else []
    else:
        raw = call.query_lists.get("fields", [])
    names = {name.strip() for item in raw for name in str(item).split(",") if name.strip()}
    if not names or names & {"*all", "*navigable"}:
        return None
    return names


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


def _caller(call: Call) -> str:
    """The authenticated user's name (email), which the sandbox turns into an account id."""
    scheme, _, credentials = call.header("Authorization").partition(" ")
    if scheme.lower() == "basic":
        try:
            return base64.b64decode(credentials).decode().partition(":")[0]
        except ValueError:
            return "anonymous"
    return "api-token-user"


def _int(value: Any, default: int) -> int:
    try:
        return max(0, int(value))
    except (TypeError, ValueError):
        return default


def _now_iso() -> str:
    return datetime.now(UTC).isoformat()

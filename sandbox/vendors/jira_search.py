"""The Jira sandbox's JQL search (Cloud's /search/jql) and the answer helpers it shares."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from sandbox.calls import Call, Reply, json_reply
from sandbox.vendors import jira_json as shapes
from sandbox.vendors.jql import Clause, JqlError, Query, parse_jql

SEARCH_LIMIT = 100


def search_jql(conn: sqlite3.Connection, call: Call) -> Reply:
    """Jira Cloud's token-paged search: issues matching the JQL, a page at a time."""
    params = _search_params(call)
    max_results = min(int_param(params.get("maxResults"), 50), SEARCH_LIMIT)
    start_at = int_param(params.get("nextPageToken"), 0)
    found = _run_search(conn, params)
    if isinstance(found, Reply):
        return found
    page = found[start_at : start_at + max_results]
    answer: dict[str, Any] = {
        "issues": [shapes.issue(call.base_url, row, requested_fields(call)) for row in page],
        "isLast": start_at + max_results >= len(found),
    }
    if not answer["isLast"]:
        answer["nextPageToken"] = str(start_at + max_results)
    return json_reply(200, answer)


def _search_params(call: Call) -> dict[str, Any]:
    if call.method == "POST" and isinstance(call.body, dict):
        return call.body
    return dict(call.query)


def _run_search(conn: sqlite3.Connection, params: dict[str, Any]) -> list[sqlite3.Row] | Reply:
    try:
        query = parse_jql(str(params.get("jql") or ""))
    except JqlError as exc:
        return errors_reply(400, [str(exc)])
    validate = str(params.get("validateQuery", "strict")).lower() not in (
        "false",
        "warn",
        "none",
    )
    for clause in query.clauses:
        if clause.field == "project" and validate:
            for value in clause.values:
                if _project_by_reference(conn, value) is None:
                    return errors_reply(
                        400, [f"The value '{value}' does not exist for the field 'project'."]
                    )
    rows = conn.execute(f"{ISSUE_SELECT} ORDER BY i.id").fetchall()
    matching = [row for row in rows if all(_matches(row, c) for c in query.clauses)]
    return _ordered(matching, query)


ISSUE_SELECT = (
    "SELECT i.*, p.key AS project_key, p.name AS project_name, p.project_type AS project_type"
    " FROM jira_issues i JOIN jira_projects p ON p.id = i.project_id"
)


def errors_reply(status: int, messages: list[str], errors: dict[str, str] | None = None) -> Reply:
    return json_reply(status, {"errorMessages": messages, "errors": errors or {}})


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


def requested_fields(call: Call) -> set[str] | None:
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


def int_param(value: Any, default: int) -> int:
    try:
        return max(0, int(value))
    except (TypeError, ValueError):
        return default

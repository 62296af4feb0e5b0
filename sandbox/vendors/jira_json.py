"""The JSON shapes Jira Cloud answers with: projects, issues, issue types, users."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import uuid
from datetime import datetime
from typing import Any

ISSUE_TYPES = (
    ("10001", "Task", "A small, distinct piece of work.", False),
    ("10002", "Bug", "A problem or error.", False),
    ("10003", "Story", "A user story.", False),
    ("10004", "Epic", "A big user story that needs to be broken down.", False),
    ("10005", "Subtask", "A small piece of work that's part of a larger task.", True),
)
ISSUE_EXPAND = "renderedFields,names,schema,operations,editmeta,changelog,versionedRepresentations"


def issue(base_url: str, row: sqlite3.Row, fields: set[str] | None) -> dict[str, Any]:
    created = jira_time(datetime.fromisoformat(row["created_at"]))
    project = {
        "self": f"{base_url}/rest/api/2/project/{row['project_id']}",
        "id": str(row["project_id"]),
        "key": row["project_key"],
        "name": row["project_name"],
        "projectTypeKey": row["project_type"],
        "simplified": False,
    }
    type_entry = next(entry for entry in ISSUE_TYPES if entry[1] == row["issuetype"])
    reporter = user(base_url, row["reporter"])
    all_fields: dict[str, Any] = {
        "summary": row["summary"],
        "description": row["description"],
        "labels": json.loads(row["labels"]),
        "project": project,
        "issuetype": issue_type(base_url, type_entry),
        "status": {
            "self": f"{base_url}/rest/api/2/status/10000",
            "id": "10000",
            "name": "To Do",
            "statusCategory": {"id": 2, "key": "new", "name": "To Do", "colorName": "blue-gray"},
        },
        "priority": {"self": f"{base_url}/rest/api/2/priority/3", "id": "3", "name": "Medium"},
        "reporter": reporter,
        "creator": reporter,
        "assignee": None,
        "created": created,
        "updated": created,
    }
    shown = all_fields if fields is None else {k: v for k, v in all_fields.items() if k in fields}
    return {
        "expand": ISSUE_EXPAND,
        "id": str(row["id"]),
        "self": f"{base_url}/rest/api/2/issue/{row['id']}",
        "key": row["key"],
        "fields": shown,
    }


def project(base_url: str, row: sqlite3.Row) -> dict[str, Any]:
    project: dict[str, Any] = {
        "expand": "description,lead,issueTypes,url,projectKeys,permissions,insight",
        "self": f"{base_url}/rest/api/2/project/{row['id']}",
        "id": str(row["id"]),
        "key": row["key"],
        "description": row["description"],
        "lead": user(base_url, row["lead"], by_account_id=True),
        "components": [],
        "issueTypes": [issue_type(base_url, entry) for entry in ISSUE_TYPES],
        "assigneeType": "PROJECT_LEAD",
        "versions": [],
        "name": row["name"],
        "roles": {},
        "avatarUrls": avatars(base_url, "project", str(row["id"])),
        "projectTypeKey": row["project_type"],
        "simplified": False,
        "style": "classic",
        "isPrivate": False,
        "properties": {},
    }
    if row["url"]:
        project["url"] = row["url"]
    return project


def issue_type(base_url: str, entry: tuple[str, str, str, bool]) -> dict[str, Any]:
    type_id, name, description, subtask = entry
    return {
        "self": f"{base_url}/rest/api/2/issuetype/{type_id}",
        "id": type_id,
        "description": description,
        "iconUrl": f"{base_url}/images/icons/issuetypes/{name.lower()}.svg",
        "name": name,
        "subtask": subtask,
        "hierarchyLevel": -1 if subtask else 0,
    }


def user(base_url: str, name: str, *, by_account_id: bool = False) -> dict[str, Any]:
    """A Cloud user; `name` is an email (or an account id already, when by_account_id)."""
    ident = name if by_account_id and name.startswith("712020:") else account_id(name)
    email = name if "@" in name else None
    display = (email or name).split("@")[0].replace(".", " ").title()
    return {
        "self": f"{base_url}/rest/api/2/user?accountId={ident}",
        "accountId": ident,
        "accountType": "atlassian",
        "emailAddress": email,
        "avatarUrls": avatars(base_url, "user", ident),
        "displayName": display,
        "active": True,
        "timeZone": "Etc/UTC",
        "locale": "en_US",
    }


def avatars(base_url: str, kind: str, ident: str) -> dict[str, str]:
    return {
        f"{size}x{size}": f"{base_url}/avatar/{kind}/{ident}?s={size}" for size in (16, 24, 32, 48)
    }


def account_id(name: str) -> str:
    digest = hashlib.sha256(name.lower().encode()).digest()
    return f"712020:{uuid.UUID(bytes=digest[:16])}"


def jira_time(moment: datetime) -> str:
    # Jira's own format: milliseconds and a +0000 style offset.
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}+0000"

"""The Jira sandbox's answers about the site itself: server info, users, fields, schemes."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

from sandbox.calls import Call, Reply, json_reply
from sandbox.vendors import jira_json as shapes
from sandbox.vendors.jira_search import errors_reply


def server_info(call: Call) -> Reply:
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


def myself(call: Call) -> Reply:
    return json_reply(200, shapes.user(call.base_url, caller(call)))


def user(call: Call) -> Reply:
    account_id = call.query.get("accountId", "")
    if not account_id:
        return errors_reply(400, ["The accountId query parameter needs to be provided."])
    return json_reply(200, shapes.user(call.base_url, account_id, by_account_id=True))


def user_search(call: Call) -> Reply:
    query = call.query.get("query", "")
    return json_reply(200, [shapes.user(call.base_url, query)] if query else [])


def fields(call: Call) -> Reply:
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


def issue_types(call: Call) -> Reply:
    return json_reply(
        200, [shapes.issue_type(call.base_url, entry) for entry in shapes.ISSUE_TYPES]
    )


def schemes(call: Call) -> Reply:
    scheme = {"id": 0, "name": "Default Permission Scheme", "description": ""}
    return json_reply(200, {"permissionSchemes": [scheme]})


def security_schemes(call: Call) -> Reply:
    scheme = {"id": 10000, "name": "Default", "description": "", "defaultSecurityLevelId": -1}
    return json_reply(200, {"issueSecuritySchemes": [scheme]})


def categories(call: Call) -> Reply:
    return json_reply(200, [{"id": "10000", "name": "Clients", "description": "Onboarding"}])


def caller(call: Call) -> str:
    """The authenticated user's name (email), which the sandbox turns into an account id."""
    scheme, _, credentials = call.header("Authorization").partition(" ")
    if scheme.lower() == "basic":
        try:
            return base64.b64decode(credentials).decode().partition(":")[0]
        except ValueError:
            return "anonymous"
    return "api-token-user"

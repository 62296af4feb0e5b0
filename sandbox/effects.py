"""What the vendors hold, per run: the ground truth for "each side effect exactly once"."""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from pathlib import Path

from sandbox.records import sandbox_database

RUN_MARKER = re.compile(r"chimera-run:(run-[A-Za-z0-9_-]+)")


def side_effects(home: Path | str) -> dict[str, Counter[str]]:
    """Per run id: how many Jira projects and issues, emails and Slack messages exist."""
    conn = sandbox_database(home).connection()
    effects: dict[str, Counter[str]] = defaultdict(Counter)

    def rows(sql: str) -> list:
        try:
            return conn.execute(sql).fetchall()
        except Exception:  # the vendor was never called: its table does not exist yet
            return []

    for row in rows("SELECT description FROM jira_projects"):
        for run_id in set(RUN_MARKER.findall(row[0] or "")):
            effects[run_id]["jira.project"] += 1
    for row in rows("SELECT description FROM jira_issues"):
        for run_id in set(RUN_MARKER.findall(row[0] or "")):
            effects[run_id]["jira.issue"] += 1
    for row in rows("SELECT run_id FROM sendgrid_messages"):
        if row[0]:
            effects[row[0]]["sendgrid.mail"] += 1
    for row in rows("SELECT metadata FROM slack_messages"):
        payload = (json.loads(row[0]) if row[0] else {}).get("event_payload") or {}
        if payload.get("run_id"):
            effects[payload["run_id"]]["slack.message"] += 1
    return dict(effects)

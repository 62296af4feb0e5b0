"""Slack's Web API: chat.postMessage and conversations.history, JSON or form encoded."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import time
from typing import Any

from sandbox.calls import Call, Reply, Route, json_reply
from shared.sqlite_db import SqliteDatabase

CHANNEL_ID_RE = re.compile(r"^[CGD][A-Z0-9]{8,}$")
EVENT_TYPE_RE = re.compile(r"^[A-Za-z0-9_.-]{1,255}$")
MAX_TEXT = 40_000
MAX_HISTORY = 999
BOT = {
    "user": "U0SANDBOX01",
    "bot_id": "B0SANDBOX01",
    "app_id": "A0SANDBOX01",
    "team": "T0SANDBOX01",
}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS slack_messages (
    channel_id TEXT NOT NULL,
    ts_us INTEGER NOT NULL,
    channel_name TEXT,
    text TEXT NOT NULL,
    blocks TEXT,
    metadata TEXT,
    PRIMARY KEY (channel_id, ts_us)
);
"""


class SlackApi:
    """Every channel exists except those named #missing...; #private... ones lack the bot."""

    name = "slack"
    secret_keys: tuple[str, ...] = ("token", "client_secret")

    def __init__(self, db: SqliteDatabase) -> None:
        self._db = db
        self._db.ensure_schema(_SCHEMA)

    def routes(self) -> list[Route]:
        return [
            Route("/api/chat.postMessage", ("POST",), "chat.postMessage", self.post_message),
            Route(
                "/api/conversations.history",
                ("GET", "POST"),
                "conversations.history",
                self.history,
            ),
            Route("/api/conversations.list", ("GET", "POST"), "conversations.list", self.list),
        ]

    def authenticate(self, call: Call) -> Reply | None:
        token = call.bearer_token() or str(call.params().get("token") or "")
        if not token:
            return _fail("not_authed")
        if not token.startswith("xox"):
            return _fail("invalid_auth")
        return None

    def run_id(self, call: Call) -> str | None:
        metadata = _metadata(call.params().get("metadata"))
        payload = metadata.get("event_payload") if isinstance(metadata, dict) else None
        if isinstance(payload, dict) and isinstance(payload.get("run_id"), str):
            return payload["run_id"]
        return None

    def error_reply(self, status: int) -> Reply:
        error = "fatal_error" if status == 500 else "service_unavailable"
        return json_reply(status, {"ok": False, "error": error})

    def not_found_reply(self, path: str) -> Reply:
        # What slack.com answers for a method it does not know (e.g. /api/api/chat.postMessage).
        method = path.removeprefix("/api/") if path.startswith("/api/") else path.lstrip("/")
        return json_reply(404, {"ok": False, "error": "unknown_method", "req_method": method})

    def rate_limited_reply(self) -> Reply:
        return json_reply(429, {"ok": False, "error": "ratelimited"}, {"Retry-After": "1"})

    def post_message(self, call: Call) -> Reply:
        params = call.params()
        channel = _resolve_channel(str(params.get("channel") or ""))
        if isinstance(channel, Reply):
            return channel
        channel_id, channel_name = channel
        text = params.get("text")
        blocks = params.get("blocks")
        if isinstance(blocks, str):
            try:
                blocks = json.loads(blocks)
            except ValueError:
                return _fail("invalid_blocks_format")
        if blocks is not None and (
            not isinstance(blocks, list)
            or not all(isinstance(block, dict) and block.get("type") for block in blocks)
        ):
            return _fail("invalid_blocks")
        if not text and not blocks and not params.get("attachments"):
            return _fail("no_text")
        if isinstance(text, str) and len(text) > MAX_TEXT:
            return _fail("msg_too_long")
        metadata = _metadata(params.get("metadata"))
        if metadata is not None and not _valid_metadata(metadata):
            return _fail("invalid_metadata_format")
        with self._db.transaction() as conn:
            # ts must be unique and rising within a channel, as Slack's message ids are.
            (last,) = conn.execute(
                "SELECT COALESCE(MAX(ts_us), 0) FROM slack_messages WHERE channel_id = ?",
                (channel_id,),
            ).fetchone()
            ts_us = max(int(time.time() * 1_000_000), last + 1)
            if call.drop:  # answered like a post, but the message is never kept
                ts = _ts(ts_us)
                message = _message(ts, str(text or ""), blocks, metadata, with_metadata=True)
                reply = json_reply(
                    200, {"ok": True, "channel": channel_id, "ts": ts, "message": message}
                )
                reply.dropped = True
                return reply
            conn.execute(
                "INSERT INTO slack_messages (channel_id, ts_us, channel_name, text, blocks,"
                " metadata) VALUES (?, ?, ?, ?, ?, ?)",
                (
                    channel_id,
                    ts_us,
                    channel_name,
                    str(text or ""),
                    json.dumps(blocks) if blocks is not None else None,
                    json.dumps(metadata) if metadata is not None else None,
                ),
            )
        ts = _ts(ts_us)
        message = _message(ts, str(text or ""), blocks, metadata, with_metadata=True)
        return json_reply(200, {"ok": True, "channel": channel_id, "ts": ts, "message": message})

    def list(self, call: Call) -> Reply:
        """conversations.list: the channels that have messages, a page at a time."""
        params = call.params()
        try:
            limit = min(max(int(params.get("limit") or 100), 1), 1000)
            offset = int(base64.b64decode(str(params.get("cursor") or "")).decode() or 0)
        except ValueError:
            return _fail("invalid_cursor")
        rows = (
            self._db.connection()
            .execute(
                "SELECT DISTINCT channel_id, channel_name FROM slack_messages"
                " WHERE channel_name IS NOT NULL ORDER BY channel_name LIMIT ? OFFSET ?",
                (limit + 1, offset),
            )
            .fetchall()
        )
        more = len(rows) > limit
        channels = [
            {
                "id": r["channel_id"],
                "name": r["channel_name"].lstrip("#"),
                "is_channel": True,
                "is_archived": False,
                "is_member": True,
            }
            for r in rows[:limit]
        ]
        cursor = base64.b64encode(str(offset + limit).encode()).decode() if more else ""
        return json_reply(
            200, {"ok": True, "channels": channels, "response_metadata": {"next_cursor": cursor}}
        )

    def history(self, call: Call) -> Reply:
        params = call.params()
        channel_param = str(params.get("channel") or "").strip()
        # As in Slack: only chat.postMessage resolves a #name; history wants the id.
        if not CHANNEL_ID_RE.match(channel_param):
            return _fail("channel_not_found")
        channel = _resolve_channel(channel_param)
        if isinstance(channel, Reply):
            return channel
        channel_id, _ = channel
        try:
            limit = min(max(int(params.get("limit") or 100), 1), MAX_HISTORY)
            oldest = _ts_us(params.get("oldest"), default=0)
            latest = _ts_us(params.get("latest"), default=2**62)
        except ValueError:
            return _fail("invalid_arguments")
        inclusive = _truthy(params.get("inclusive"))
        with_metadata = _truthy(params.get("include_all_metadata"))
        cursor = str(params.get("cursor") or "")
        if cursor:
            try:
                latest = int(base64.b64decode(cursor).decode().removeprefix("before:"))
                inclusive = False
            except ValueError:
                return _fail("invalid_cursor")
        low, high = ("<=", ">=") if inclusive else ("<", ">")
        rows = (
            self._db.connection()
            .execute(
                "SELECT * FROM slack_messages WHERE channel_id = ?"
                f" AND ts_us {low} ? AND ts_us {high} ? ORDER BY ts_us DESC LIMIT ?",
                (channel_id, latest, oldest, limit + 1),
            )
            .fetchall()
        )
        has_more = len(rows) > limit
        rows = rows[:limit]
        next_cursor = ""
        if has_more:
            next_cursor = base64.b64encode(f"before:{rows[-1]['ts_us']}".encode()).decode()
        messages = [
            _message(
                _ts(row["ts_us"]),
                row["text"],
                json.loads(row["blocks"]) if row["blocks"] else None,
                json.loads(row["metadata"]) if row["metadata"] else None,
                with_metadata=with_metadata,
            )
            for row in rows
        ]
        return json_reply(
            200,
            {
                "ok": True,
                "messages": messages,
                "has_more": has_more,
                "pin_count": 0,
                "channel_actions_ts": None,
                "channel_actions_count": 0,
                "response_metadata": {"next_cursor": next_cursor},
            },
        )


def channel_id_for(name: str) -> str:
    """A stable Slack-looking id for a channel name, so `#x` and its id name one channel."""
    digest = hashlib.sha256(name.lower().lstrip("#").encode()).digest()
    return "C" + base64.b32encode(digest).decode()[:10]


def _resolve_channel(channel: str) -> tuple[str, str | None] | Reply:
    channel = channel.strip()
    if not channel:
        return _fail("channel_not_found")
    if CHANNEL_ID_RE.match(channel):
        return channel, None
    name = channel.lower().lstrip("#")
    if not name or name.startswith("missing"):
        return _fail("channel_not_found")
    if name.startswith("private"):
        return _fail("not_in_channel")
    return channel_id_for(name), "#" + name


def _message(
    ts: str, text: str, blocks: Any, metadata: Any, *, with_metadata: bool
) -> dict[str, Any]:
    message: dict[str, Any] = {"type": "message", **BOT, "text": text, "ts": ts}
    message["bot_profile"] = {"id": BOT["bot_id"], "app_id": BOT["app_id"], "name": "Chimera"}
    if blocks is not None:
        message["blocks"] = blocks
    if metadata is not None and with_metadata:
        message["metadata"] = metadata
    return message


def _metadata(raw: Any) -> Any:
    """Form-encoded calls send metadata as a JSON string; JSON calls as an object."""
    if isinstance(raw, str):
        try:
            return json.loads(raw)
        except ValueError:
            return raw
    return raw


def _valid_metadata(metadata: Any) -> bool:
    return (
        isinstance(metadata, dict)
        and isinstance(metadata.get("event_type"), str)
        and bool(EVENT_TYPE_RE.match(metadata["event_type"]))
        and isinstance(metadata.get("event_payload"), dict)
    )


def _fail(error: str) -> Reply:
    # Slack reports almost every failure as HTTP 200 with ok=false.
    return json_reply(200, {"ok": False, "error": error})


def _ts(ts_us: int) -> str:
    return f"{ts_us // 1_000_000}.{ts_us % 1_000_000:06d}"


def _ts_us(value: Any, *, default: int) -> int:
    if value in (None, "", "0"):
        return default
    seconds, _, fraction = str(value).partition(".")
    return int(seconds) * 1_000_000 + int((fraction or "0").ljust(6, "0")[:6])


def _truthy(value: Any) -> bool:
    return str(value).lower() in ("1", "true", "yes")

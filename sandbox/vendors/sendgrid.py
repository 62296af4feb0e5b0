"""SendGrid v3: Mail Send (`POST /v3/mail/send`) and Email Activity (`GET /v3/messages`)."""

from __future__ import annotations

import base64
import json
import re
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from sandbox.calls import Call, Reply, Route, json_reply
from shared.sqlite_db import SqliteDatabase

HELP = "http://sendgrid.com/docs/API_Reference/Web_API_v3/Mail/errors.html"
EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
MAX_LIMIT = 1000
# One Email Activity condition: field or unique_args['name'], an operator, a quoted value.
_CONDITION_RE = re.compile(
    r"""\s*(?P<field>[a-z_]+)(?:\[(?P<quote>['"])(?P<arg>[^'"]+)(?P=quote)\])?\s*"""
    r"""(?P<op>!=|=)\s*"(?P<value>(?:[^"\\]|\\.)*)"\s*""",
    re.IGNORECASE,
)
_AND_RE = re.compile(r"\s*AND\s+", re.IGNORECASE)
_QUERY_FIELDS = ("to_email", "from_email", "subject", "msg_id", "status")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sendgrid_messages (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    msg_id TEXT NOT NULL UNIQUE,
    x_message_id TEXT NOT NULL,
    from_email TEXT NOT NULL,
    to_email TEXT NOT NULL,
    subject TEXT NOT NULL,
    custom_args TEXT NOT NULL,
    run_id TEXT,
    sent_at TEXT NOT NULL
);
"""


class SendGridApi:
    """Accepted mail is 'delivered' at once and searchable by its custom args."""

    name = "sendgrid"
    secret_keys: tuple[str, ...] = ()

    def __init__(self, db: SqliteDatabase) -> None:
        self._db = db
        self._db.ensure_schema(_SCHEMA)

    def routes(self) -> list[Route]:
        return [
            Route("/v3/mail/send", ("POST",), "mail.send", self.send),
            Route("/v3/messages", ("GET",), "messages.search", self.search),
        ]

    def authenticate(self, call: Call) -> Reply | None:
        token = call.bearer_token()
        if not token:
            return _errors(401, [("authorization required", None)])
        if not token.startswith("SG."):
            return _errors(
                401, [("The provided authorization grant is invalid, expired, or revoked", None)]
            )
        return None

    def run_id(self, call: Call) -> str | None:
        body = call.body if isinstance(call.body, dict) else {}
        candidates = [body.get("custom_args")]
        personalizations = body.get("personalizations")
        if isinstance(personalizations, list):
            candidates += [p.get("custom_args") for p in personalizations if isinstance(p, dict)]
        for args in candidates:
            if isinstance(args, dict) and isinstance(args.get("run_id"), str):
                return args["run_id"]
        return None

    def error_reply(self, status: int) -> Reply:
        return _errors(
            status, [("internal error" if status == 500 else "service unavailable", None)]
        )

    def not_found_reply(self, path: str) -> Reply:
        return _errors(404, [("resource not found", None)])

    def rate_limited_reply(self) -> Reply:
        reply = _errors(429, [("too many requests", None)])
        reset = str(int(time.time()) + 1)
        reply.headers.update(
            {
                "Retry-After": "1",
                "X-RateLimit-Limit": "600",
                "X-RateLimit-Remaining": "0",
                "X-RateLimit-Reset": reset,
            }
        )
        return reply

    def send(self, call: Call) -> Reply:
        body = call.body
        if call.body_malformed or not isinstance(body, dict):
            return _errors(400, [("Bad Request", None)])
        problems = _mail_problems(body)
        if problems:
            return _errors(400, problems)
        x_message_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        sender = body["from"]["email"]
        shared_args = body.get("custom_args") or {}
        sent_at = datetime.now(UTC).isoformat()
        if call.drop:  # accepted with an id, but never kept nor searchable
            return Reply(
                status=202, body=None, headers={"X-Message-Id": x_message_id}, dropped=True
            )
        with self._db.transaction() as conn:
            for p_index, personalization in enumerate(body["personalizations"]):
                # SendGrid merges the two levels; a personalization's own args win.
                args = {**shared_args, **(personalization.get("custom_args") or {})}
                subject = personalization.get("subject") or body.get("subject") or ""
                for r_index, recipient in enumerate(personalization["to"]):
                    conn.execute(
                        "INSERT INTO sendgrid_messages (msg_id, x_message_id, from_email,"
                        " to_email, subject, custom_args, run_id, sent_at)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        (
                            # Activity ids start with the X-Message-Id, as SendGrid's do.
                            f"{x_message_id}.filter0001.{p_index:05d}.{r_index:08X}.0",
                            x_message_id,
                            sender,
                            recipient["email"],
                            subject,
                            json.dumps(args, sort_keys=True),
                            args.get("run_id"),
                            sent_at,
                        ),
                    )
        return Reply(status=202, body=None, headers={"X-Message-Id": x_message_id})

    def search(self, call: Call) -> Reply:
        raw_limit = call.query.get("limit", "10")
        if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= MAX_LIMIT:
            return _errors(400, [(f"limit must be an integer from 1 to {MAX_LIMIT}", "limit")])
        try:
            conditions = parse_activity_query(call.query.get("query", ""))
        except ValueError as exc:
            return _errors(400, [(str(exc), "query")])
        rows = (
            self._db.connection()
            .execute("SELECT * FROM sendgrid_messages ORDER BY seq DESC")
            .fetchall()
        )
        messages = []
        for row in rows:
            if all(_condition_holds(row, condition) for condition in conditions):
                messages.append(
                    {
                        "msg_id": row["msg_id"],
                        "from_email": row["from_email"],
                        "subject": row["subject"],
                        "to_email": row["to_email"],
                        "status": "delivered",
                        "opens_count": 0,
                        "clicks_count": 0,
                        "last_event_time": row["sent_at"],
                    }
                )
            if len(messages) >= int(raw_limit):
                break
        return json_reply(200, {"messages": messages})


def parse_activity_query(query: str) -> list[tuple[str, str | None, str, str]]:
    """`unique_args['k']="v" AND to_email="x"` -> [(field, arg, op, value), ...].

    `custom_args[...]` is accepted as a synonym of `unique_args[...]`, the Activity API's name.
    """
    conditions: list[tuple[str, str | None, str, str]] = []
    position = 0
    text = query.strip()
    while position < len(text):
        if conditions:
            joiner = _AND_RE.match(text, position)
            if not joiner:
                raise ValueError(f"invalid query: expected AND at character {position}")
            position = joiner.end()
        match = _CONDITION_RE.match(text, position)
        if not match:
            raise ValueError(f"invalid query: cannot read a condition at character {position}")
        field = match["field"].lower()
        arg = match["arg"]
        if field == "custom_args":
            field = "unique_args"
        if (field == "unique_args") != (arg is not None) or (
            field != "unique_args" and field not in _QUERY_FIELDS
        ):
            raise ValueError(f"invalid query: unsupported field {match['field']!r}")
        value = re.sub(r"\\(.)", r"\1", match["value"])
        conditions.append((field, arg, match["op"], value))
        position = match.end()
    return conditions


def _condition_holds(row: Any, condition: tuple[str, str | None, str, str]) -> bool:
    field, arg, operator, value = condition
    if field == "unique_args":
        actual = json.loads(row["custom_args"]).get(arg)
    elif field == "status":
        actual = "delivered"
    else:
        actual = row[field]
    equal = actual == value
    return not equal if operator == "!=" else equal


def _mail_problems(body: dict[str, Any]) -> list[tuple[str, str | None]]:
    problems: list[tuple[str, str | None]] = []
    personalizations = body.get("personalizations")
    if not isinstance(personalizations, list) or not personalizations:
        problems.append(
            (
                "The personalizations field is required and must have at least one "
                "personalization.",
                "personalizations",
            )
        )
        personalizations = []
    for p_index, personalization in enumerate(personalizations):
        recipients = personalization.get("to") if isinstance(personalization, dict) else None
        if not isinstance(recipients, list) or not recipients:
            problems.append(
                (
                    "The to array is required for all personalization objects, and must have at "
                    "least one email object with a valid email address.",
                    f"personalizations.{p_index}.to",
                )
            )
            continue
        for r_index, recipient in enumerate(recipients):
            email = recipient.get("email") if isinstance(recipient, dict) else None
            if not isinstance(email, str) or not EMAIL_RE.match(email):
                problems.append(
                    (
                        "Does not contain a valid address.",
                        f"personalizations.{p_index}.to.{r_index}.email",
                    )
                )
        problems += _custom_arg_problems(
            personalization.get("custom_args"), f"personalizations.{p_index}.custom_args"
        )
    sender = body.get("from")
    if not isinstance(sender, dict) or not EMAIL_RE.match(str(sender.get("email", ""))):
        problems.append(
            (
                "The from object must be provided for every email send. It is an object that "
                "requires an email parameter, but may also contain a name parameter.",
                "from",
            )
        )
    has_template = bool(body.get("template_id"))
    every_personalization_has_subject = bool(personalizations) and all(
        isinstance(p, dict) and p.get("subject") for p in personalizations
    )
    if not has_template and not body.get("subject") and not every_personalization_has_subject:
        problems.append(
            (
                "The subject is required. You can get around this requirement if you use a "
                "template with a subject defined or if every personalization has a subject "
                "defined.",
                "subject",
            )
        )
    content = body.get("content")
    if not has_template:
        if not isinstance(content, list) or not content:
            problems.append(
                (
                    "Unless a valid template_id is provided, the content parameter is required. "
                    "There must be at least one defined content block.",
                    "content",
                )
            )
        else:
            for index, block in enumerate(content):
                if not isinstance(block, dict) or not block.get("type"):
                    problems.append(("The content type must be provided.", f"content.{index}.type"))
                elif not isinstance(block.get("value"), str) or not block["value"]:
                    problems.append(
                        (
                            "The content value must be a string at least one character in length.",
                            f"content.{index}.value",
                        )
                    )
    problems += _custom_arg_problems(body.get("custom_args"), "custom_args")
    return problems


def _custom_arg_problems(args: Any, field: str) -> list[tuple[str, str | None]]:
    if args is None:
        return []
    if not isinstance(args, dict):
        return [("Custom args must be an object.", field)]
    return [
        (f"Invalid type. Expected: string, given: {type(value).__name__}.", f"{field}.{key}")
        for key, value in args.items()
        if not isinstance(value, str)
    ]


def _errors(status: int, problems: list[tuple[str, str | None]]) -> Reply:
    return json_reply(
        status,
        {
            "errors": [
                {"message": message, "field": field, "help": HELP if field else None}
                for message, field in problems
            ]
        },
    )

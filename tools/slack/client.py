"""Slack's Web API through `slack_sdk`: the only place Slack is called."""

from __future__ import annotations

import http.client
import logging
import re
import urllib.error
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any
from urllib.request import Request

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.web import SlackResponse

from shared.errors import (
    AuthFailed,
    BadVendorReply,
    ChimeraError,
    InvalidInput,
    NotFound,
    PermanentError,
    RateLimited,
    VendorUnavailable,
)
from shared.retry_after import retry_after
from shared.settings import Settings
from shared.vendor_errors import error_for_status, transport_error
from shared.vendor_requests import counted_request, http_request

logger = logging.getLogger(__name__)

HISTORY_LIMIT = 200  # messages per conversations.history page
# At most this many pages read back to a lookup's start: 10,000 messages of a busy channel.
HISTORY_PAGES = 50
# Slack's clock and ours may differ: a lookup reads this much further back than asked.
CLOCK_SKEW_S = 120
LIST_LIMIT = 200  # channels per conversations.list page
LIST_PAGES = 20  # at most this many pages searched for a channel's name
AUTH_ERRORS = frozenset(
    {
        "not_authed",
        "invalid_auth",
        "account_inactive",
        "token_revoked",
        "token_expired",
        "no_permission",
        "missing_scope",
        "not_allowed_token_type",
        "ekm_access_denied",
    }
)
# Slack sometimes reports its own trouble with HTTP 200 and ok=false.
TRANSIENT_ERRORS = frozenset(
    {"internal_error", "fatal_error", "service_unavailable", "request_timeout", "team_added_to_org"}
)
INPUT_ERRORS = frozenset(
    {
        "no_text",
        "msg_too_long",
        "invalid_blocks",
        "invalid_blocks_format",
        "invalid_metadata_format",
        "invalid_metadata_schema",
        "metadata_too_large",
        "invalid_arguments",
        "invalid_cursor",
        "too_many_attachments",
    }
)
# Real Slack error codes are snake_case; anything else is the SDK describing a body it
# could not parse ("Received a response in a non-JSON format: ...").
_ERROR_CODE_RE = re.compile(r"^[a-z0-9_]+$")


class _TracedWebClient(WebClient):
    """The SDK's client with each HTTP request traced, at its one place of sending."""

    def _perform_urllib_http_request_internal(self, url: str, req: Request) -> dict[str, Any]:
        with http_request("slack", req.get_method(), url) as exchange:
            try:
                answer = super()._perform_urllib_http_request_internal(url, req)
            except urllib.error.HTTPError as exc:  # a 4xx or 5xx: the SDK reads it upstairs
                exchange.answered(exc.code)
                raise
            exchange.answered(int(answer["status"]))
            return answer


class SlackChat:
    """Posts messages with metadata and finds them again. Built once per instance."""

    def __init__(self, settings: Settings) -> None:
        self._client = _TracedWebClient(
            token=settings.slack_token,
            # https://slack.com/api/ (the SDK's own default) or the sandbox's <sandbox>/slack/api/:
            # the SDK appends only the method name.
            base_url=settings.vendor_url("slack"),
            # urllib takes one timeout for connecting and for each read.
            timeout=settings.vendor_read_timeout,  # type: ignore[arg-type]
            # The default retries connection errors once; the queue owns retries.
            retry_handlers=[],
            logger=logging.getLogger(f"{__name__}.sdk"),
        )
        self._channel_ids: dict[str, str] = {}  # name (no #) -> id

    def post_message(
        self,
        *,
        channel: str,
        text: str,
        blocks: list[dict[str, Any]] | None = None,
        metadata: dict[str, Any],
    ) -> str:
        """Post to a channel (#name or id); returns the message's ts.

        `metadata` is Slack message metadata, {"event_type": ..., "event_payload": {...}}; put
        `run_id` and `step_key` in the payload so find_message can recognise the message.
        """
        if not isinstance(metadata.get("event_type"), str) or not isinstance(
            metadata.get("event_payload"), dict
        ):
            raise InvalidInput("metadata needs an event_type and an event_payload object")
        response = self._call(
            "chat.postMessage",
            lambda: self._client.chat_postMessage(
                channel=channel, text=text, blocks=blocks, metadata=metadata
            ),
        )
        ts = response.get("ts")
        if not isinstance(ts, str) or not ts:
            raise BadVendorReply("Slack accepted the message but answered no ts")
        return ts

    def find_message(
        self, *, channel: str, event_type: str, step_key: str, since: datetime | None = None
    ) -> str | None:
        """The ts of a message whose metadata names this step, posted since `since` (when
        the step was dispatched), or None.

        Reads the channel's history back to `since` (less CLOCK_SKEW_S), page by page: on a
        busy channel hundreds of other runs' notices may have been posted since this step's
        first attempt, so its message need not be near the top. At most HISTORY_PAGES pages.
        """
        channel_id = self._channel_id(channel)
        if channel_id is None:
            return None  # no such channel visible to us: nothing can have been posted there
        oldest = f"{since.timestamp() - CLOCK_SKEW_S:.6f}" if since is not None else None
        pages = self._pages(
            "conversations.history",
            lambda cursor: self._client.conversations_history(
                channel=channel_id,
                limit=HISTORY_LIMIT,
                include_all_metadata=True,
                oldest=oldest,
                cursor=cursor or None,
            ),
            HISTORY_PAGES,
        )
        read = 0
        for page in pages:
            read += 1
            messages = page.get("messages")
            if not isinstance(messages, list):
                raise BadVendorReply("Slack history answered without a messages list")
            found = _step_message(messages, event_type, step_key)
            if found is not None:
                return found
            if not page.get("has_more"):
                return None
        if read < HISTORY_PAGES:
            return None  # no cursor for more
        logger.warning(
            "slack: %s has over %d messages since %s; looked no further back",
            channel,
            HISTORY_PAGES * HISTORY_LIMIT,
            since,
        )
        return None

    def _channel_id(self, channel: str) -> str | None:
        """Slack's history wants a channel id; chat.postMessage took a #name. Names are
        resolved through conversations.list (paged) once per client."""
        if not channel.startswith("#"):
            return channel
        name = channel[1:].lower()
        if name in self._channel_ids:
            return self._channel_ids[name]
        pages = self._pages(
            "conversations.list",
            lambda cursor: self._client.conversations_list(
                types="public_channel,private_channel",
                exclude_archived=True,
                limit=LIST_LIMIT,
                cursor=cursor or None,
            ),
            LIST_PAGES,
        )
        for page in pages:
            channels = page.get("channels")
            if not isinstance(channels, list):
                raise BadVendorReply("Slack conversations.list answered without channels")
            for item in channels:
                if isinstance(item, dict) and item.get("name") and item.get("id"):
                    self._channel_ids[str(item["name"]).lower()] = str(item["id"])
            if name in self._channel_ids:
                return self._channel_ids[name]
        return None

    def _pages(
        self, action: str, fetch: Callable[[str], SlackResponse], most: int
    ) -> Iterator[SlackResponse]:
        """Slack's cursor pagination: `action`'s pages, each fetched with the cursor the page
        before answered, until none is given or `most` pages were read."""
        cursor = ""
        for _ in range(most):
            page = self._call(action, lambda cursor=cursor: fetch(cursor))
            yield page
            metadata = page.get("response_metadata")
            cursor = (metadata.get("next_cursor") if isinstance(metadata, dict) else "") or ""
            if not cursor:
                return

    @counted_request  # each request weighs in the vendor's circuit breaker
    def _call(self, action: str, work: Callable[[], SlackResponse]) -> SlackResponse:
        try:
            response = work()
        except SlackApiError as exc:
            raise _error_for(action, exc.response) from None
        except (http.client.HTTPException, OSError) as exc:
            # OSError covers urllib's URLError and the stdlib's TimeoutError.
            raise transport_error("Slack", action, exc) from None
        except SlackClientError as exc:
            raise InvalidInput(f"Slack {action} refused the request: {exc}") from None
        logger.debug("slack %s ok", action)
        return response


def _error_for(action: str, response: SlackResponse) -> ChimeraError:
    """Slack's ok=false codes, around the shared map for an HTTP 429 or 5xx (whatever the body)."""
    status = response.status_code
    data = response.data if isinstance(response.data, dict) else {}
    error = str(data.get("error") or "")
    message = f"Slack {action} failed: {error[:120]}"
    if status == 429:
        return error_for_status("Slack", action, status, data, response.headers)
    if error == "ratelimited":
        return RateLimited(message, retry_after=retry_after(response.headers))
    if status >= 500:
        return error_for_status("Slack", action, status, data, response.headers)
    if error in TRANSIENT_ERRORS:
        return VendorUnavailable(message)
    if not _ERROR_CODE_RE.match(error):
        return BadVendorReply(f"Slack {action} answered a body that is not Slack's JSON")
    if status in (401, 403) or error in AUTH_ERRORS:
        return AuthFailed(message, code="auth_failed")
    if error == "channel_not_found":
        return NotFound(message, code="channel_not_found")
    if error in INPUT_ERRORS:
        return InvalidInput(message)
    # not_in_channel, is_archived, restricted_action, ...: no retry will change them.
    return PermanentError(message, code=error)


def _step_message(messages: list[Any], event_type: str, step_key: str) -> str | None:
    """The ts of the message among `messages` whose metadata names this step, or None."""
    for message in messages:
        metadata = message.get("metadata") if isinstance(message, dict) else None
        if not isinstance(metadata, dict) or metadata.get("event_type") != event_type:
            continue
        payload = metadata.get("event_payload")
        if isinstance(payload, dict) and payload.get("step_key") == step_key:
            return str(message.get("ts"))
    return None

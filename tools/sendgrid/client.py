"""SendGrid v3 through the `sendgrid` library: the only place SendGrid is called."""

from __future__ import annotations

import http.client
import json
import logging
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.request import OpenerDirector, Request

import python_http_client
from python_http_client.exceptions import HTTPError
from sendgrid import SendGridAPIClient
from sendgrid.helpers.mail import CustomArg, From, Mail, To

from shared.errors import BadVendorReply, InvalidInput
from shared.run_header import RUN_ID_HEADER
from shared.settings import Settings
from shared.vendor_errors import error_for_status, transport_error
from shared.vendor_requests import counted_request, http_request

logger = logging.getLogger(__name__)

STEP_ARG = "chimera_step"
RUN_ARG = "run_id"
ACTIVITY_LIMIT = 10
# Stands in for an unset key: given an empty one, the SDK would quietly read SENDGRID_API_KEY
# from the environment instead, and the request fails with 401 either way.
_UNSET_KEY = "unset"
T = TypeVar("T")


class SendGridMailer:
    """Sends mail and finds it again by its step key. Built once per instance."""

    def __init__(self, settings: Settings, *, opener: OpenerDirector | None = None) -> None:
        """`opener` sends every request instead of urllib's default (a test's recorder)."""
        # https://api.sendgrid.com (the SDK's default) or the sandbox's <sandbox>/sendgrid:
        # the client appends /v3/mail/send and /v3/messages.
        self._sendgrid = SendGridAPIClient(
            api_key=settings.sendgrid_key or _UNSET_KEY, host=settings.vendor_url("sendgrid")
        )
        self._opener = opener
        # urllib takes one timeout for connecting and for each read.
        self._timeout = settings.vendor_read_timeout
        # python_http_client logs every request's headers, Authorization included, at DEBUG.
        logging.getLogger("python_http_client.client").setLevel(logging.INFO)

    def send(
        self,
        *,
        to_email: str,
        to_name: str,
        from_email: str,
        from_name: str,
        subject: str,
        text: str,
        html: str,
        custom_args: dict[str, str],
    ) -> str:
        """Send one email; returns SendGrid's X-Message-Id.

        `custom_args` must carry `chimera_step` (what find_sent looks for) and `run_id`.
        """
        missing = [arg for arg in (STEP_ARG, RUN_ARG) if not custom_args.get(arg)]
        if missing:
            raise InvalidInput(f"custom_args must include {', '.join(missing)}")
        mail = Mail(
            from_email=From(from_email, from_name or None),
            to_emails=To(to_email, to_name or None),
            subject=subject,
            plain_text_content=text,
            html_content=html,
        )
        mail.custom_arg = [CustomArg(key, str(value)) for key, value in custom_args.items()]
        response = self._call(
            "mail.send",
            lambda: self._client(custom_args[RUN_ARG]).mail.send.post(
                request_body=mail.get(), timeout=self._timeout
            ),
        )
        message_id = response.headers.get("X-Message-Id") if response.headers else None
        if response.status_code != 202 or not message_id:
            raise BadVendorReply(
                f"SendGrid answered {response.status_code} without an X-Message-Id"
            )
        logger.debug("sendgrid mail.send accepted message %s", message_id)
        return str(message_id)

    def find_sent(self, *, step_key: str) -> str | None:
        """The X-Message-Id of a mail already sent for this step, via Email Activity, or None.

        Email Activity is a paid add-on and lags sends by seconds to minutes, so None means
        "not seen yet", not "certainly never sent".
        """
        found = self.find_message(step_key=step_key)
        return found["message_id"] if found else None

    def find_message(self, *, step_key: str) -> dict[str, str] | None:
        """The newest mail sent for this step, via Email Activity: its X-Message-Id, recipient
        and subject; None when not seen (yet)."""
        escaped = step_key.replace("\\", "\\\\").replace('"', '\\"')
        query = f"unique_args['{STEP_ARG}']=\"{escaped}\""
        response = self._call(
            "messages.search",
            lambda: self._client(None).messages.get(
                query_params={"query": query, "limit": ACTIVITY_LIMIT}, timeout=self._timeout
            ),
        )
        try:
            body = json.loads(response.body) if response.body else None
        except ValueError:
            raise BadVendorReply(
                "SendGrid Email Activity answered a body that is not JSON"
            ) from None
        messages = body.get("messages") if isinstance(body, dict) else None
        if response.status_code != 200 or not isinstance(messages, list):
            raise BadVendorReply("SendGrid Email Activity answered without a messages list")
        for message in messages:
            msg_id = message.get("msg_id") if isinstance(message, dict) else None
            if isinstance(msg_id, str) and msg_id:
                # Activity ids are the X-Message-Id followed by ".filter...": keep the prefix.
                return {
                    "message_id": msg_id.split(".", 1)[0],
                    "to_email": str(message.get("to_email") or ""),
                    "subject": str(message.get("subject") or ""),
                }
        return None

    def _client(self, run_id: str | None) -> python_http_client.Client:
        """A request-scoped client with its own headers.

        python_http_client merges per-call headers into the shared client's dict, so a run id
        set on one call would stick to later calls and race between threads.
        """
        headers = dict(self._sendgrid.client.request_headers)
        if run_id:
            headers[RUN_ID_HEADER] = run_id
        options: dict[str, Any] = {
            "host": self._sendgrid.host,
            "request_headers": headers,
            "version": 3,
            "timeout": self._timeout,
        }
        return _TracedClient(self._opener, **options)

    @counted_request  # each request weighs in the vendor's circuit breaker
    def _call(self, action: str, work: Callable[[], T]) -> T:
        try:
            return work()
        except HTTPError as exc:
            status, reason = exc.status_code, str(exc.reason or "")
            raise error_for_status(
                "SendGrid", action, status, exc.body, exc.headers, reason=reason
            ) from None
        except (http.client.HTTPException, OSError) as exc:
            # OSError covers urllib's URLError and the stdlib's TimeoutError.
            raise transport_error("SendGrid", action, exc) from None


class _TracedClient(python_http_client.Client):
    """python_http_client's Client with each request traced, sending through one given urllib
    opener (a test's recorder) or, without one, a fresh default one per request; the clients
    it builds for each path segment keep both."""

    def __init__(self, opener: OpenerDirector | None, **options: Any) -> None:
        super().__init__(**options)
        self._opener = opener

    def _build_client(self, name: str | None = None) -> python_http_client.Client:
        return _TracedClient(
            self._opener,
            host=self.host,
            version=self._version,
            request_headers=self.request_headers,
            url_path=self._url_path + [name] if name else self._url_path,
            append_slash=self.append_slash,
            timeout=self.timeout,
        )

    def _make_request(self, opener: OpenerDirector, request: Request, timeout: Any = None) -> Any:
        # The SDK's own seam ("separated into its own function, so we can mock it").
        with http_request("sendgrid", request.get_method(), request.full_url) as exchange:
            try:
                response = super()._make_request(self._opener or opener, request, timeout=timeout)
            except HTTPError as exc:
                exchange.answered(exc.status_code)
                raise
            exchange.answered(response.getcode())
            return response

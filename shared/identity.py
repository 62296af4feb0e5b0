"""Who may call a function: Google-signed OIDC ID tokens behind Cloud Functions' IAM, and
locally the dispatcher's signature on each task.

On Cloud Functions the platform refuses unauthenticated calls before our code runs; with
`require_identity` each target also verifies the caller's token itself (defence in depth):
Google signed it, it is current, it names this function as its audience and, for a queue's
target, it is the tasks service account's.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import flask
from google.auth import exceptions, jwt

from shared.errors import RetryableError, VendorUnavailable
from shared.queues import QUEUES
from shared.request_guard import body_refused
from shared.settings import Settings
from shared.task_signing import SIGNATURE_HEADER, TASK_NAME_HEADER, signer_for
from shared.tasks_http import answer, retry_later

log = logging.getLogger(__name__)

GOOGLE_CERTS_URL = "https://www.googleapis.com/oauth2/v1/certs"
GOOGLE_ISSUERS = frozenset({"accounts.google.com", "https://accounts.google.com"})
INTAKE_FUNCTION = "orchestrator-intake"


class TokenVerifier(Protocol):
    def claims(self, token: str) -> Mapping[str, Any]:
        """The token's claims if its signature and times are valid, else ValueError."""
        ...


class GoogleCerts:
    """Google's token-signing certificates by key id, fetched and kept for an hour.

    Google rotates its keys: a token signed with a key we do not know yet refetches them, at
    most once a minute so that made-up key ids cannot make us hammer the endpoint.
    """

    def __init__(
        self,
        fetch: Callable[[], Mapping[str, str]] | None = None,
        ttl_s: float = 3600,
        refetch_after_s: float = 60,
    ) -> None:
        self._fetch = fetch or _fetch_google_certs
        self._ttl_s = ttl_s
        self._refetch_after_s = refetch_after_s
        self._certs: Mapping[str, str] = {}
        self._fetched_at = float("-inf")
        self._lock = threading.Lock()

    def get(self, key_id: str | None) -> Mapping[str, str]:
        with self._lock:
            age = time.monotonic() - self._fetched_at
            unknown = key_id is not None and key_id not in self._certs
            if age > self._ttl_s or (unknown and age > self._refetch_after_s):
                self._certs = dict(self._fetch())
                self._fetched_at = time.monotonic()
            return self._certs


def _fetch_google_certs() -> Mapping[str, str]:
    from google.auth.transport.requests import Request

    try:
        response = Request()(url=GOOGLE_CERTS_URL, method="GET", timeout=10)
    except exceptions.TransportError as exc:
        raise VendorUnavailable(f"could not fetch Google's certificates: {exc}") from exc
    if response.status != 200:
        raise VendorUnavailable(f"could not fetch Google's certificates: HTTP {response.status}")
    certs: Mapping[str, str] = json.loads(response.data)
    return certs


class GoogleTokenVerifier:
    """Verifies ID tokens against Google's certificates, or against `certs` (kid -> PEM)."""

    def __init__(
        self, certs: Mapping[str, str] | GoogleCerts | None = None, clock_skew_s: int = 10
    ) -> None:
        self._certs = certs if certs is not None else GoogleCerts()
        self._clock_skew_s = clock_skew_s

    def claims(self, token: str) -> Mapping[str, Any]:
        certs = self._certs
        if isinstance(certs, GoogleCerts):
            certs = certs.get(jwt.decode_header(token).get("kid"))
        # The audience is checked by the caller, so that a wrong one is told apart (403).
        claims: Mapping[str, Any] = jwt.decode(
            token, certs=certs, clock_skew_in_seconds=self._clock_skew_s
        )
        return claims


_lock = threading.Lock()
_verifier: TokenVerifier | None = None


def verifier() -> TokenVerifier:
    global _verifier
    with _lock:
        if _verifier is None:
            _verifier = GoogleTokenVerifier()
        return _verifier


def use_verifier(new: TokenVerifier | None) -> None:
    """Verify tokens with `new` in this process (tests); None goes back to Google's certs."""
    global _verifier
    with _lock:
        _verifier = new


def task_audience(settings: Settings, queue: str) -> str:
    """The audience of a queue's tasks: the URL Cloud Tasks POSTs them to."""
    return f"{settings.functions_url.rstrip('/')}/{QUEUES[queue].target}"


def intake_audience(settings: Settings) -> str:
    return settings.intake_audience or f"{settings.functions_url.rstrip('/')}/{INTAKE_FUNCTION}"


def identity_denied(
    request: flask.Request, settings: Settings, *, audience: str, email: str | None = None
) -> flask.Response | None:
    """The answer refusing `request`'s caller, or None to let it through.

    Refuses with 401 a request without a valid Google-signed ID token, and with 403 one whose
    token was issued by someone else, for another audience or, when `email` is given, to
    another account (an empty `email` means the expected account is not configured).
    Does nothing unless settings.require_identity.
    """
    if not settings.require_identity:
        return None
    return _token_denied(request, audience=audience, email=email)


def _token_denied(
    request: flask.Request, *, audience: str, email: str | None
) -> flask.Response | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return _refuse(401, "no bearer token")
    try:
        claims = verifier().claims(token.strip())
    except RetryableError as exc:  # our side failed (certificates), not the caller
        log.error("cannot verify callers: %s", exc.message)
        return retry_later(exc)
    except (ValueError, exceptions.GoogleAuthError) as exc:
        return _refuse(401, f"invalid token: {exc}")
    if claims.get("iss") not in GOOGLE_ISSUERS:
        return _refuse(403, "the token was not issued by Google")
    if claims.get("aud") != audience:
        return _refuse(403, f"the token is for another audience, not {audience}")
    if email is not None:
        if not email:
            return _refuse(403, "no caller is configured for this target")
        if claims.get("email") != email or claims.get("email_verified") is False:
            return _refuse(403, f"the token's account is not {email}")
    return None


def _refuse(status: int, reason: str, challenge: str = "Bearer") -> flask.Response:
    log.warning("refused a caller: %s", reason)
    code = "unauthenticated" if status == 401 else "permission_denied"
    headers = {"WWW-Authenticate": challenge} if status == 401 else None
    return answer(status, {"error": {"code": code, "message": reason}}, headers)


def task_caller_denied(
    request: flask.Request, settings: Settings, queue: str
) -> flask.Response | None:
    """The answer refusing a task that did not come from `queue`, or None to let it through.

    First the body: JSON (415) within settings.max_body_bytes (413), read no further. Then the
    caller. Locally, the local dispatcher's HMAC signature over the body, the task name and
    the delivery's time (shared/task_signing.py): 401 unsigned, 403 forged, tampered or outside
    the replay window. On gcp, the tasks service account's Google ID token for this queue's
    URL, whatever `require_identity` says: a task target has no other caller to let in
    (docs/decisions/0010g-only-the-queue-calls-the-functions.md). Only the Cloud Tasks emulator,
    which mints no tokens, is let through on IAM alone (`require_identity` off). Nothing is
    recorded for a refused caller: strangers must not be able to fill the store.
    """
    refused = body_refused(request, settings.max_body_bytes)
    if refused is not None:
        log.warning("refused a %s task: HTTP %d", queue, refused.status_code)
        return refused
    if settings.backend == "local":
        signer = signer_for(settings.home, settings.task_signature_window)
        refusal = signer.refusal(
            request.get_data(), request.headers.get(TASK_NAME_HEADER, ""), _signature(request)
        )
        if refusal is None:
            return None
        return _refuse(refusal.status, refusal.reason, challenge=SIGNATURE_HEADER)
    if settings.tasks_emulator_host and not settings.require_identity:
        return None
    return _token_denied(
        request, audience=task_audience(settings, queue), email=settings.tasks_service_account
    )


def _signature(request: flask.Request) -> str | None:
    return request.headers.get(SIGNATURE_HEADER)

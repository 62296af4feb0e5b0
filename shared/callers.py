"""Who calls the HTTP intake, and what they may do: a Google account with a verified ID token
in the cloud; a named bearer key, or a console session standing for one, locally."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import flask
from google.auth import exceptions

from shared import identity
from shared.errors import RetryableError
from shared.keys import SESSION_COOKIE, Keys, bearer_token
from shared.settings import Settings
from shared.tasks_http import answer, retry_later

log = logging.getLogger(__name__)

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# Recorded as the actor when IAM alone let the caller in (intake_require_identity=false on gcp).
IAM_INVOKER = "iam-invoker"


@dataclass(frozen=True)
class Caller:
    """An authenticated caller: `name` is the actor the audit trail records for what it does
    (a key's name, or the verified email of a Google account); an `operator` may also read runs,
    which hold clients' personal data, and act on them, where others may only submit."""

    name: str
    operator: bool


def intake_caller(
    request: flask.Request, settings: Settings, keys: Keys
) -> Caller | flask.Response:
    """The caller of `request`, or the answer refusing it: 401 (with `WWW-Authenticate:
    Bearer`) for a missing, unknown, revoked or expired credential; 403 for a token meant for
    someone else, or a cookie-borne change from another site."""
    if settings.intake_identity_required:
        return _google_account(request, settings)
    if settings.backend == "gcp":
        return Caller(IAM_INVOKER, operator=True)
    return _key_holder(request, keys)


def refused(status: int, reason: str) -> flask.Response:
    log.warning("refused an intake caller: %s", reason)
    code = {401: "unauthenticated", 403: "permission_denied"}[status]
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return answer(status, {"error": {"code": code, "message": reason}}, headers)


def _google_account(request: flask.Request, settings: Settings) -> Caller | flask.Response:
    token = bearer_token(request.headers.get("Authorization", ""))
    if token is None:
        return refused(401, "no bearer token: send a Google ID token for this intake")
    try:
        claims = identity.verifier().claims(token)
    except RetryableError as exc:  # our side failed (certificates), not the caller
        log.error("cannot verify intake callers: %s", exc.message)
        return retry_later(exc)
    except (ValueError, exceptions.GoogleAuthError) as exc:
        return refused(401, f"invalid token: {exc}")
    named = tuple(a.strip() for a in settings.intake_audience.split(",") if a.strip())
    audiences = named or (identity.intake_audience(settings),)
    if claims.get("iss") not in identity.GOOGLE_ISSUERS:
        return refused(403, "the token was not issued by Google")
    if claims.get("aud") not in audiences:
        return refused(403, f"the token is for another audience, not {', '.join(audiences)}")
    email = str(claims.get("email") or "").lower()
    if not email or claims.get("email_verified") is False:
        return refused(403, "the token names no verified email: who acts cannot be recorded")
    operators = {e.strip().lower() for e in settings.intake_operators.split(",") if e.strip()}
    return Caller(email, operator=email in operators)


def _key_holder(request: flask.Request, keys: Keys) -> Caller | flask.Response:
    authorization = request.headers.get("Authorization")
    if authorization is not None:
        token = bearer_token(authorization)
        name = keys.caller(token) if token else None
        if name is None:
            return refused(401, "the bearer key is unknown or revoked")
        return Caller(name, operator=True)
    session = request.cookies.get(SESSION_COOKIE)
    if session is None:
        return refused(
            401, "no key: send Authorization: Bearer KEY (make one with `chimera keys create`)"
        )
    name = keys.session_caller(session)
    if name is None:
        return refused(401, "the session has expired or its key was revoked: sign in again")
    if request.method not in SAFE_METHODS:
        problem = cross_site_problem(request)
        if problem is not None:
            return refused(403, f"a change by cookie must come from this site: {problem}")
    return Caller(name, operator=True)


def cross_site_problem(request: flask.Request) -> str | None:
    """Why a cookie-borne request may come from another page's site, or None.

    SameSite=Strict keeps the cookie off requests from other sites, but every port of
    127.0.0.1 is the same site, so a page served by any local process could still send it:
    the Origin must be this server's own, exactly.
    """
    fetch_site = request.headers.get("Sec-Fetch-Site")
    if fetch_site is not None and fetch_site not in ("same-origin", "none"):
        return f"the browser says the request is {fetch_site}"
    origin = request.headers.get("Origin")
    if origin is None:
        return "no Origin header"
    own = f"{request.scheme}://{request.host}"
    if origin != own:
        return f"it comes from {origin}, not {own}"
    return None

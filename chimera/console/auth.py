"""Who uses the console, and what a change needs: a signed-in session (chimera.stack's
ConsoleSignIn sets its cookie) for every page, and for every POST also this server's own
Origin and a CSRF token bound to the session."""

from __future__ import annotations

import hashlib
import hmac

import flask

from shared.callers import cross_site_problem
from shared.keys import SESSION_COOKIE, Keys, local_credential
from shared.runtime import Runtime

CSRF_FIELD = "csrf"


def keys_of(rt: Runtime) -> Keys:
    return Keys(rt.store, rt.settings.home)


def signed_in(rt: Runtime, request: flask.Request) -> str | None:
    """The name of the key the request's session stands for, or None (no session, expired,
    or its key revoked)."""
    session = request.cookies.get(SESSION_COOKIE)
    return keys_of(rt).session_caller(session) if session else None


def csrf_token(rt: Runtime, request: flask.Request) -> str:
    """The session's CSRF token: only a page of this console, which the session can read,
    knows it; keyed by the local credential, so rotating it ends every token too."""
    session = request.cookies.get(SESSION_COOKIE, "")
    secret = hmac.new(
        local_credential(rt.settings.home).encode(), b"chimera console csrf", hashlib.sha256
    ).digest()
    return hmac.new(secret, session.encode(), hashlib.sha256).hexdigest()


def change_refused(rt: Runtime, request: flask.Request) -> str | None:
    """Why a POST may not change anything, or None: it must come from this server's own
    page (exact Origin) and carry the session's CSRF token."""
    problem = cross_site_problem(request)
    if problem is not None:
        return f"a change must come from this console's own page: {problem}"
    sent = request.form.get(CSRF_FIELD, "")
    if not sent or not hmac.compare_digest(sent, csrf_token(rt, request)):
        return "the form's CSRF token is missing or not this session's: reload the page"
    return None

"""Secrets out of text: the configured secrets in every spelling, and credentials by shape."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from urllib.parse import quote, quote_plus

MARKER = "[redacted]"
# Shorter values would blank out ordinary words; real secrets are far longer.
MIN_SECRET_LENGTH = 6
# A replacement can only make a new occurrence by meeting the marker; a few passes settle it.
_MAX_PASSES = 4

# Where a credential names itself: a header, a keyword argument, a dict's key, a cookie.
_NAMED = (
    r"(?:proxy-)?authorization|x-goog-api-key|x-api-key|api[_-]?key|apikey|private[_-]?key"
    r"|(?:access|refresh|id|auth|bearer|session)[_-]?token|client[_-]?secret|password|passwd"
    r"|secret|token|set-cookie|cookie"
)
# A value's end: whitespace, a quote, a separator, or the end of a JSON/Python container.
_VALUE = r"[^\s\"'\\,;&}\]]+"
_QUERY_VALUE = r"[^&#\s\"'\\<>]+"
_QUOTE = r"(?:\\?[\"'])?"
# Not a value redacted already: a second pass must leave `token=[redacted]` as it is.
_FRESH = rf"(?!{re.escape(MARKER)})"

# Each shape redacts its group `secret`, or the whole match when it has none.
CREDENTIAL_SHAPES: tuple[re.Pattern[str], ...] = (
    # A PEM private key, first: whole, before a named value could take its first word.
    re.compile(r"-----BEGIN[A-Z ]*PRIVATE KEY-----[^\"]*?-----END[A-Z ]*PRIVATE KEY-----"),
    # `Authorization: Bearer x`, `token=x`, `'api_key': 'x'`, `\"password\": \"x\"` (in JSON).
    # The scheme is possessive: `Bearer [redacted]` must not give up "Bearer" as the value.
    re.compile(
        rf"(?i)(?<![A-Za-z0-9])(?:[A-Za-z0-9]+[_-])?(?:{_NAMED})(?![A-Za-z0-9]){_QUOTE}\s*[:=]\s*"
        rf"{_QUOTE}(?:(?:bearer|basic|token|digest|negotiate)\s+)?+(?P<secret>{_FRESH}{_VALUE})"
    ),
    # In a URL's query: ?key=x, &access_token=x, ?sig=x (signed URLs).
    re.compile(
        rf"(?i)[?&;](?:(?:api|access|auth|private|client)[_-]?)?(?:key|token|secret)"
        rf"=(?P<secret>{_FRESH}{_QUERY_VALUE})"
    ),
    re.compile(rf"(?i)[?&;](?:apikey|password|sig|signature)=(?P<secret>{_FRESH}{_QUERY_VALUE})"),
    # A bearer token wherever it is written.
    re.compile(r"(?i)\bbearer\s+(?P<secret>[A-Za-z0-9._~+/=-]{6,})"),
    # Vendors' key formats, whatever their value.
    re.compile(r"\bSG\.[A-Za-z0-9_-]{6,}(?:\.[A-Za-z0-9_-]+)?"),  # SendGrid
    re.compile(r"\bxox[a-z]-[A-Za-z0-9-]+|\bxapp-[A-Za-z0-9-]+"),  # Slack
    re.compile(r"\bAIza[A-Za-z0-9_-]{35,}"),  # Google API keys
    re.compile(r"(?<![A-Za-z0-9])chimera_[A-Za-z0-9_-]{43}"),  # the intake's keys (shared/keys)
    re.compile(r"\b[0-9]{1,12}\.[0-9a-f]{64}\.[0-9a-f]{64}\b"),  # console sessions (shared/keys)
    re.compile(r"\beyJ[A-Za-z0-9_-]{4,}\.eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*"),  # JWTs (OIDC)
)


def spellings(secret: str) -> set[str]:
    """How `secret` can be written into a log line: as itself, inside a repr (%r, a dict, an
    exception's args), JSON-escaped (a JSON line, either way of escaping), URL-encoded."""
    quoted = {repr(secret)[1:-1], repr(repr(secret))[2:-2]}
    written = {secret, *quoted}
    escaped = {json.dumps(w, ensure_ascii=a)[1:-1] for w in written for a in (True, False)}
    encoded = {quote(secret, safe=""), quote(secret), quote_plus(secret)}
    return {s for s in written | escaped | encoded if len(s) >= MIN_SECRET_LENGTH}


class Redactor:
    """Replaces secrets in text with MARKER: the values it is given, in every spelling, and
    anything shaped like a credential (CREDENTIAL_SHAPES), whatever its value."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        variants = {v for s in secrets if len(s) >= MIN_SECRET_LENGTH for v in spellings(s)}
        # Longest first: a secret that starts another is not left half-spelled.
        ordered = sorted(variants, key=lambda v: (-len(v), v))
        self._values = re.compile("|".join(map(re.escape, ordered))) if ordered else None
        # A value inside the marker itself cannot be written out: checking for it would loop.
        self._hunted = [v for v in ordered if v not in MARKER]

    def __call__(self, text: str) -> str:
        for _ in range(_MAX_PASSES):
            text = self._once(text)
            if not any(v in text for v in self._hunted):
                break
        return text

    def _once(self, text: str) -> str:
        if self._values is not None:
            text = self._values.sub(MARKER, text)
        for shape in CREDENTIAL_SHAPES:
            text = shape.sub(_redact_match, text)
        return text


def _redact_match(match: re.Match[str]) -> str:
    if "secret" not in match.re.groupindex:
        return MARKER
    start, end = match.span("secret")
    whole = match.group(0)
    offset = match.start()
    return whole[: start - offset] + MARKER + whole[end - offset :]

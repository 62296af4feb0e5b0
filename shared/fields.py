"""The request's field types: text that is safe to pass on to every vendor, and domain names.

A request's text ends up in a Jira project, a Slack message and an email, so it is checked once,
at the intake: normalised (Unicode NFC, whitespace trimmed) before its length is counted, and
refused when it carries characters no person types into a form (controls, surrogates, line
separators, bidirectional overrides), with the field named in the error.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from typing import Annotated

import idna
from pydantic import AfterValidator, BeforeValidator, EmailStr, Field

# Categories no legitimate name or goal holds: controls (C0, DEL, C1), lone surrogates (they
# cannot even be encoded as UTF-8), and line or paragraph separators.
REFUSED_CATEGORIES = {
    "Cc": "a control character",
    "Cs": "a lone surrogate",
    "Zl": "a line separator",
    "Zp": "a paragraph separator",
}
# Bidirectional embeddings, overrides and isolates: they make text read differently from what
# it is (the "Trojan Source" trick). Zero-width joiners stay: emoji sequences need them.
BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
MULTILINE_ALLOWED = frozenset("\n\t")
ASCII_DOMAIN = re.compile(
    r"^(?=.{1,253}$)(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+"
    r"(?:[a-z]{2,63}|xn--[a-z0-9-]{1,59})$"
)


def _cleaner(multiline: bool):
    allowed = MULTILINE_ALLOWED if multiline else frozenset()

    def clean(value: object) -> object:
        if not isinstance(value, str):
            return value  # pydantic says it is not a string
        if multiline:
            value = value.replace("\r\n", "\n")
        value = unicodedata.normalize("NFC", value).strip()
        for char in value:
            if char in allowed:
                continue
            kind = REFUSED_CATEGORIES.get(unicodedata.category(char))
            if kind or char in BIDI_CONTROLS:
                name = kind or unicodedata.name(char).lower()
                raise ValueError(
                    f"contains U+{ord(char):04X} ({name}); "
                    + ("only newlines and tabs are allowed" if multiline else "plain text only")
                )
        return value

    return clean


def text(max_length: int, *, min_length: int = 0, multiline: bool = False):
    """A text field: cleaned as above, then held to its length (counted after cleaning)."""
    return Annotated[
        str,
        Field(min_length=min_length, max_length=max_length),
        BeforeValidator(_cleaner(multiline)),
    ]


@functools.lru_cache(maxsize=4096)
def ascii_domain(value: str) -> str:
    """The domain as DNS and HTTP see it: lower case, punycode for internationalised names.

    Accepts what people paste: a Unicode name (münchen.de), its punycode (xn--mnchen-3ya.de),
    a leading scheme or www., a trailing slash or dot.
    """
    value = value.strip().lower()
    for prefix in ("https://", "http://", "www."):
        value = value.removeprefix(prefix)
    value = value.rstrip("/").rstrip(".")
    try:
        # UTS 46 maps what a browser's address bar would (case, full-width dots); IDNA 2008
        # then refuses what cannot be a registered name, and decoding checks punycode labels.
        encoded = idna.encode(value, uts46=True).decode("ascii")
        idna.decode(encoded)
    except (idna.IDNAError, UnicodeError, ValueError):
        raise ValueError("not a domain name like example.com") from None
    if not ASCII_DOMAIN.match(encoded):
        raise ValueError("not a domain name like example.com")
    return encoded


def _ascii_email(value: str) -> str:
    """The address with its domain in punycode, as the domain field keeps it."""
    local, _, domain = value.rpartition("@")
    return f"{local}@{ascii_domain(domain)}"


def _email_length(value: object) -> object:
    if isinstance(value, str) and len(value) > 254:  # RFC 5321's limit on a path
        raise ValueError("an email address has at most 254 characters")
    return value


CompanyName = text(200, min_length=1)
PersonName = text(200)
Goal = text(2000, multiline=True)
ChannelName = text(80)
RequestId = text(128, min_length=1)
# Why a person rejected or cancelled a run: it goes in the run and its audit trail.
ActionReason = text(500, multiline=True)
ContactEmail = Annotated[
    EmailStr,
    BeforeValidator(_email_length),
    BeforeValidator(_cleaner(multiline=False)),
    AfterValidator(_ascii_email),
]
Domain = Annotated[
    str,
    Field(min_length=3, max_length=253),
    BeforeValidator(_cleaner(multiline=False)),
    AfterValidator(ascii_domain),
]

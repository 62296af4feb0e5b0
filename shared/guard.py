"""The guards on untrusted text: what reads as an attempt to steer the agent, and what would
reach someone the request does not name, run code when opened, or leak a credential.

Shared because the orchestrator (plans, revisions, enrichment) and the drafting tool judge text
with the same patterns, and a tool may not import the orchestrator. Deterministic and cheap:
a guard finds; the caller decides what a finding costs.
"""

from __future__ import annotations

import html
import re
import unicodedata
from collections.abc import Iterable, Mapping
from typing import Any

from shared.model import OnboardingRequest
from shared.registry import TOOLS

# An email address, Unicode and punycode forms included; xn-- is tried first, or the address
# of a client under a punycode TLD (.xn--p1ai) would be read cut short, as someone else's.
EMAIL = re.compile(r"[\w.%+-]+@[\w-]+(?:\.[\w-]+)*\.(?:xn--[\w-]+|[^\W\d_]{2,})")
# A link in any scheme, and the host it leads to.
LINK = re.compile(r"\b[a-z][a-z0-9+.-]{0,30}://([^/\s:?#\"'<>\\]+)", re.I)
# Scheme-less links a mail client makes clickable (www., host/path), and their hosts.
WWW_HOST = re.compile(r"(?<![\w.-])(www\d{0,3}\.[^\s/:?#\"'<>\\]+)", re.I)
PATH_HOST = re.compile(r"(?<![\w@.-])((?:[^\W_][\w-]*\.)+(?:[^\W\d_]{2,}|xn--[\w-]+))/")
# A Slack channel, not an HTML entity (&#39;), an anchor (/#top) or a ranking (#1).
CHANNEL = re.compile(r"(?<![\w&#/])#[a-z][a-z0-9._-]{1,79}\b", re.I)
# What reads as instructions to the agent rather than facts about a client.
INSTRUCTION = re.compile(
    r"\b(?:ignore|disregard|forget|override)\b[^.\n]{0,40}?\b(?:instructions?|prompts?|rules)\b"
    r"|\b(?:system prompt|you are now|new instructions|developer mode)\b"
    r"|\b(?:do not|don't) tell\b",
    re.I,
)
TOOL_CALL = re.compile(
    r"\b(?:call|run|invoke|use|execute|trigger)\s+(?:the\s+)?(?:tool|function|command)\s+"
    r"[`'\"]?([A-Za-z_][A-Za-z0-9_]*(?:[.-][A-Za-z0-9_]+)*)",
    re.I,
)
# Markup that runs, loads, submits or redirects when an email is opened.
UNSAFE_TAG = re.compile(
    r"<\s*(script|iframe|frame|frameset|object|embed|applet|form|input|button|textarea|select"
    r"|meta|base|link|style|svg|math)\b",
    re.I,
)
HANDLER = re.compile(r"[\s/\"']on[a-z]+\s*=", re.I)
SCRIPT_SCHEME = re.compile(r"(?:java|vb|live)script\s*:", re.I)
# Attributes that hold a URL (or style); entity-decoded before they are judged, as browsers do.
URL_ATTRIBUTE = re.compile(
    r"\b(href|src|action|formaction|xlink:href|background|poster|srcdoc|lowsrc|dynsrc|style)"
    r"\s*=\s*(?:\"([^\"]*)\"|'([^']*)'|([^\s>]+))",
    re.I,
)
# What must never reach a client or a prompt: credential formats of the usual vendors.
CREDENTIALS = {
    "a SendGrid API key": re.compile(r"\bSG\.[\w-]{16,}\.[\w-]{16,}"),
    "a Slack token": re.compile(r"\bxox[abposr]-[\w-]{10,}"),
    "a Google API key": re.compile(r"\bAIza[\w-]{30,}"),
    "a Stripe key": re.compile(r"\b[sr]k_(?:live|test)_\w{16,}"),
    "an API secret key": re.compile(r"\bsk-[\w-]{20,}"),
    "a GitHub token": re.compile(r"\bgh[pousr]_\w{30,}"),
    "an AWS access key": re.compile(r"\bAKIA[0-9A-Z]{16}\b"),
    "a private key": re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
}
FINDING_CHARS = 120


def scan(texts: Iterable[tuple[str, str]], request: OnboardingRequest) -> list[dict[str, str]]:
    """What in untrusted text looks like an attempt to steer the agent: instructions, tool
    calls, email addresses, Slack channels, links to hosts other than the client's own.

    `texts` are (where, text) pairs, as `strings` gives them. Each finding is a dict of kind
    (instruction, tool, email, url, channel), text and where, once per kind and text.
    """
    findings: list[dict[str, str]] = []
    seen: set[tuple[str, str]] = set()

    def add(kind: str, text: str, where: str) -> None:
        if (kind, text.lower()) not in seen:
            seen.add((kind, text.lower()))
            findings.append({"kind": kind, "text": text[:FINDING_CHARS], "where": where})

    for where, text in texts:
        for match in INSTRUCTION.finditer(text):
            add("instruction", match.group(0), where)
        for match in TOOL_CALL.finditer(text):
            add("instruction", match.group(0), where)
            if match.group(1) not in TOOLS:
                add("tool", match.group(1), where)
        for address in EMAIL.findall(text):
            if address.lower() != str(request.contact_email).lower():
                add("email", address, where)
        for match in LINK.finditer(text):
            if not clients_host(match.group(1), request.domain):
                add("url", match.group(0), where)
        for match in CHANNEL.finditer(text):
            if match.group(0).lower() != request.slack_channel:
                add("channel", match.group(0), where)
    return findings


def strings(value: Any, where: str = "") -> list[tuple[str, str]]:
    """Every string in a JSON-like value, with where it is (company.description, tags[0])."""
    if isinstance(value, str):
        return [(where or "value", value)]
    if isinstance(value, Mapping):
        return [
            pair for k, v in value.items() for pair in strings(v, f"{where}.{k}" if where else k)
        ]
    if isinstance(value, list | tuple):
        return [pair for i, v in enumerate(value) for pair in strings(v, f"{where}[{i}]")]
    return []


def foreign_targets(
    request: OnboardingRequest, *, plain: Iterable[str] = (), markup: str = ""
) -> list[str]:
    """Addresses other than the contact's and hosts other than the client's, in `plain` text
    and in `markup` as a reader would see them (entities decoded, compatibility forms folded)
    and as its links hold them (also protocol-relative, "//host/...")."""
    folded = unicodedata.normalize("NFKC", markup)
    shown = "\n".join(
        unicodedata.normalize("NFKC", part) for part in (*plain, html.unescape(folded))
    )
    shown += "\n" + "\n".join(
        "https:" + v if v.startswith("//") else v
        for v in (re.sub(r"[\s\x00-\x1f]+", "", value) for _, value in url_attributes(folded))
    )
    contact = str(request.contact_email).lower()
    found = [a for a in EMAIL.findall(shown) if a.lower() != contact]
    hosts = LINK.findall(shown) + WWW_HOST.findall(shown) + PATH_HOST.findall(shown)
    found += [h for h in hosts if not clients_host(h, request.domain)]
    return list(dict.fromkeys(found))


def active_html(markup: str) -> list[str]:
    """What in the HTML would run or load when opened: tags, handlers, script URLs."""
    markup = unicodedata.normalize("NFKC", markup)
    found = [m.group(0) for m in UNSAFE_TAG.finditer(markup)]
    found += [m.group(0).strip(" \t\n/\"'") for m in HANDLER.finditer(markup)]
    found += [m.group(0) for m in SCRIPT_SCHEME.finditer(markup)]
    for name, value in url_attributes(markup):
        compact = re.sub(r"[\s\x00-\x1f]+", "", value).lower()
        if name == "style":
            if "expression(" in compact or SCRIPT_SCHEME.search(compact):
                found.append(f"{name}={compact[:40]}")
        elif re.match(r"(?:java|vb|live)script:|data:", compact):
            found.append(f"{name}={compact[:40]}")
    return list(dict.fromkeys(found))


def credentials(text: str) -> list[str]:
    """The kinds of credential the text seems to carry (never the values: they are logged)."""
    return [kind for kind, pattern in CREDENTIALS.items() if pattern.search(text)]


def clients_host(host: str, domain: str) -> bool:
    """Whether `host` is the client's domain or under it (an ideographic full stop is a dot,
    as IDNA reads it)."""
    host = host.lower().replace("\u3002", ".").rstrip(".")
    return host == domain or host.endswith("." + domain)


def url_attributes(markup: str) -> list[tuple[str, str]]:
    """The (name, entity-decoded value) of every attribute in `markup` that holds a URL."""
    return [
        (m.group(1).lower(), html.unescape(next(g for g in m.groups()[1:] if g is not None)))
        for m in URL_ATTRIBUTE.finditer(markup)
    ]

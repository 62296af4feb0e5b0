"""The vendors' documented base URLs, and why a configured base URL cannot be right."""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit


@dataclass(frozen=True)
class VendorEndpoint:
    """A vendor's documented production base URL, and what its client appends to it.

    The sandbox's base for the vendor has the same shape, `<sandbox_url>/<vendor><path>`
    (Slack: `<sandbox>/slack/api/`), so a client builds the same paths against either.
    """

    documented: str
    # Path segments the client adds itself: a base URL that already holds one doubles it.
    appended: frozenset[str] = frozenset()

    @property
    def host(self) -> str:
        return urlsplit(self.documented).hostname or ""

    @property
    def path(self) -> str:
        """The documented base path without its trailing slash ("/api" for Slack, else "")."""
        return urlsplit(self.documented).path.rstrip("/")

    @property
    def domain(self) -> str:
        """The vendor's own domain: a host under it must use the documented path exactly."""
        return ".".join(self.host.split(".")[-2:])


# Checked against the vendors' API references and the SDKs' own defaults (slack_sdk's
# BaseClient.BASE_URL, SendGridAPIClient's host, google-genai's base URLs).
VENDOR_ENDPOINTS = {
    # GET /v2/companies/find?domain=
    "clearbit": VendorEndpoint(
        "https://company.clearbit.com", frozenset({"v1", "v2", "companies"})
    ),
    # The site URL, no /jira: the library adds /rest/api/2/... and browse links add /browse/.
    "jira": VendorEndpoint("https://your-site.atlassian.net", frozenset({"rest", "browse"})),
    # python_http_client adds /v3 (version=3), then mail/send or messages.
    "sendgrid": VendorEndpoint("https://api.sendgrid.com", frozenset({"v3", "mail", "messages"})),
    # slack_sdk adds only the method name (chat.postMessage) to its base URL.
    "slack": VendorEndpoint("https://slack.com/api/", frozenset({"chat.postMessage"})),
    # google-genai adds /{api_version}/models/... (Vertex AI: .../projects/...).
    "gemini": VendorEndpoint(
        "https://generativelanguage.googleapis.com",
        frozenset({"v1", "v1beta", "v1alpha", "v1beta1", "models", "projects"}),
    ),
}
# Gemini on Vertex AI: a regional endpoint, or the global one for location `global`.
VERTEX_AI_URL = "https://{location}-aiplatform.googleapis.com"
VERTEX_AI_GLOBAL_URL = "https://aiplatform.googleapis.com"
# The website provider reads https://{domain}/ itself; the sandbox serves it under /website.
WEBSITE_URL = "https://{domain}/"
WEBSITE_PLACEHOLDER = "{domain}"
_VERTEX_HOST_LOCATION = (
    re.compile(r"^(?P<location>[a-z0-9-]+)-aiplatform\.googleapis\.com$"),
    re.compile(r"^aiplatform\.(?P<location>[a-z0-9-]+)\.rep\.googleapis\.com$"),
)


def base_url_problem(vendor: str, url: str) -> str | None:
    """Why `url` cannot be `vendor`'s base URL, whatever else is configured, or None."""
    endpoint = VENDOR_ENDPOINTS[vendor]
    shape = url_shape_problem(url)
    if shape:
        return shape
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    path = parts.path.rstrip("/")
    segments = [s for s in path.split("/") if s]
    own = host == endpoint.domain or host.endswith("." + endpoint.domain)
    if own and parts.scheme != "https":
        return "the vendor is only served over https"
    doubled = [s for s in segments if s in endpoint.appended]
    if doubled:
        return f"the client adds /{doubled[0]} itself, so the base URL must stop before it"
    if endpoint.path and not path.endswith(endpoint.path):
        return f"its path must end in {endpoint.path}"
    if endpoint.path and path.endswith(endpoint.path + endpoint.path):
        return f"{endpoint.path} appears twice"
    if own and path != endpoint.path:
        return f"the path on {host} must be {endpoint.path or 'empty'}"
    return None


def website_url_problem(url: str) -> str | None:
    """Why `url` cannot be the website provider's page URL template, or None."""
    if WEBSITE_PLACEHOLDER not in url:
        return f"it must contain {WEBSITE_PLACEHOLDER}"
    return url_shape_problem(url.replace(WEBSITE_PLACEHOLDER, "example.com"))


def vertex_ai_url(location: str) -> str:
    """Vertex AI's documented endpoint for `location`."""
    if location == "global":
        return VERTEX_AI_GLOBAL_URL
    return VERTEX_AI_URL.format(location=location or "LOCATION")


def url_shape_problem(url: str) -> str | None:
    """Why `url` cannot be a base URL at all, or None."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        return "it is not a URL"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "it needs http:// or https:// and a host"
    if parts.username or parts.password:
        return "credentials do not belong in the URL"
    if parts.query or parts.fragment or any(c.isspace() for c in url):
        return "a base URL has no query, fragment or spaces"
    return None


def vertex_location(host: str) -> str | None:
    if host == urlsplit(VERTEX_AI_GLOBAL_URL).hostname:
        return "global"
    for pattern in _VERTEX_HOST_LOCATION:
        if match := pattern.fullmatch(host):
            return match.group("location")
    return None


def shown(url: str) -> str:
    """The URL as safe to print: user:password@, the query and the fragment (which may hold
    a key or token) left out."""
    try:
        parts = urlsplit(url)
        netloc = parts.netloc.rsplit("@", 1)[-1]
        shown = parts._replace(
            netloc=netloc,
            query="..." if parts.query else "",
            fragment="..." if parts.fragment else "",
        ).geturl()
    except ValueError:
        return "<not a URL>"
    return repr(shown) if any(c.isspace() for c in shown) else shown

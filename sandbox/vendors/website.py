"""Companies' home pages (`GET /website/<domain>/`): title, meta and og tags, JSON-LD.

The same domain always describes the same company as the Clearbit sandbox. A first label
starting with `nosite` has no site (404), `bigsite` answers a page over 512 KB, `redirect`
redirects to the cloud metadata server (a private address a client must refuse), and `moved`
redirects to the same page without the `moved-` prefix.
"""

from __future__ import annotations

import html
import json
import re
from typing import Any

from sandbox.calls import Call, Reply, Route
from sandbox.vendors.clearbit import company_profile

_DOMAIN_RE = re.compile(r"^(?=.{1,253}$)([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z0-9-]{2,63}$")
PRIVATE_TARGET = "http://169.254.169.254/computeMetadata/v1/"
BIG_PAGE_BYTES = 640 * 1024
_HTML = "text/html; charset=utf-8"


class WebsiteApi:
    """Deterministic home pages, one per domain; no credentials, as on the open web."""

    name = "website"
    secret_keys: tuple[str, ...] = ()

    def routes(self) -> list[Route]:
        return [Route("/<domain>/", ("GET",), "page.get", self.page)]

    def authenticate(self, call: Call) -> Reply | None:
        return None

    def run_id(self, call: Call) -> str | None:
        return None

    def error_reply(self, status: int) -> Reply:
        return _page(status, f"<html><head><title>{status}</title></head><body>Error</body></html>")

    def not_found_reply(self, path: str) -> Reply:
        return _page(404, "<html><head><title>Not Found</title></head></html>")

    def rate_limited_reply(self) -> Reply:
        reply = _page(429, "<html><head><title>Too Many Requests</title></head></html>")
        reply.headers["Retry-After"] = "1"
        return reply

    def page(self, call: Call) -> Reply:
        domain = call.args.get("domain", "").strip().lower()
        if not _DOMAIN_RE.match(domain):
            return _page(400, "<html><head><title>Bad Request</title></head></html>")
        label = domain.split(".", 1)[0]
        if label.startswith("nosite"):
            return _page(404, "<html><head><title>Not Found</title></head></html>")
        if label.startswith("redirect"):
            return Reply(
                status=302, body="", headers={"Location": PRIVATE_TARGET}, content_type=_HTML
            )
        if label.startswith("moved-"):
            target = f"{call.base_url}/{domain.removeprefix('moved-')}/"
            return Reply(status=301, body="", headers={"Location": target}, content_type=_HTML)
        page = home_page(domain)
        if label.startswith("bigsite"):
            filler = "<p>" + "All about us. " * 60 + "</p>\n"
            page = page.replace("</body>", filler * (BIG_PAGE_BYTES // len(filler) + 1) + "</body>")
        return _page(200, page)


def home_page(domain: str) -> str:
    """The home page of the company the Clearbit sandbox describes for `domain`."""
    company: dict[str, Any] = company_profile(domain)
    name, description = company["name"], company["description"]
    industry, tags = company["category"]["industry"], company["tags"]
    geo = company["geo"]
    label = domain.split(".", 1)[0]
    organization = {
        "@context": "https://schema.org",
        "@type": "Organization",
        "name": name,
        "url": f"https://{domain}/",
        "logo": f"https://{domain}/logo.png",
        "description": description,
        "numberOfEmployees": {
            "@type": "QuantitativeValue",
            "value": company["metrics"]["employees"],
        },
        "address": {
            "@type": "PostalAddress",
            "addressLocality": geo["city"],
            "addressCountry": geo["country"],
        },
        "sameAs": [f"https://www.linkedin.com/company/{label}", f"https://x.com/{label}"],
        "knowsAbout": [industry, *tags],
    }
    e = html.escape
    # </script> inside a JSON-LD string would end the script: escape the slash, as JSON allows.
    ld = json.dumps(organization, indent=2).replace("</", "<\\/")
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{e(name)} | {e(industry)}</title>
<meta name="description" content="{e(description)}">
<meta name="keywords" content="{e(", ".join(tags))}">
<meta property="og:type" content="website">
<meta property="og:site_name" content="{e(name)}">
<meta property="og:title" content="{e(name)} | {e(industry)}">
<meta property="og:description" content="{e(description)}">
<meta property="og:url" content="https://{e(domain)}/">
<meta property="og:image" content="https://{e(domain)}/og.png">
<script type="application/ld+json">
{ld}
</script>
</head>
<body>
<h1>{e(name)}</h1>
<p>{e(description)}</p>
</body>
</html>
"""


def _page(status: int, body: str) -> Reply:
    return Reply(status=status, body=body, content_type=_HTML)

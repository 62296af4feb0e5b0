"""A company profile read from its home page: title, meta tags, Open Graph and JSON-LD."""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterator
from typing import Any

from bs4 import BeautifulSoup

# schema.org's Organization and the subtypes companies put on their home pages.
ORGANIZATION_TYPES = frozenset(
    {
        "organization",
        "corporation",
        "localbusiness",
        "onlinebusiness",
        "onlinestore",
        "professionalservice",
        "ngo",
        "educationalorganization",
        "governmentorganization",
        "medicalorganization",
        "newsmediaorganization",
        "sportsorganization",
        "store",
    }
)
_MAX_LD_SCRIPTS = 20
_MAX_LD_NODES = 200
_TITLE_SEPARATORS = re.compile(r"\s+[|\-–—·:]\s+")


def site_profile(
    page: bytes | str, domain: str, *, encoding: str | None = None
) -> dict[str, Any] | None:
    """The page's company profile, in the shape `core.profile_of` reads; None when it has none.

    A page counts as a profile when it says something about the company: a JSON-LD
    Organization, a description, or Open Graph's site name. A bare title (a parked domain, a
    proxy's error page) does not.
    """
    if isinstance(page, bytes):
        soup = BeautifulSoup(page, "html.parser", from_encoding=encoding)
    else:
        soup = BeautifulSoup(page, "html.parser")
    meta = _meta_tags(soup)
    org = _organization(soup)
    title = _clean(soup.title.get_text()) if soup.title else ""

    description = (
        _clean(org.get("description")) or meta.get("description") or meta.get("og:description", "")
    )
    site_name = _clean(org.get("name")) or meta.get("og:site_name", "")
    if not (org or description or site_name):
        return None
    name = site_name or _name_in_title(title, domain) or meta.get("og:title", "")
    city, country = _place(org)
    # schema.org has no industry property; sites that state one use `industry` anyway, others
    # list what they do in knowsAbout, the first item being the closest to an industry.
    topics = _strings(org.get("knowsAbout"))
    industries = _strings(org.get("industry"))
    if not industries and topics:
        industries, topics = topics[:1], topics[1:]
    keywords = [k for text in _strings(org.get("keywords")) for k in _split(text)]
    tags = list(dict.fromkeys(keywords or _split(meta.get("keywords", "")) or topics))
    return {
        "name": name,
        "domain": domain,
        "description": description,
        "category": {"industry": industries[0] if industries else ""},
        "metrics": {"employees": _employees(org.get("numberOfEmployees"))},
        "geo": {
            "city": city or meta.get("og:locality", ""),
            "country": country or meta.get("og:country-name", ""),
        },
        "tags": tags,
        "site": {
            "title": title,
            "url": _clean(org.get("url")) or meta.get("og:url", ""),
            "image": meta.get("og:image", ""),
            "sameAs": [u for u in _strings(org.get("sameAs")) if u.startswith(("https:", "http:"))],
        },
    }


def _meta_tags(soup: BeautifulSoup) -> dict[str, str]:
    """<meta name|property=... content=...>, lower-case keys, the first of each kept."""
    found: dict[str, str] = {}
    for tag in soup.find_all("meta"):
        key = str(tag.get("property") or tag.get("name") or "").strip().lower()
        content = _clean(tag.get("content"))
        if key and content and key not in found:
            found[key] = content
    return found


def _organization(soup: BeautifulSoup) -> dict[str, Any]:
    """The first JSON-LD node typed Organization (or a subtype); {} when there is none."""
    scripts = soup.find_all("script", attrs={"type": _is_json_ld})
    for script in scripts[:_MAX_LD_SCRIPTS]:
        text = script.get_text().strip()
        # Some sites still wrap scripts in HTML comments or CDATA markers.
        text = re.sub(r"^\s*(?://\s*)?(?:<!--|<!\[CDATA\[)|(?://\s*)?(?:-->|\]\]>)\s*$", "", text)
        try:
            data = json.loads(text, strict=False)
        except (ValueError, RecursionError):
            continue
        for node in _nodes(data):
            if _types(node) & ORGANIZATION_TYPES:
                return node
    return {}


def _is_json_ld(value: str | None) -> bool:
    return (value or "").split(";", 1)[0].strip().lower() == "application/ld+json"


def _nodes(data: Any) -> Iterator[dict[str, Any]]:
    """Every object in a JSON-LD document, breadth first, top-level and @graph ones first."""
    queue, seen = [data], 0
    while queue and seen < _MAX_LD_NODES:
        item = queue.pop(0)
        if isinstance(item, list):
            queue.extend(item)
        elif isinstance(item, dict):
            seen += 1
            yield item
            queue.extend(v for v in item.values() if isinstance(v, dict | list))


def _types(node: dict[str, Any]) -> set[str]:
    return {t.rsplit("/", 1)[-1].rsplit(":", 1)[-1].lower() for t in _strings(node.get("@type"))}


def _place(org: dict[str, Any]) -> tuple[str, str]:
    location = org.get("location")
    candidates = [org.get("address")]
    if isinstance(location, dict):
        candidates.append(location.get("address"))
    for address in candidates:
        for item in address if isinstance(address, list) else [address]:
            if isinstance(item, dict):
                city = _clean(item.get("addressLocality"))
                country = item.get("addressCountry")
                if isinstance(country, dict):
                    country = country.get("name")
                if city or country:
                    return city, _clean(country)
    return "", ""


def _employees(value: Any) -> int | None:
    """A count, or a QuantitativeValue's value (its lower bound when only a range is given)."""
    if isinstance(value, dict):
        for key in ("value", "minValue", "maxValue"):
            if (number := _employees(value.get(key))) is not None:
                return number
        return None
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return int(value) if value >= 0 else None
    if isinstance(value, str) and (match := re.fullmatch(r"\s*([\d,. ]+?)\+?\s*", value)):
        digits = re.sub(r"[,. ]", "", match.group(1))
        return int(digits) if digits else None
    return None


def _name_in_title(title: str, domain: str) -> str:
    """The part of "Home - Acme Robotics | Warehouse robots" that names the company."""
    parts = [p for p in _TITLE_SEPARATORS.split(title) if p]
    label = re.sub(r"[^a-z0-9]", "", domain.split(".", 1)[0].lower())
    for part in parts:
        if label and re.sub(r"[^a-z0-9]", "", part.lower()) == label:
            return part
    return parts[0] if parts else ""


def _strings(value: Any) -> list[str]:
    """A JSON-LD value as strings: a string, a list of them, or Things with a name."""
    items = value if isinstance(value, list) else [value]
    out = []
    for item in items:
        text = _clean(item.get("name") if isinstance(item, dict) else item)
        if text:
            out.append(text)
    return out


def _split(keywords: str) -> list[str]:
    return [k for k in (_clean(part) for part in keywords.split(",")) if k]


def _clean(value: Any) -> str:
    """Plain text: entities decoded, whitespace collapsed; anything but a string is empty."""
    if not isinstance(value, str):
        return ""
    return " ".join(html.unescape(value).split())

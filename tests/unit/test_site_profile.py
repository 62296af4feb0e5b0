"""Reading a company profile from a home page: meta tags, Open Graph, JSON-LD."""

from __future__ import annotations

import json

from tools.clearbit.core import profile_of
from tools.clearbit.site_profile import site_profile


def page(head: str = "", body: str = "") -> str:
    return f"<!DOCTYPE html><html><head>{head}</head><body>{body}</body></html>"


def ld(data: object) -> str:
    return f'<script type="application/ld+json">{json.dumps(data)}</script>'


ORGANIZATION = {
    "@context": "https://schema.org",
    "@type": "Organization",
    "name": "Acme Robotics",
    "url": "https://acme.example/",
    "description": "Acme builds  warehouse\n robots &amp; more.",
    "numberOfEmployees": {"@type": "QuantitativeValue", "value": 250},
    "address": {
        "@type": "PostalAddress",
        "addressLocality": "Lyon",
        "addressCountry": {"@type": "Country", "name": "France"},
    },
    "sameAs": ["https://www.linkedin.com/company/acme", "javascript:alert(1)"],
    "knowsAbout": ["Industrial Machinery", "Robotics", {"@type": "Thing", "name": "Logistics"}],
}


def test_profile_comes_from_json_ld_when_the_page_has_an_organization():
    html = page(
        "<title>Home - Acme Robotics</title>"
        '<meta name="description" content="Meta text">'
        '<meta property="og:site_name" content="Acme OG">' + ld(ORGANIZATION)
    )
    raw = site_profile(html, "acme.example")

    assert raw is not None
    assert raw["name"] == "Acme Robotics"
    assert raw["description"] == "Acme builds warehouse robots & more."
    assert raw["category"] == {"industry": "Industrial Machinery"}
    assert raw["metrics"] == {"employees": 250}
    assert raw["geo"] == {"city": "Lyon", "country": "France"}
    assert raw["tags"] == ["Robotics", "Logistics"]
    assert raw["site"]["sameAs"] == ["https://www.linkedin.com/company/acme"]
    profile = profile_of(raw, "acme.example")  # the core reads it like Clearbit's
    assert (profile.name, profile.employees, profile.city) == ("Acme Robotics", 250, "Lyon")


def test_profile_comes_from_meta_and_open_graph_when_there_is_no_json_ld():
    html = page(
        "<title>Welcome | Globex</title>"
        '<meta name="Description" content="  Globex makes\teverything. ">'
        '<meta property="og:site_name" content="Globex Corporation">'
        '<meta name="keywords" content="b2b, energy, , b2b">'
    )
    raw = site_profile(html, "globex.example")

    assert raw is not None
    assert raw["name"] == "Globex Corporation"
    assert raw["description"] == "Globex makes everything."
    assert raw["tags"] == ["b2b", "energy"]
    assert raw["metrics"] == {"employees": None} and raw["category"] == {"industry": ""}


def test_organization_is_found_in_a_graph_under_a_subtype_and_prefixed_type():
    graph = {
        "@context": "https://schema.org",
        "@graph": [
            {"@type": "WebSite", "name": "Site"},
            {
                "@type": ["schema:Corporation"],
                "name": "Initech",
                "industry": "Software",
                "numberOfEmployees": {"minValue": "51", "maxValue": "200"},
                "location": {"address": {"addressLocality": "Austin", "addressCountry": "US"}},
                "keywords": "tps, reports",
            },
        ],
    }
    raw = site_profile(page("<title>Initech</title>" + ld(graph)), "initech.example")

    assert raw is not None
    assert (raw["name"], raw["category"]["industry"]) == ("Initech", "Software")
    assert raw["metrics"]["employees"] == 51  # a range's lower bound
    assert raw["geo"] == {"city": "Austin", "country": "US"}
    assert raw["tags"] == ["tps", "reports"]


def test_broken_json_ld_is_skipped_when_the_page_has_other_tags():
    html = page(
        '<script type="application/ld+json">{"@type": "Organization", </script>'
        '<meta property="og:description" content="From OG">'
        "<title>Acme Robotics - Home</title>"
    )
    raw = site_profile(html, "acme-robotics.example")

    assert raw is not None
    assert raw["description"] == "From OG"
    assert raw["name"] == "Acme Robotics"  # the title part that matches the domain


def test_no_profile_when_the_page_has_only_a_title():
    assert site_profile(page("<title>Gateway</title>", "<h1>Bad gateway</h1>"), "a.example") is None
    assert site_profile(b"", "a.example") is None


def test_bytes_are_decoded_with_the_declared_charset():
    html = page('<meta name="description" content="Caf\xe9 cr\xe8me">').encode("latin-1")
    raw = site_profile(html, "cafe.example", encoding="iso-8859-1")

    assert raw is not None and raw["description"] == "Café crème"


def test_employee_counts_are_read_from_strings_and_refused_when_nonsense():
    def employees(value: object) -> object:
        org = {"@type": "Organization", "name": "A", "numberOfEmployees": value}
        raw = site_profile(page(ld(org)), "a.example")
        assert raw is not None
        return raw["metrics"]["employees"]

    assert employees("1,200") == 1200
    assert employees("500+") == 500
    assert employees(True) is None
    assert employees("lots") is None
    assert employees(-3) is None

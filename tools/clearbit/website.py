"""The keyless provider: the company's own home page over `requests`, guarded against SSRF.

The domain comes from an onboarding request, so the fetch must not become a way into our own
network (the metadata server at 169.254.169.254, a database on 10.x, a port on loopback).
Two checks, both with `AddressGuard`:

1. Before each request, the initial URL and every redirect target (followed here, one by one,
   never by `requests`): the host is resolved with getaddrinfo and every address must be
   public. This gives a clear refusal, and refuses early.
2. After the connection is made and before a byte is sent on it (so before the TLS hello and
   the request line), the socket's peer address is checked again. DNS may answer differently
   the second time (DNS rebinding: public for the check, 127.0.0.1 for the connect); checking
   the address actually connected to closes that gap whatever the resolver does, with no
   need to rewrite URLs to IP addresses (which would break TLS hostname checks and SNI).
   Proxies from the environment are ignored, since through a proxy the peer would be the proxy.

The one exception is the configured URL template's own origin when the domain is not part of
its host (the vendor sandbox on loopback): configuration, not something a request can choose.
"""

from __future__ import annotations

import contextlib
import logging
import re
import socket
import time
from email.message import Message
from typing import Any, ClassVar
from urllib.parse import urljoin, urlsplit

import requests
from requests.adapters import BaseAdapter, HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from shared.errors import InvalidInput, PermanentError, VendorTimeout, VendorUnavailable
from shared.run_header import RUN_ID_HEADER
from shared.settings import Settings
from shared.traced_http import trace_session
from shared.vendor_errors import error_for_status, transport_error
from shared.vendor_urls import WEBSITE_PLACEHOLDER
from tools.clearbit.address_guard import (
    DEFAULT_PORTS,
    AddressGuard,
    Origin,
    Resolver,
    origin_of,
    system_resolver,
)
from tools.clearbit.site_profile import site_profile

logger = logging.getLogger(__name__)

PLACEHOLDER = WEBSITE_PLACEHOLDER
HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})
USER_AGENT = "ChimeraOnboarding/0.1 (company profile lookup; +https://github.com/chimera)"
_CHUNK = 64 * 1024
_DOMAIN_RE = re.compile(
    r"^(?=.{4,253}$)(?:(?!-)[a-z0-9-]{1,63}(?<!-)\.)+(?:[a-z]{2,63}|xn--[a-z0-9-]{1,59})$"
)
# getaddrinfo's "no such name" answers: the domain has no website. Others (EAI_AGAIN) may pass.
_NO_SUCH_NAME = {socket.EAI_NONAME, getattr(socket, "EAI_NODATA", socket.EAI_NONAME)}


class WebsiteDirectory:
    """Reads a company's profile from its home page. Built once per instance."""

    def __init__(
        self,
        settings: Settings,
        *,
        resolver: Resolver = system_resolver,
        adapter: BaseAdapter | None = None,
    ) -> None:
        """`adapter` replaces the peer-checking transport (a test's recorder); the URL checks
        before each request still run, on `resolver`'s answers."""
        self._template = settings.vendor_url("website")
        fixed = PLACEHOLDER not in urlsplit(self._template).netloc
        self._guard = AddressGuard([origin_of(self._template)] if fixed else [], resolver)
        self._timeout = settings.vendor_timeout
        # The whole fetch, redirects and a slow trickle of bytes included.
        self._deadline = settings.vendor_deadline
        self._max_bytes = settings.website_max_bytes
        self._max_redirects = settings.website_max_redirects
        self._session = requests.Session()
        self._session.trust_env = False  # no proxies or .netrc from the environment
        transport = adapter or PeerCheckingAdapter(self._guard)
        self._session.mount("https://", transport)
        self._session.mount("http://", transport)
        trace_session(self._session, "website")
        self._session.headers.update(
            {"User-Agent": USER_AGENT, "Accept": "text/html,application/xhtml+xml;q=0.9"}
        )

    def find_company(self, domain: str, *, run_id: str) -> dict[str, Any] | None:
        """The profile the domain's home page describes, or None when it has no site or says
        nothing about the company.

        Raises:
            InvalidInput: not a domain name.
            PermanentError: `address_refused` (a non-public address), `page_too_large`,
                `not_html`, `too_many_redirects`, or another 4xx (`website_http_<status>`).
            RetryableError: RateLimited, VendorTimeout, VendorUnavailable (5xx, unreachable).
        """
        domain = checked_domain(domain)
        url = self._template.replace(PLACEHOLDER, domain)
        fetched = self._fetch(url, run_id)
        if fetched is None:
            return None
        body, encoding = fetched
        return site_profile(body, domain, encoding=encoding)

    def _fetch(self, url: str, run_id: str) -> tuple[bytes, str | None] | None:
        deadline = time.monotonic() + self._deadline
        for _ in range(self._max_redirects + 1):
            try:
                self._guard.check_url(url)
            except socket.gaierror as exc:
                if exc.errno in _NO_SUCH_NAME:
                    logger.debug("website %s: no such host", urlsplit(url).hostname)
                    return None
                raise VendorUnavailable(f"could not resolve {urlsplit(url).hostname}") from None
            try:
                response = self._session.get(
                    url,
                    # The run id is ours: it goes to our sandbox, never to the company's site.
                    headers={RUN_ID_HEADER: run_id} if self._configured(url) else {},
                    timeout=_remaining(self._timeout, deadline),
                    stream=True,
                    allow_redirects=False,
                )
                with contextlib.closing(response):
                    if response.is_redirect:
                        url = urljoin(url, response.headers["Location"])
                        continue
                    return self._page(response, deadline)
            except requests.RequestException as exc:
                raise transport_error(_host(url), "", exc, timeouts=(requests.Timeout,)) from None
        raise PermanentError(
            f"{_host(url)}: more than {self._max_redirects} redirects", code="too_many_redirects"
        )

    def _page(
        self, response: requests.Response, deadline: float
    ) -> tuple[bytes, str | None] | None:
        status, host = response.status_code, _host(response.url)
        logger.debug("website page.get host=%s status=%s", host, status)
        if status in (404, 410):
            return None
        if status in (408, 429) or status >= 500:
            # The body is the site's error page, not an API's words: never read here.
            raise error_for_status(
                host, "", status, None, response.headers, reason=response.reason or ""
            )
        if status != 200:
            # A site is no API: its 4xx says nothing about our input or credentials.
            raise PermanentError(f"{host} answered {status}", code=f"website_http_{status}")
        header = response.headers.get("Content-Type", "")
        content_type = Message()
        content_type["Content-Type"] = header
        if not header or content_type.get_content_type() not in HTML_TYPES:
            raise PermanentError(
                f"{host} answered {header or 'no content type'}, not HTML", code="not_html"
            )
        charset = content_type.get_param("charset")
        return self._read(response, deadline, host), charset if isinstance(charset, str) else None

    def _read(self, response: requests.Response, deadline: float, host: str) -> bytes:
        """The body, streamed: given up past the size limit (counted after decompression, so
        a small gzip bomb is cut off too) or past the deadline (a trickle within the read
        timeout could otherwise last forever)."""
        body = bytearray()
        for chunk in response.iter_content(chunk_size=_CHUNK):
            body += chunk
            if len(body) > self._max_bytes:
                raise PermanentError(
                    f"the page at {host} is larger than {self._max_bytes} bytes",
                    code="page_too_large",
                )
            if time.monotonic() > deadline:
                raise VendorTimeout(f"{host} took longer than {self._deadline:g}s to send its page")
        return bytes(body)

    def _configured(self, url: str) -> bool:
        return self._guard.allows_origin(origin_of(url))


def checked_domain(domain: str) -> str:
    """The domain, lower-case ASCII (IDNA); InvalidInput for anything else (an IP, a path)."""
    name = domain.strip().rstrip(".").lower()
    try:
        name = name.encode("idna").decode("ascii")
    except UnicodeError:
        raise InvalidInput(f"not a domain name: {domain!r}") from None
    if not _DOMAIN_RE.match(name):
        raise InvalidInput(f"not a domain name: {domain!r}")
    return name


def _remaining(timeout: tuple[float, float], deadline: float) -> tuple[float, float]:
    left = deadline - time.monotonic()
    if left <= 0:
        raise VendorTimeout("the website took longer than its deadline (redirects included)")
    return (min(timeout[0], left), min(timeout[1], left))


def _host(url: str) -> str:
    return urlsplit(url).hostname or url


class _PeerChecked:
    """Mixed into urllib3's connections: checks the address a new socket connected to."""

    address_guard: ClassVar[AddressGuard]
    guard_scheme: ClassVar[str]
    host: str
    port: int | None

    def _new_conn(self) -> socket.socket:
        sock: socket.socket = super()._new_conn()  # type: ignore[misc]
        scheme = self.guard_scheme
        origin: Origin = (scheme, self.host.lower(), self.port or DEFAULT_PORTS[scheme])
        try:
            self.address_guard.check_peer(origin, sock.getpeername()[0])
        except BaseException:
            sock.close()
            raise
        return sock


class PeerCheckingAdapter(HTTPAdapter):
    """No retries (the queue owns them), and connection pools whose connections check peers."""

    def __init__(self, guard: AddressGuard) -> None:
        self._guard = guard  # before super().__init__, which builds the pool manager
        super().__init__(max_retries=0)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        pools: dict[str, type[HTTPConnectionPool]] = {}
        for scheme, pool, connection in (
            ("http", HTTPConnectionPool, HTTPConnection),
            ("https", HTTPSConnectionPool, HTTPSConnection),
        ):
            checked = type(
                f"PeerChecked{connection.__name__}",
                (_PeerChecked, connection),
                {"address_guard": self._guard, "guard_scheme": scheme},
            )
            pools[scheme] = type(f"PeerChecked{pool.__name__}", (pool,), {"ConnectionCls": checked})
        self.poolmanager.pool_classes_by_scheme = pools

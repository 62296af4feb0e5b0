"""A `requests` transport that traces each request it sends (shared/vendor_requests.py)."""

from __future__ import annotations

from typing import Any

import requests
from requests.adapters import BaseAdapter

from shared.vendor_requests import http_request


class TracedAdapter(BaseAdapter):
    """Sends through `inner` (the client's own transport, or a test's recorder), each request
    in its own CLIENT span: every redirect and page is a request of its own."""

    def __init__(self, inner: BaseAdapter, vendor: str) -> None:
        super().__init__()
        self.inner = inner
        self.vendor = vendor

    def send(  # type: ignore[override]  # passes requests' keyword arguments on, unread
        self, request: requests.PreparedRequest, **kwargs: Any
    ) -> requests.Response:
        with http_request(self.vendor, request.method or "GET", request.url or "") as exchange:
            response = self.inner.send(request, **kwargs)
            exchange.answered(response.status_code)
            return response

    def close(self) -> None:
        self.inner.close()


def trace_session(session: requests.Session, vendor: str) -> None:
    """Wrap each transport `session` has mounted, so every request it sends is traced."""
    for prefix, adapter in list(session.adapters.items()):
        if not isinstance(adapter, TracedAdapter):
            session.mount(prefix, TracedAdapter(adapter, vendor))

"""Clearbit's Company API over `requests`: the only place Clearbit is called."""

from __future__ import annotations

import logging
from typing import Any

import requests
from requests.adapters import BaseAdapter, HTTPAdapter

from shared.errors import BadVendorReply, RetryableError
from shared.retry_after import retry_after
from shared.run_header import RUN_ID_HEADER
from shared.settings import Settings
from shared.traced_http import trace_session
from shared.vendor_errors import error_for_status, transport_error

logger = logging.getLogger(__name__)

FIND_PATH = "/v2/companies/find"
ACTION = "company.find"


class ClearbitDirectory:
    """Looks companies up by domain. Built once per instance; holds one pooled session."""

    def __init__(self, settings: Settings, *, adapter: BaseAdapter | None = None) -> None:
        """`adapter` replaces the HTTP transport (a test's recorder); by default, no retries."""
        self._url = settings.vendor_url("clearbit") + FIND_PATH
        self._timeout = settings.vendor_timeout
        self._session = requests.Session()
        # The queue owns retries; zero here also covers connection errors urllib3 might retry.
        transport = adapter or HTTPAdapter(max_retries=0)
        self._session.mount("https://", transport)
        self._session.mount("http://", transport)
        trace_session(self._session, "clearbit")
        self._session.headers.update(
            {"Authorization": f"Bearer {settings.clearbit_key}", "Accept": "application/json"}
        )

    def find_company(self, domain: str, *, run_id: str) -> dict[str, Any] | None:
        """The company record for `domain`, or None when Clearbit has none.

        Raises:
            RetryableError: code `enrichment_pending` while Clearbit looks the domain up (202),
                or RateLimited / VendorTimeout / VendorUnavailable / BadVendorReply.
            PermanentError: AuthFailed, InvalidInput (a domain Clearbit rejects), others.
        """
        try:
            response = self._session.get(
                self._url,
                params={"domain": domain},
                headers={RUN_ID_HEADER: run_id},
                timeout=self._timeout,
            )
        except requests.RequestException as exc:
            raise transport_error("Clearbit", ACTION, exc, timeouts=(requests.Timeout,)) from None
        logger.debug("clearbit company.find domain=%s status=%s", domain, response.status_code)

        status = response.status_code
        if status == 200:
            company = _json(response)
            if not isinstance(company, dict) or not company.get("domain"):
                raise BadVendorReply("Clearbit answered 200 without a company record")
            return company
        if status == 202:
            raise RetryableError(
                f"Clearbit is still looking up {domain}",
                code="enrichment_pending",
                retry_after=retry_after(response.headers),
            )
        if status == 404:
            return None
        # 410 included (clearbit_gone): Clearbit's free platform was shut down in 2025.
        raise error_for_status(
            "Clearbit",
            ACTION,
            status,
            response.content,
            response.headers,
            reason=response.reason or "",
        )


def _json(response: requests.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        raise BadVendorReply(
            f"Clearbit answered {response.status_code} with a body that is not JSON"
        ) from None

"""Clearbit's Company API over `requests`: the only place Clearbit is called."""

from __future__ import annotations

import logging
from typing import Any

import requests
from requests.adapters import BaseAdapter, HTTPAdapter

from shared.errors import (
    AuthFailed,
    BadVendorReply,
    InvalidInput,
    PermanentError,
    RateLimited,
    RetryableError,
    VendorTimeout,
    VendorUnavailable,
)
from shared.retry_after import retry_after
from shared.settings import Settings

logger = logging.getLogger(__name__)

RUN_ID_HEADER = "X-Chimera-Run-Id"
FIND_PATH = "/v2/companies/find"
_MAX_MESSAGE = 300


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
        except requests.Timeout as exc:
            raise VendorTimeout(f"Clearbit did not answer in time ({type(exc).__name__})") from None
        except requests.RequestException as exc:
            raise VendorUnavailable(f"Clearbit unreachable ({type(exc).__name__})") from None
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
        raise _error_for(response)


def _error_for(response: requests.Response) -> Exception:
    status = response.status_code
    message = f"Clearbit answered {status}: {_vendor_message(response)}"
    if status in (401, 403):
        return AuthFailed(message)
    if status == 429:
        return RateLimited(message, retry_after=retry_after(response.headers))
    if status >= 500:
        return VendorUnavailable(message)
    if status in (400, 422):
        return InvalidInput(message)
    if status == 410:
        # What a retired API answers: Clearbit's free platform was shut down in 2025.
        return PermanentError(f"{message} (the API was retired)", code="clearbit_gone")
    return PermanentError(message, code=f"clearbit_http_{status}")


def _json(response: requests.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        raise BadVendorReply(
            f"Clearbit answered {response.status_code} with a body that is not JSON"
        ) from None


def _vendor_message(response: requests.Response) -> str:
    try:
        error = response.json().get("error", {})
        text = f"{error.get('type', '')}: {error.get('message', '')}".strip(": ")
    except (ValueError, AttributeError):
        text = response.reason or ""
    return text[:_MAX_MESSAGE] or "no details"

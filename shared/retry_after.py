"""Retry-After, as vendors send it: seconds, or an HTTP date."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any


def retry_after(headers: Mapping[str, Any] | None) -> float | None:
    """Seconds to wait from a Retry-After header (any case), or None when absent or unreadable."""
    if not headers:
        return None
    raw: Any = None
    for name, value in headers.items():
        if name.lower() == "retry-after":
            raw = value[0] if isinstance(value, list) and value else value
    value = str(raw or "").strip()
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, (parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds())
    except (TypeError, ValueError):
        return None

"""The language-model port: one structured answer per prompt, with its token usage."""

from __future__ import annotations

from typing import Any, Protocol

from shared.model import LlmUsage


class LanguageModel(Protocol):
    def generate_json(
        self, *, system: str, prompt: str, schema: dict[str, Any], run_id: str
    ) -> tuple[dict[str, Any], LlmUsage]:
        """Ask for one JSON object that satisfies `schema` (a JSON Schema).

        Raises RetryableError for timeouts, rate limits and unavailability, BadVendorReply when
        the answer is not JSON, PermanentError for auth failures.
        """
        ...

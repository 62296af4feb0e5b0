"""Enrichment: the company's public profile, trimmed to what the agent may use."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, ValidationError

from shared.errors import BadVendorReply, ChimeraError, PermanentError, RetryableError
from shared.model import Attempt, StepResult, ToolCall
from shared.registry import EnrichArgs

logger = logging.getLogger(__name__)


class CompanyDirectory(Protocol):
    def find_company(self, domain: str, *, run_id: str) -> dict[str, Any] | None:
        """The company's profile, or None when the directory does not know the domain."""
        ...


@dataclass(frozen=True)
class Provider:
    """A directory under the name the step's output reports as its `source`."""

    name: str
    directory: CompanyDirectory


class CompanyProfile(BaseModel):
    """What the rest of the run sees. Untrusted text: quoted, never followed."""

    model_config = ConfigDict(extra="ignore")

    name: str
    domain: str
    description: str = ""
    industry: str = ""
    employees: int | None = None
    city: str = ""
    country: str = ""
    tags: list[str] = []


def profile_of(raw: dict[str, Any], domain: str) -> CompanyProfile:
    if not isinstance(raw, dict):
        raise BadVendorReply("the company profile is not a JSON object")
    category = raw.get("category") or {}
    metrics = raw.get("metrics") or {}
    geo = raw.get("geo") or {}
    try:
        return CompanyProfile(
            name=str(raw.get("name") or domain)[:200],
            domain=str(raw.get("domain") or domain)[:253],
            description=str(raw.get("description") or "")[:600],
            industry=str(category.get("industry") or "")[:100],
            employees=metrics.get("employees"),
            city=str(geo.get("city") or "")[:100],
            country=str(geo.get("country") or "")[:100],
            tags=[str(t)[:40] for t in (raw.get("tags") or [])][:8],
        )
    except (ValidationError, AttributeError, TypeError) as exc:
        raise BadVendorReply(f"the company profile has an unexpected shape: {exc}") from None


def enrich(call: ToolCall, attempt: Attempt, providers: Sequence[Provider]) -> StepResult:
    """The first profile the providers have for the domain, asked in order.

    The next provider is asked when one has no profile, or fails for good (Clearbit's 401 or
    410 for a sunset key, a page too large to read). A retryable failure is not a reason to
    fall back: it goes to the queue, which retries the step, so that the preferred provider
    answers whenever it can and a blip never changes whose profile a run gets. On the task's
    last attempt, though, a retryable failure counts as a failure for good, so a provider that
    stays down falls back instead of parking the run. (A retry asks the earlier providers
    again: they are cheap reads.)

    The output names the provider that answered (`source`) and, under `failures`, the error
    code of each provider that failed before it. When one provider had no profile and the
    others failed, the step still succeeds, with `found` false: the email is then generic.

    Raises:
        RetryableError: a provider failed in a way worth retrying, and attempts remain.
        PermanentError: every provider failed (its code is the first provider's).
    """
    args = EnrichArgs.model_validate(call.args)
    failures: dict[str, ChimeraError] = {}
    misses: list[str] = []
    for provider in providers:
        try:
            raw = provider.directory.find_company(args.domain, run_id=call.run_id)
            profile = profile_of(raw, args.domain) if raw is not None else None
        except RetryableError as exc:
            if not attempt.last:
                raise
            failures[provider.name] = exc
        except PermanentError as exc:
            failures[provider.name] = exc
        else:
            if profile is not None:
                return _found(provider.name, profile, failures)
            misses.append(provider.name)
            continue
        logger.warning(
            "enrichment provider %s failed, falling back: %s %s",
            provider.name,
            failures[provider.name].code,
            failures[provider.name].message,
        )

    if failures and not misses:
        raise _all_failed(failures)
    output: dict[str, Any] = {"found": False, "domain": args.domain}
    if failures:
        output["failures"] = {name: exc.code for name, exc in failures.items()}
    tried = ", ".join(p.name for p in providers) or "no provider"
    return StepResult(output=output, summary=f"no public profile for {args.domain} ({tried})")


def _found(source: str, profile: CompanyProfile, failures: dict[str, ChimeraError]) -> StepResult:
    output: dict[str, Any] = {"found": True, "source": source, "company": profile.model_dump()}
    if failures:
        output["failures"] = {name: exc.code for name, exc in failures.items()}
    size = f", {profile.employees} employees" if profile.employees else ""
    return StepResult(
        output=output,
        summary=f"{profile.name}: {profile.industry or 'industry unknown'}{size} (from {source})",
    )


def _all_failed(failures: dict[str, ChimeraError]) -> ChimeraError:
    first = next(iter(failures.values()))
    if len(failures) == 1:
        return first
    message = "; ".join(f"{name}: {exc.message}" for name, exc in failures.items())
    kind = RetryableError if first.retryable else PermanentError
    return kind(f"no enrichment provider answered ({message})", code=first.code)

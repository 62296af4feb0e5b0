"""Enrichment: the company's public profile, trimmed to what the agent may use."""

from __future__ import annotations

from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, ValidationError

from shared.errors import BadVendorReply
from shared.model import Attempt, StepResult, ToolCall
from shared.registry import EnrichArgs


class CompanyDirectory(Protocol):
    def find_company(self, domain: str, *, run_id: str) -> dict[str, Any] | None:
        """The company's profile, or None when the directory does not know the domain."""
        ...


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


def enrich(call: ToolCall, attempt: Attempt, directory: CompanyDirectory) -> StepResult:
    args = EnrichArgs.model_validate(call.args)
    raw = directory.find_company(args.domain, run_id=call.run_id)
    if raw is None:
        return StepResult(
            output={"found": False, "domain": args.domain},
            summary=f"no public profile for {args.domain}",
        )
    profile = profile_of(raw, args.domain)
    size = f", {profile.employees} employees" if profile.employees else ""
    return StepResult(
        output={"found": True, "company": profile.model_dump()},
        summary=f"{profile.name}: {profile.industry or 'industry unknown'}{size}",
    )

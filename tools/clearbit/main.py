"""tool-clearbit: enrich a company from its domain, asking each configured provider in turn."""

from __future__ import annotations

import logging

import functions_framework

from shared.runtime import per_runtime
from shared.settings import Settings
from shared.tool_endpoint import tool_endpoint
from tools.clearbit import core
from tools.clearbit.client import ClearbitDirectory
from tools.clearbit.website import WebsiteDirectory

log = logging.getLogger(__name__)

ADAPTERS = {"clearbit": ClearbitDirectory, "website": WebsiteDirectory}


def enrichment_providers(settings: Settings) -> list[core.Provider]:
    """The providers `settings.enrichment_providers` names, in its order."""
    names = [n.strip().lower() for n in settings.enrichment_providers.split(",") if n.strip()]
    unknown = sorted(set(names) - ADAPTERS.keys())
    if unknown or not names:
        raise ValueError(
            f"CHIMERA_ENRICHMENT_PROVIDERS={settings.enrichment_providers!r}: "
            f"name one or more of {', '.join(ADAPTERS)}"
        )
    providers = [core.Provider(name, ADAPTERS[name](settings)) for name in dict.fromkeys(names)]
    return providers


providers = per_runtime(enrichment_providers)

run_tool = functions_framework.http(
    tool_endpoint(
        "clearbit",
        {
            "enrich_company": lambda call, attempt: core.enrich(call, attempt, providers()),
        },
    )
)

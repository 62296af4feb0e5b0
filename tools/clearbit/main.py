"""tool-clearbit: enrich a company from its domain, asking each configured provider in turn."""

from __future__ import annotations

import functions_framework

from shared.runtime import enrichment_adapters, per_runtime
from shared.settings import Settings
from shared.tool_endpoint import tool_endpoint
from tools.clearbit import core
from tools.clearbit.client import ClearbitDirectory
from tools.clearbit.website import WebsiteDirectory

# The adapters this tool has; shared/runtime.py picks among them as settings say.
ADAPTERS = {"clearbit": ClearbitDirectory, "website": WebsiteDirectory}


def enrichment_providers(settings: Settings) -> list[core.Provider]:
    """The providers `settings.enrichment_providers` names, in its order."""
    return [core.Provider(n, d) for n, d in enrichment_adapters(settings, ADAPTERS)]


providers = per_runtime(enrichment_providers)

run_tool = functions_framework.http(
    tool_endpoint(
        "clearbit",
        {
            "enrich_company": lambda call, attempt: core.enrich(call, attempt, providers()),
        },
    )
)

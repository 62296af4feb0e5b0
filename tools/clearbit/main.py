"""tool-clearbit: enrich a company from its domain."""

from __future__ import annotations

import functions_framework

from shared.runtime import per_runtime
from shared.tool_endpoint import tool_endpoint
from tools.clearbit import core
from tools.clearbit.client import ClearbitDirectory

directory = per_runtime(ClearbitDirectory)

run_tool = functions_framework.http(
    tool_endpoint(
        "clearbit",
        {
            "enrich_company": lambda call, attempt: core.enrich(call, attempt, directory()),
        },
    )
)

"""The operator's web console: server-rendered pages over the StateStore, live by SSE."""

from chimera.console.app import FORM_PREFIXES, create_app

__all__ = ["FORM_PREFIXES", "create_app"]

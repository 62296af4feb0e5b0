"""Every setting Chimera reads, from the environment, each with a local default."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PREFIX = "CHIMERA_"


def _secret_repr(value: str) -> str:
    return "<set>" if value else "<empty>"


@dataclass(frozen=True)
class Settings:
    """Chimera's configuration. `Settings.from_env()` is the only reader of os.environ."""

    home: Path = Path(".chimera")
    # `local` runs on SQLite and the local queue; `gcp` on Firestore and Cloud Tasks.
    backend: str = "local"
    # State: sqlite:///path or firestore://project[/database]. Empty means <home>/chimera.db.
    state_url: str = ""

    # Google Cloud (backend=gcp).
    gcp_project: str = ""
    gcp_location: str = "us-central1"
    # Base URL of the deployed functions; a queue's target is <functions_url>/<function name>.
    functions_url: str = ""
    tasks_service_account: str = ""
    tasks_emulator_host: str = ""
    # Defence in depth behind the functions' IAM: each target verifies its caller's Google ID
    # token (audience, and for queue targets the tasks service account; shared/identity.py).
    require_identity: bool = False
    # The audience intake callers' ID tokens name; empty means <functions_url>/orchestrator-intake.
    intake_audience: str = ""

    # Vendors: empty URL means the sandbox at sandbox_url; set a real base URL to go live.
    sandbox_url: str = "http://127.0.0.1:8086"
    clearbit_url: str = ""
    jira_url: str = ""
    sendgrid_url: str = ""
    slack_url: str = ""
    gemini_url: str = ""

    # Enrichment: providers tried in order; the next one when a provider has no profile for
    # the domain or fails for good (tools/clearbit/core.py says when else).
    enrichment_providers: str = "clearbit,website"
    # The website provider's page URL, `{domain}` filled in. Empty: https://{domain}/ on the
    # gcp backend, the sandbox's <sandbox_url>/website/{domain}/ on the local one.
    website_url: str = ""
    website_max_bytes: int = 512 * 1024
    website_max_redirects: int = 3

    # Secrets: local defaults are the sandbox's; never logged (see __repr__).
    clearbit_key: str = field(default="sandbox-clearbit-key", repr=False)
    jira_user: str = "chimera@example.com"
    jira_token: str = field(default="sandbox-jira-token", repr=False)
    sendgrid_key: str = field(default="SG.sandbox-sendgrid-key", repr=False)
    slack_token: str = field(default="xoxb-sandbox-slack-token", repr=False)
    gemini_api_key: str = field(default="sandbox-gemini-key", repr=False)

    gemini_model: str = "gemini-2.5-flash"
    # Vertex AI instead of the Gemini API: no key, Application Default Credentials, in
    # gemini_project (empty means gcp_project) at gemini_location.
    gemini_vertexai: bool = False
    gemini_project: str = ""
    gemini_location: str = "us-central1"
    # USD per million tokens, input and output; for the run's cost estimate.
    gemini_price_in: float = 0.30
    gemini_price_out: float = 2.50

    sender_email: str = "welcome@chimera.example"
    sender_name: str = "Chimera Onboarding"
    default_slack_channel: str = "#client-onboarding"
    jira_project_template: str = "com.pyxis.greenhopper.jira:gh-simplified-kanban-classic"
    jira_project_type: str = "software"
    jira_lead_account_id: str = ""

    # Seconds. Chain: vendor_timeout < dispatch_deadline < function_timeout.
    vendor_connect_timeout: float = 3.05
    vendor_read_timeout: float = 10.0
    dispatch_deadline: float = 30.0
    function_timeout: float = 60.0

    # Resilience, per vendor. Its circuit breaker opens when at least this share of an
    # instance's last breaker_window calls failed (once it has breaker_minimum_calls), for
    # breaker_cooldown seconds; then each instance lets breaker_half_open_calls probes through
    # and closes it when their failure rate is under the threshold. Instances reread the shared
    # decision at most every breaker_state_cache seconds. At most vendor_concurrency calls in
    # flight per instance.
    breaker_failure_rate: float = 0.95
    breaker_window: int = 100
    breaker_minimum_calls: int = 50
    breaker_half_open_calls: int = 10
    breaker_cooldown: float = 30.0
    breaker_state_cache: float = 2.0
    vendor_concurrency: int = 20
    # The local queue's backoffs times this (demos and tests; Retry-After is kept in full).
    local_backoff_scale: float = 1.0
    # A side effect whose outcome is unknown and cannot be looked up: park or repeat.
    unknown_outcome: str = "park"

    # The agent's reasoning. The orchestrator asks the model for the plan at a run's start and
    # for a revision after enrichment (off: the default plan, no model calls); each such call
    # gets this many seconds, and is asked again at most once. With require_approval, the run
    # waits for a person (`chimera runs approve`) before the welcome email is sent.
    agent_reasoning: bool = True
    reasoning_timeout: float = 8.0
    require_approval: bool = False

    dev_port: int = 8080
    log_format: str = "text"  # text | json

    def __repr__(self) -> str:  # pragma: no cover - repr=False fields already hidden
        shown = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.repr}
        return f"Settings({shown})"

    @property
    def state_location(self) -> str:
        return self.state_url or f"sqlite:///{self.home / 'chimera.db'}"

    @property
    def vendor_timeout(self) -> tuple[float, float]:
        return (self.vendor_connect_timeout, self.vendor_read_timeout)

    @property
    def vendor_deadline(self) -> float:
        """Longest a single vendor call may take, all phases included."""
        return self.vendor_connect_timeout + self.vendor_read_timeout

    def vendor_url(self, vendor: str) -> str:
        explicit = getattr(self, f"{vendor}_url")
        return explicit or f"{self.sandbox_url.rstrip('/')}/{vendor}"

    def secret_values(self) -> list[str]:
        return [
            getattr(self, f.name)
            for f in dataclasses.fields(self)
            if not f.repr and getattr(self, f.name)
        ]

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for f in dataclasses.fields(cls):
            raw = env.get(PREFIX + f.name.upper())
            if raw is None:
                continue
            kind: Any = type(f.default)
            if kind is bool:
                values[f.name] = raw.strip().lower() in {"1", "true", "yes", "on"}
            elif kind in (int, float) or isinstance(f.default, Path):
                try:
                    values[f.name] = Path(raw) if isinstance(f.default, Path) else kind(raw)
                except ValueError as exc:
                    raise ValueError(f"{PREFIX}{f.name.upper()}={raw!r}: {exc}") from None
            else:
                values[f.name] = raw
        settings = cls(**values)  # type: ignore[arg-type]
        settings.check()
        return settings

    def check(self) -> None:
        if self.backend not in {"local", "gcp"}:
            raise ValueError(f"{PREFIX}BACKEND must be local or gcp, not {self.backend!r}")
        if self.unknown_outcome not in {"park", "repeat"}:
            raise ValueError(f"{PREFIX}UNKNOWN_OUTCOME must be park or repeat")
        if not self.vendor_deadline < self.dispatch_deadline < self.function_timeout:
            raise ValueError(
                "timeouts must chain: vendor connect+read "
                f"({self.vendor_deadline}s) < dispatch deadline ({self.dispatch_deadline}s) "
                f"< function timeout ({self.function_timeout}s)"
            )
        if not 0 < self.breaker_failure_rate <= 1:
            raise ValueError(f"{PREFIX}BREAKER_FAILURE_RATE must be in (0, 1]")
        if not 1 <= self.breaker_minimum_calls <= self.breaker_window:
            raise ValueError(
                f"{PREFIX}BREAKER_MINIMUM_CALLS must be between 1 and {PREFIX}BREAKER_WINDOW"
            )
        if self.breaker_half_open_calls < 1:
            raise ValueError(f"{PREFIX}BREAKER_HALF_OPEN_CALLS must be at least 1")
        if self.breaker_cooldown <= 0:
            raise ValueError(f"{PREFIX}BREAKER_COOLDOWN must be positive")
        if self.breaker_state_cache < 0:
            raise ValueError(f"{PREFIX}BREAKER_STATE_CACHE must not be negative")
        providers = [p for p in self.enrichment_providers.split(",") if p.strip()]
        if len(providers) * self.vendor_deadline >= self.dispatch_deadline:
            raise ValueError(
                f"{len(providers)} enrichment providers in a row may take "
                f"{len(providers) * self.vendor_deadline}s, not under the dispatch deadline "
                f"({self.dispatch_deadline}s): shorten the vendor timeouts or the providers"
            )

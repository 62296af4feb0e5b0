"""Every setting Chimera reads, from the environment, each with a local default."""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from shared.history import EVENT_LOG_CAP, MIN_EVENT_LOG_CAP
from shared.state_urls import FIRESTORE_URLS, state_url_problem
from shared.vendor_urls import (
    VENDOR_ENDPOINTS,
    WEBSITE_PLACEHOLDER,
    WEBSITE_URL,
    base_url_problem,
    shown,
    vertex_ai_url,
    vertex_location,
    website_url_problem,
)

PREFIX = "CHIMERA_"


class SettingsError(ValueError):
    """Settings that cannot be right: one line per problem, each naming its variables."""


class Settings(BaseSettings):
    """Chimera's configuration. Each value is typed when built (a SettingsError otherwise);
    values that disagree with each other are refused at start-up (`check`, which `from_env`
    and `build_runtime` call).

    `Settings.from_env()` is the only reader of the environment; `Settings(...)` holds exactly
    what it is given and the local defaults (the embedded stack and tests build it so).
    """

    model_config = SettingsConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    home: Path = Path(".chimera")
    # `local` runs on SQLite and the local queue; `gcp` on Firestore and Cloud Tasks.
    backend: Literal["local", "gcp"] = "local"
    # State: sqlite:///path (local) or firestore://project[/database] (gcp). Empty means
    # sqlite:///<home>/chimera.db locally, firestore://<gcp_project> on gcp.
    state_url: str = ""

    # Google Cloud (backend=gcp).
    gcp_project: str = ""
    gcp_location: str = "us-central1"
    # Base URL of the deployed functions; a queue's target is <functions_url>/<function name>.
    functions_url: str = ""
    tasks_service_account: str = ""
    tasks_emulator_host: str = ""
    # Defence in depth behind the intake's IAM: it verifies its callers' Google ID tokens. The
    # queue targets on gcp verify the tasks service account's always (shared/identity.py).
    require_identity: bool = False
    # The audiences (comma-separated) intake callers' ID tokens may name; empty means
    # <functions_url>/orchestrator-intake. The intake verifies them unless
    # intake_require_identity is false (unset: on for gcp; locally it takes bearer keys).
    intake_audience: str = ""
    # Locally, the dispatcher signs each task (key in <home>/task-signing.key); a target refuses
    # a signature older or newer than this many seconds (a replay).
    task_signature_window: float = Field(default=300.0, gt=0)
    # Largest body any server or target reads (tasks, intake): 413 above it.
    max_body_bytes: int = Field(default=64 * 1024, ge=1024)
    intake_require_identity: bool | None = None
    # Verified callers (emails, comma-separated) who may read runs and act on them; any other
    # may only submit. Every local key may do both.
    intake_operators: str = ""

    # Vendors: each URL is the vendor's documented base URL (VENDOR_ENDPOINTS, trailing slash
    # optional); empty means the sandbox's base of the same shape under sandbox_url.
    sandbox_url: str = "http://127.0.0.1:8086"
    clearbit_url: str = ""
    jira_url: str = ""
    sendgrid_url: str = ""
    slack_url: str = ""
    gemini_url: str = ""

    # Enrichment: providers (clearbit, website) tried in order; the next one when a provider
    # has no profile for the domain or fails for good (tools/clearbit/core.py says when else).
    enrichment_providers: str = "clearbit,website"
    # The website provider's page URL, `{domain}` filled in. Empty: https://{domain}/ on the
    # gcp backend, the sandbox's <sandbox_url>/website/{domain}/ on the local one.
    website_url: str = ""
    website_max_bytes: int = Field(default=512 * 1024, ge=1)
    website_max_redirects: int = Field(default=3, ge=0)

    # Secrets: local defaults are the sandbox's; never in repr, errors or logs.
    clearbit_key: str = Field(default="sandbox-clearbit-key", repr=False)
    jira_user: str = "chimera@example.com"
    jira_token: str = Field(default="sandbox-jira-token", repr=False)
    sendgrid_key: str = Field(default="SG.sandbox-sendgrid-key", repr=False)
    slack_token: str = Field(default="xoxb-sandbox-slack-token", repr=False)
    gemini_api_key: str = Field(default="sandbox-gemini-key", repr=False)

    gemini_model: str = "gemini-2.5-flash"
    # Vertex AI instead of the Gemini API: no key, Application Default Credentials, in
    # gemini_project (empty means gcp_project) at gemini_location.
    gemini_vertexai: bool = False
    gemini_project: str = ""
    gemini_location: str = "us-central1"
    # USD per million tokens, input and output; for the run's cost estimate.
    gemini_price_in: float = Field(default=0.30, ge=0)
    gemini_price_out: float = Field(default=2.50, ge=0)

    sender_email: str = "welcome@chimera.example"
    sender_name: str = "Chimera Onboarding"
    default_slack_channel: str = "#client-onboarding"
    jira_project_template: str = "com.pyxis.greenhopper.jira:gh-simplified-kanban-classic"
    jira_project_type: str = "software"
    jira_lead_account_id: str = ""

    # Seconds. Chain: vendor_timeout < dispatch_deadline < function_timeout.
    vendor_connect_timeout: float = Field(default=3.05, gt=0)
    vendor_read_timeout: float = Field(default=10.0, gt=0)
    dispatch_deadline: float = Field(default=30.0, gt=0)
    function_timeout: float = Field(default=60.0, gt=0)

    # Resilience, per vendor. Its circuit breaker opens when at least this share of an
    # instance's last breaker_window requests failed (once it has breaker_minimum_calls), for
    # breaker_cooldown seconds; then each instance lets breaker_half_open_calls probes through
    # and closes it when their failure rate is under the threshold. Instances reread the shared
    # decision at most every breaker_state_cache seconds. At most vendor_concurrency calls in
    # flight per instance.
    breaker_failure_rate: float = 0.6
    breaker_window: int = 100
    breaker_minimum_calls: int = 50
    breaker_half_open_calls: int = 10
    breaker_cooldown: float = 30.0
    breaker_state_cache: float = 2.0
    vendor_concurrency: int = Field(default=20, ge=1)
    # The local queue's backoffs times this (demos and tests; Retry-After is kept in full).
    local_backoff_scale: float = Field(default=1.0, ge=0)
    # The local queues' dispatch rates (max_dispatches_per_second); off lifts them, to measure
    # the engine rather than the shaping (bench/engine.py). On gcp Terraform sets the queues'.
    queue_rate_limits: bool = True
    # A side effect whose outcome is unknown and cannot be looked up: park or repeat.
    unknown_outcome: Literal["park", "repeat"] = "park"

    # The agent's reasoning. The orchestrator asks the model for the plan at a run's start and
    # for a revision after enrichment (off: the default plan, no model calls); each such call
    # gets this many seconds, and is asked again at most once. With require_approval, the run
    # waits for a person (`chimera runs approve`) before the welcome email is sent.
    agent_reasoning: bool = True
    reasoning_timeout: float = Field(default=8.0, gt=0)
    require_approval: bool = False

    # Finished runs (succeeded, cancelled) and their records go this many days after their last
    # change (locally the dispatcher's housekeeping, on gcp Firestore's TTL on `expire_at`);
    # 0 keeps them forever. Parked and waiting runs are kept whatever their age.
    retention_days: float = Field(default=30.0, ge=0, le=36500, allow_inf_nan=False)
    # Events a run's log holds before its older retries are folded (shared/history.py).
    event_log_cap: int = Field(default=EVENT_LOG_CAP, ge=MIN_EVENT_LOG_CAP)
    # Verification: a read-only look at each side effect after its step succeeds. A mismatch
    # re-runs the step, at most verify_mismatch_limit times before the run is flagged; a
    # lookup that lags or errs is retried for verify_window seconds, then unverifiable. An
    # email still absent from SendGrid's activity feed verify_max_lag seconds after its send
    # counts as lost (a mismatch: it is sent again); 0 never concludes that from absence.
    verify_steps: bool = True
    verify_mismatch_limit: int = Field(default=2, ge=1)
    verify_window: float = Field(default=300.0, gt=0)
    verify_max_lag: float = Field(default=0.0, ge=0)

    dev_port: int = Field(default=8080, ge=0, le=65535)
    # Threads serving `chimera dev`'s and `chimera ui`'s HTTP requests; more clients at once
    # wait for one (with `chimera dev --http` the task deliveries get threads of their own).
    http_threads: int = Field(default=16, ge=1)
    # `chimera ui`: the console alone, on 127.0.0.1, against any CHIMERA_STATE_URL.
    console_port: int = Field(default=8090, ge=0, le=65535)
    log_format: Literal["text", "json"] = "text"
    # Where traces and metrics go (shared/telemetry.py): none (ids only, nothing exported),
    # console (stderr), otlp (OTEL_EXPORTER_OTLP_* say where), gcp (Cloud Trace, Monitoring).
    telemetry_exporter: Literal["none", "console", "otlp", "gcp"] = "none"
    # A link to a run's trace, `{trace_id}` filled in (Cloud Trace's, Jaeger's); empty: none.
    trace_url: str = ""

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise SettingsError(_described(exc, type(self))) from None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Only what the caller passes: from_env passes the environment's, tests their own.
        return (init_settings,)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Settings from the CHIMERA_* variables of `environ` (os.environ by default).

        Raises:
            SettingsError: a value of the wrong type, or settings that disagree; every problem
                on its own line, naming the variables.
        """
        settings = cls(**Environment(cls, os.environ if environ is None else environ)())
        settings.check()
        settings.state_location  # noqa: B018 - on gcp, a state URL or a project: say so now
        return settings

    def check(self) -> None:
        """Raise SettingsError listing every setting that cannot be right with the others."""
        problems = self.problems()
        if problems:
            raise SettingsError("\n".join(problems))

    def problems(self) -> list[str]:
        """What disagrees, one sentence each, naming the variables."""
        problems = []
        if not self.vendor_deadline < self.dispatch_deadline < self.function_timeout:
            problems.append(
                "timeouts must chain: vendor connect+read "
                f"({self.vendor_deadline}s) < dispatch deadline ({self.dispatch_deadline}s) "
                f"< function timeout ({self.function_timeout}s)"
            )
        problems += self.vendor_url_problems()
        problems += self._breaker_problems()
        problems += self._enrichment_problems()
        problems += self._state_problems()
        if self.trace_url and "{trace_id}" not in self.trace_url:
            problems.append(f"{PREFIX}TRACE_URL must contain {{trace_id}}, where the id goes")
        return problems

    @property
    def state_location(self) -> str:
        """Where runs are kept: `state_url`, else the backend's own default (SettingsError on
        gcp with neither a state URL nor a project)."""
        if self.state_url:
            return self.state_url
        if self.backend == "local":
            return f"sqlite:///{self.home / 'chimera.db'}"
        if self.gcp_project:
            return f"firestore://{self.gcp_project}"
        raise SettingsError(
            f"{PREFIX}BACKEND=gcp keeps its state in Firestore: set {PREFIX}STATE_URL to "
            f"{FIRESTORE_URLS}, or {PREFIX}GCP_PROJECT for its default database"
        )

    @property
    def intake_identity_required(self) -> bool:
        """Whether the intake verifies Google ID tokens: as set, else on for gcp."""
        if self.intake_require_identity is None:
            return self.backend == "gcp"
        return self.intake_require_identity

    @property
    def retention(self) -> timedelta | None:
        """How long finished runs are kept; None: forever (CHIMERA_RETENTION_DAYS=0)."""
        return timedelta(days=self.retention_days) if self.retention_days else None

    @property
    def enrichment_provider_names(self) -> tuple[str, ...]:
        """The providers `enrichment_providers` names, in its order, each once."""
        names = (n.strip().lower() for n in self.enrichment_providers.split(","))
        return tuple(dict.fromkeys(n for n in names if n))

    @property
    def vendor_timeout(self) -> tuple[float, float]:
        return (self.vendor_connect_timeout, self.vendor_read_timeout)

    @property
    def vendor_deadline(self) -> float:
        """Longest a single vendor call may take, all phases included."""
        return self.vendor_connect_timeout + self.vendor_read_timeout

    def vendor_url(self, vendor: str) -> str:
        """The vendor's base URL in its documented shape: Slack's ends in /api/, the others
        have no trailing slash. The website's is a page URL template with `{domain}`: the
        company's own site on gcp, the sandbox's copy of it locally, unless configured."""
        if vendor == "website":
            if self.website_url:
                return self.website_url
            if self.backend == "gcp":
                return WEBSITE_URL
            return f"{self.sandbox_url.rstrip('/')}/website/{WEBSITE_PLACEHOLDER}/"
        endpoint = VENDOR_ENDPOINTS[vendor]
        base = getattr(self, f"{vendor}_url") or (
            f"{self.sandbox_url.rstrip('/')}/{vendor}{endpoint.path}"
        )
        return base.rstrip("/") + ("/" if endpoint.documented.endswith("/") else "")

    def secret_values(self) -> list[str]:
        """The configured secrets, for the log filter that redacts them."""
        fields = type(self).model_fields
        return [getattr(self, n) for n, f in fields.items() if not f.repr and getattr(self, n)]

    def replace(self, **changes: Any) -> Settings:
        """A copy with `changes`, each typed as when built (not `check`ed: see the class)."""
        return type(self)(**{**{n: getattr(self, n) for n in type(self).model_fields}, **changes})

    def _breaker_problems(self) -> list[str]:
        problems = []
        if not 0 < self.breaker_failure_rate <= 1:
            problems.append(f"{PREFIX}BREAKER_FAILURE_RATE must be in (0, 1]")
        if not 1 <= self.breaker_minimum_calls <= self.breaker_window:
            problems.append(
                f"{PREFIX}BREAKER_MINIMUM_CALLS must be between 1 and {PREFIX}BREAKER_WINDOW"
            )
        if self.breaker_half_open_calls < 1:
            problems.append(f"{PREFIX}BREAKER_HALF_OPEN_CALLS must be at least 1")
        if self.breaker_cooldown <= 0:
            problems.append(f"{PREFIX}BREAKER_COOLDOWN must be positive")
        if self.breaker_state_cache < 0:
            problems.append(f"{PREFIX}BREAKER_STATE_CACHE must not be negative")
        return problems

    def _enrichment_problems(self) -> list[str]:
        # Which names are known is the runtime's to say, from the adapters the tool hands in.
        names = self.enrichment_provider_names
        if len(names) * self.vendor_deadline >= self.dispatch_deadline:
            return [
                f"{len(names)} enrichment providers in a row may take "
                f"{len(names) * self.vendor_deadline}s, not under the dispatch deadline "
                f"({self.dispatch_deadline}s): shorten the vendor timeouts or the providers"
            ]
        return []

    def _state_problems(self) -> list[str]:
        # Empty is the backend's own default: see state_location.
        problem = state_url_problem(self.state_url, self.backend) if self.state_url else None
        return [problem] if problem else []

    def vendor_url_problems(self) -> list[str]:
        """What is wrong with each vendor URL set explicitly: one sentence per URL that
        cannot be right, naming its variable and the documented value."""
        problems = [
            problem
            for vendor in VENDOR_ENDPOINTS
            if getattr(self, f"{vendor}_url")
            and (problem := self._vendor_url_problem(vendor, getattr(self, f"{vendor}_url")))
        ]
        if self.website_url and (problem := self._website_url_problem(self.website_url)):
            problems.append(problem)
        return problems

    def _vendor_url_problem(self, vendor: str, url: str) -> str | None:
        documented = VENDOR_ENDPOINTS[vendor].documented
        if vendor == "gemini" and self.gemini_vertexai:
            documented = vertex_ai_url(self.gemini_location)
        wrong = f"{variable(vendor + '_url')}={shown(url)} cannot be right"
        problem = base_url_problem(vendor, url)
        if problem:
            return f"{wrong}: {problem}; set it to the documented {documented}"
        if vendor == "gemini":
            return self._gemini_host_problem((urlsplit(url).hostname or "").lower(), wrong)
        return None

    def _gemini_host_problem(self, host: str, wrong: str) -> str | None:
        """Whether the Gemini host agrees with CHIMERA_GEMINI_VERTEXAI and the location."""
        serves = vertex_location(host)
        vertex = vertex_ai_url(self.gemini_location)
        if host == VENDOR_ENDPOINTS["gemini"].host and self.gemini_vertexai:
            return (
                f"{wrong}: it is the Gemini API, but {PREFIX}GEMINI_VERTEXAI is on; for Vertex "
                f"AI set it to the documented {vertex}"
            )
        if serves is not None and not self.gemini_vertexai:
            return (
                f"{wrong}: it is Vertex AI, but {PREFIX}GEMINI_VERTEXAI is off; for the Gemini "
                f"API set it to the documented {VENDOR_ENDPOINTS['gemini'].documented}"
            )
        if serves is not None and serves != self.gemini_location:
            return (
                f"{wrong}: it serves location {serves}, not {PREFIX}GEMINI_LOCATION="
                f"{self.gemini_location}; set it to the documented {vertex}"
            )
        return None

    def _website_url_problem(self, url: str) -> str | None:
        problem = website_url_problem(url)
        if problem is None:
            return None
        return (
            f"{PREFIX}WEBSITE_URL={shown(url)} cannot be right: {problem}; set it to the "
            f"documented {WEBSITE_URL} (or leave it empty)"
        )


def variable(field_name: str) -> str:
    """The environment variable that sets a field: CHIMERA_<FIELD>."""
    return PREFIX + field_name.upper()


class Environment(PydanticBaseSettingsSource):
    """The CHIMERA_* variables of a mapping (os.environ at start-up, a dict in tests), as
    strings for the fields they name; pydantic turns each into its field's type."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        super().__init__(settings_cls)
        self.environ = environ

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        value = self.environ.get(variable(field_name))
        if value is not None and field.annotation in (bool, bool | None):
            value = value.strip()  # as numbers are: "true\n" from a file is still true
        return value, field_name, False

    def __call__(self) -> dict[str, Any]:
        values = {}
        for name, field in self.settings_cls.model_fields.items():
            value, _, _ = self.get_field_value(field, name)
            if value is not None:
                values[name] = value
        return values


def _described(exc: ValidationError, settings_cls: type[BaseSettings]) -> str:
    """Pydantic's errors, one line each naming its variable; a secret's value is never shown."""
    lines = []
    for error in exc.errors(include_url=False):
        name = str(error["loc"][0]) if error["loc"] else ""
        field = settings_cls.model_fields.get(name)
        if field is None:
            lines.append(f"{variable(name)}: there is no such setting")
            continue
        value, message = error.get("input"), str(error["msg"])
        message = message[:1].lower() + message[1:]
        if error["type"] == "literal_error":
            expected = str(error["ctx"]["expected"]).replace("'", "")
            lines.append(f"{variable(name)} must be {expected}, not {value!r:.80}")
        elif not field.repr:
            lines.append(f"{variable(name)}: {message}")
        else:
            lines.append(f"{variable(name)}={value!r:.80}: {message}")
    return "\n".join(lines)

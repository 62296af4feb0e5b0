# Inputs. Defaults mirror shared/settings.py where a setting exists there;
# tests/unit/test_terraform.py keeps the two in step.

# --- Project and placement -------------------------------------------------------------------

variable "project_id" {
  description = "Google Cloud project that hosts Chimera (one project per environment)."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{4,28}[a-z0-9]$", var.project_id))
    error_message = "project_id must be a valid project ID (6-30 lowercase letters, digits, hyphens)."
  }
}

variable "region" {
  description = "Region of the functions, the Cloud Tasks queues and the Eventarc trigger (CHIMERA_GCP_LOCATION)."
  type        = string
  default     = "us-central1"

  validation {
    condition     = can(regex("^[a-z]+-[a-z]+[0-9]+$", var.region))
    error_message = "region must be a Google Cloud region such as us-central1."
  }
}

variable "environment" {
  description = "Environment name (dev, staging, prod...), used as a label on every resource."
  type        = string
  default     = "dev"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{0,19}$", var.environment))
    error_message = "environment must be 1-20 lowercase letters, digits or hyphens, starting with a letter."
  }
}

variable "labels" {
  description = "Extra labels applied to every resource that takes labels."
  type        = map(string)
  default     = {}
}

# --- State -----------------------------------------------------------------------------------

variable "firestore_location" {
  description = "Firestore location (a multi-region such as nam5/eur3, or a region). Fixed once created."
  type        = string
  default     = "nam5"
}

variable "firestore_database" {
  description = "Firestore database ID; CHIMERA_STATE_URL is firestore://<project>/<this>."
  type        = string
  default     = "(default)"

  validation {
    condition     = var.firestore_database == "(default)" || can(regex("^[a-z][a-z0-9-]{2,61}[a-z0-9]$", var.firestore_database))
    error_message = "firestore_database must be \"(default)\" or 4-63 lowercase letters, digits or hyphens."
  }
}

# --- Source bundles --------------------------------------------------------------------------

variable "bundle_dir" {
  description = "Directory, relative to this module, where build_bundles.py wrote the function zips."
  type        = string
  default     = "build"
}

# --- Who may start runs ----------------------------------------------------------------------

variable "intake_invokers" {
  description = "IAM members allowed to call the intake HTTP function (POST /runs, GET /runs/{id}), e.g. group:onboarding@example.com."
  type        = list(string)
  default     = []

  validation {
    condition = alltrue([
      for m in var.intake_invokers : can(regex("^(user|group|serviceAccount|domain|principal|principalSet):.+", m))
    ])
    error_message = "intake_invokers must be named IAM members (user:, group:, serviceAccount:, domain:, principal:, principalSet:); public members are not allowed."
  }
}

variable "intake_publishers" {
  description = "IAM members allowed to publish run requests on the intake Pub/Sub topic."
  type        = list(string)
  default     = []

  validation {
    condition = alltrue([
      for m in var.intake_publishers : can(regex("^(user|group|serviceAccount|domain|principal|principalSet):.+", m))
    ])
    error_message = "intake_publishers must be named IAM members (user:, group:, serviceAccount:, domain:, principal:, principalSet:); public members are not allowed."
  }
}

variable "verify_task_identity" {
  description = "Whether the orchestrator and the tools also verify each task's Google ID token themselves (audience and tasks service account), behind IAM (CHIMERA_REQUIRE_IDENTITY)."
  type        = bool
  default     = true
}

variable "intake_require_identity" {
  description = "Whether the HTTP intake also verifies each caller's Google ID token itself, behind IAM (issuer, one of intake_audience, a verified email), and records that email as the actor of what the caller does (CHIMERA_INTAKE_REQUIRE_IDENTITY). Off, IAM alone guards it and actions are recorded as iam-invoker."
  type        = bool
  default     = true
}

variable "intake_audience" {
  description = "Audiences (comma-separated) the intake accepts in callers' ID tokens (CHIMERA_INTAKE_AUDIENCE); empty means <functions_url>/orchestrator-intake. A person's `gcloud auth print-identity-token` names gcloud's client id, 32555940559.apps.googleusercontent.com: add it to let people call with their own tokens."
  type        = string
  default     = ""
}

variable "intake_operators" {
  description = "Emails of the intake callers who may read runs (clients' personal data) and resume, cancel, approve or reject them (CHIMERA_INTAKE_OPERATORS). Every other invoker may only submit. Each must also be in intake_invokers."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for e in var.intake_operators : can(regex("^[^@\\s,]+@[^@\\s,]+$", e))])
    error_message = "intake_operators are email addresses (ada@example.com, sa@project.iam.gserviceaccount.com), without a member prefix."
  }
}

# --- Vendors ---------------------------------------------------------------------------------

variable "clearbit_url" {
  description = "Clearbit's documented API base URL (CHIMERA_CLEARBIT_URL); the client adds /v2/companies/find."
  type        = string
  default     = "https://company.clearbit.com"

  validation {
    condition     = can(regex("^https://", var.clearbit_url))
    error_message = "clearbit_url must be an https:// URL."
  }
}

variable "jira_url" {
  description = "Jira Cloud site URL, https://your-site.atlassian.net with no path (not .../jira): the client adds /rest/api/2/... (CHIMERA_JIRA_URL)."
  type        = string

  validation {
    condition     = can(regex("^https://", var.jira_url))
    error_message = "jira_url must be an https:// URL."
  }
}

variable "jira_user" {
  description = "Jira account email that owns the API token (CHIMERA_JIRA_USER, tool-jira only)."
  type        = string

  validation {
    condition     = can(regex("^[^@\\s]+@[^@\\s]+$", var.jira_user))
    error_message = "jira_user must be an email address."
  }
}

variable "sendgrid_url" {
  description = "SendGrid's documented API base URL (CHIMERA_SENDGRID_URL); the client adds /v3/..."
  type        = string
  default     = "https://api.sendgrid.com"

  validation {
    condition     = can(regex("^https://", var.sendgrid_url))
    error_message = "sendgrid_url must be an https:// URL."
  }
}

variable "slack_url" {
  description = "Slack's documented Web API base URL, ending in /api/ (CHIMERA_SLACK_URL); the client adds the method name, e.g. chat.postMessage."
  type        = string
  default     = "https://slack.com/api/"

  validation {
    condition     = can(regex("^https://", var.slack_url))
    error_message = "slack_url must be an https:// URL."
  }
}

variable "gemini_url" {
  description = "Gemini's base URL (CHIMERA_GEMINI_URL). Empty means the documented one for the mode: https://generativelanguage.googleapis.com for the Gemini API, https://REGION-aiplatform.googleapis.com with gemini_vertexai."
  type        = string
  default     = ""

  validation {
    condition     = var.gemini_url == "" || can(regex("^https://", var.gemini_url))
    error_message = "gemini_url must be empty or an https:// URL."
  }
}

variable "extra_environment" {
  description = "Further CHIMERA_* settings for every function (e.g. CHIMERA_SENDER_EMAIL). Secrets do not belong here; the fixed variables set by this module win on conflict."
  type        = map(string)
  default     = {}

  validation {
    condition = alltrue([
      for k in keys(var.extra_environment) : can(regex("^CHIMERA_[A-Z0-9_]+$", k)) && !can(regex("(_KEY|_TOKEN|_SECRET|_PASSWORD)$", k))
    ])
    error_message = "extra_environment keys must be CHIMERA_* settings and must not be secrets (*_KEY, *_TOKEN...): those live in Secret Manager."
  }
}

variable "secret_version" {
  description = "Secret Manager version every function reads (\"latest\" picks up a rotation on the next cold start)."
  type        = string
  default     = "latest"

  validation {
    condition     = var.secret_version == "latest" || can(regex("^[0-9]+$", var.secret_version))
    error_message = "secret_version must be \"latest\" or a version number."
  }
}

# --- Timeouts: vendor connect+read < dispatch deadline < function timeout --------------------

variable "vendor_connect_timeout" {
  description = "Seconds to connect to a vendor (CHIMERA_VENDOR_CONNECT_TIMEOUT)."
  type        = number
  default     = 3.05

  validation {
    condition     = var.vendor_connect_timeout > 0
    error_message = "vendor_connect_timeout must be positive."
  }
}

variable "vendor_read_timeout" {
  description = "Seconds to wait for a vendor's response (CHIMERA_VENDOR_READ_TIMEOUT)."
  type        = number
  default     = 10

  validation {
    condition     = var.vendor_read_timeout > 0
    error_message = "vendor_read_timeout must be positive."
  }
}

variable "dispatch_deadline" {
  description = "Seconds Cloud Tasks waits for a task's HTTP answer before retrying; the code sets it on each task (CHIMERA_DISPATCH_DEADLINE)."
  type        = number
  default     = 30

  validation {
    # Cloud Tasks accepts 15s..30min for HTTP targets.
    condition     = var.dispatch_deadline >= 15 && var.dispatch_deadline <= 1800
    error_message = "dispatch_deadline must be between 15 and 1800 seconds."
  }
}

variable "function_timeout" {
  description = "Seconds a function may run per request (service_config.timeout_seconds, CHIMERA_FUNCTION_TIMEOUT)."
  type        = number
  default     = 60

  validation {
    # 540s is the ceiling for event-driven gen2 functions (orchestrator-pubsub).
    condition     = var.function_timeout >= 1 && var.function_timeout <= 540 && floor(var.function_timeout) == var.function_timeout
    error_message = "function_timeout must be a whole number of seconds between 1 and 540."
  }
}

# --- Network -----------------------------------------------------------------------------------

variable "task_targets_ingress" {
  description = "Ingress of the functions only Cloud Tasks and Eventarc call (orchestrator, orchestrator-pubsub, tools). Same-project Cloud Tasks and Eventarc count as internal traffic; IAM is enforced either way."
  type        = string
  default     = "ALLOW_INTERNAL_ONLY"

  validation {
    condition     = contains(["ALLOW_INTERNAL_ONLY", "ALLOW_INTERNAL_AND_GCLB", "ALLOW_ALL"], var.task_targets_ingress)
    error_message = "task_targets_ingress must be ALLOW_INTERNAL_ONLY, ALLOW_INTERNAL_AND_GCLB or ALLOW_ALL."
  }
}

variable "intake_ingress" {
  description = "Ingress of the intake HTTP function. ALLOW_ALL lets authenticated callers reach it directly; use ALLOW_INTERNAL_AND_GCLB behind a load balancer."
  type        = string
  default     = "ALLOW_ALL"

  validation {
    condition     = contains(["ALLOW_INTERNAL_ONLY", "ALLOW_INTERNAL_AND_GCLB", "ALLOW_ALL"], var.intake_ingress)
    error_message = "intake_ingress must be ALLOW_INTERNAL_ONLY, ALLOW_INTERNAL_AND_GCLB or ALLOW_ALL."
  }
}

variable "vpc_connector" {
  description = "Optional Serverless VPC Access connector (projects/P/locations/R/connectors/C) for every function; null keeps Google's default egress."
  type        = string
  default     = null
}

variable "vpc_connector_egress" {
  description = "Which egress goes through vpc_connector when it is set: PRIVATE_RANGES_ONLY or ALL_TRAFFIC (then vendors are reached through your Cloud NAT)."
  type        = string
  default     = "PRIVATE_RANGES_ONLY"

  validation {
    condition     = contains(["PRIVATE_RANGES_ONLY", "ALL_TRAFFIC"], var.vpc_connector_egress)
    error_message = "vpc_connector_egress must be PRIVATE_RANGES_ONLY or ALL_TRAFFIC."
  }
}

# --- Scaling -----------------------------------------------------------------------------------

variable "function_overrides" {
  description = "Per-function scaling overrides keyed by function name (e.g. {\"tool-jira\" = {max_instances = 5}}); unset fields keep the defaults in functions.tf."
  type = map(object({
    memory        = optional(string)
    cpu           = optional(string)
    min_instances = optional(number)
    max_instances = optional(number)
    concurrency   = optional(number)
  }))
  default = {}

  validation {
    condition = alltrue([
      for k in keys(var.function_overrides) : contains([
        "orchestrator", "orchestrator-intake", "orchestrator-pubsub",
        "tool-clearbit", "tool-jira", "tool-sendgrid", "tool-slack",
      ], k)
    ])
    error_message = "function_overrides keys must be function names (orchestrator, orchestrator-intake, orchestrator-pubsub, tool-clearbit, tool-jira, tool-sendgrid, tool-slack)."
  }
}

variable "tasks_log_sampling_ratio" {
  description = "Fraction of task attempts Cloud Tasks writes to Cloud Logging (0 to 1)."
  type        = number
  default     = 1

  validation {
    condition     = var.tasks_log_sampling_ratio >= 0 && var.tasks_log_sampling_ratio <= 1
    error_message = "tasks_log_sampling_ratio must be between 0 and 1."
  }
}

# --- Pub/Sub intake ----------------------------------------------------------------------------

variable "intake_topic" {
  description = "Name of the Pub/Sub topic that starts runs."
  type        = string
  default     = "chimera-intake"

  validation {
    condition     = can(regex("^[a-zA-Z][a-zA-Z0-9._~%+-]{2,254}$", var.intake_topic)) && !startswith(var.intake_topic, "goog")
    error_message = "intake_topic must be a valid Pub/Sub topic name."
  }
}

variable "pubsub_kms_key" {
  description = "Optional Cloud KMS key (projects/P/locations/L/keyRings/R/cryptoKeys/K) for the intake topics; null uses Google-managed encryption. The Pub/Sub service agent needs encrypter/decrypter on it."
  type        = string
  default     = null
}

variable "intake_max_delivery_attempts" {
  description = "Deliveries of one intake message before it goes to the dead-letter topic (5-100); applied to the trigger's subscription by configure_intake_dead_letter.sh."
  type        = number
  default     = 5

  validation {
    condition     = var.intake_max_delivery_attempts >= 5 && var.intake_max_delivery_attempts <= 100
    error_message = "intake_max_delivery_attempts must be between 5 and 100."
  }
}

variable "intake_min_retry_delay" {
  description = "Shortest wait before Pub/Sub redelivers an intake message the function rejected (seconds, 0-600)."
  type        = number
  default     = 10

  validation {
    condition     = var.intake_min_retry_delay >= 0 && var.intake_min_retry_delay <= 600
    error_message = "intake_min_retry_delay must be between 0 and 600 seconds."
  }
}

variable "intake_max_retry_delay" {
  description = "Longest wait before Pub/Sub redelivers an intake message (seconds, 0-600)."
  type        = number
  default     = 600

  validation {
    condition     = var.intake_max_retry_delay >= 0 && var.intake_max_retry_delay <= 600
    error_message = "intake_max_retry_delay must be between 0 and 600 seconds."
  }
}

# --- Monitoring --------------------------------------------------------------------------------

variable "notification_channels" {
  description = "Cloud Monitoring notification channel IDs (projects/P/notificationChannels/N) that receive Chimera's alerts."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for c in var.notification_channels : can(regex("^projects/[^/]+/notificationChannels/[^/]+$", c))])
    error_message = "notification_channels must be full channel names: projects/P/notificationChannels/N."
  }
}

variable "step_latency_p99_threshold_ms" {
  description = "Alert when a vendor's p99 step latency (chimera.tool.duration) stays above this many milliseconds for 10 minutes."
  type        = number
  default     = 20000

  validation {
    condition     = var.step_latency_p99_threshold_ms > 0
    error_message = "step_latency_p99_threshold_ms must be positive."
  }
}

variable "queue_backlog_threshold" {
  description = "Alert when a queue holds more than this many tasks for 10 minutes."
  type        = number
  default     = 100

  validation {
    condition     = var.queue_backlog_threshold > 0
    error_message = "queue_backlog_threshold must be positive."
  }
}

variable "queue_oldest_task_age_threshold_s" {
  description = "Alert when a queue's oldest task has waited more than this many seconds for 5 minutes (chimera.queue.oldest_task_age; a task waiting out its backoff counts). Below a tool task's retry window (about 35 min), so it fires before a step parks."
  type        = number
  default     = 900

  validation {
    condition     = var.queue_oldest_task_age_threshold_s > 0
    error_message = "queue_oldest_task_age_threshold_s must be positive."
  }
}

variable "breaker_open_alert_after_s" {
  description = "Alert when a vendor's circuit breaker stays open this many seconds (0 alerts on the first open)."
  type        = number
  default     = 120

  validation {
    condition     = var.breaker_open_alert_after_s >= 0 && floor(var.breaker_open_alert_after_s) == var.breaker_open_alert_after_s
    error_message = "breaker_open_alert_after_s must be a whole number of seconds, 0 or more."
  }
}

variable "enrichment_providers" {
  description = "Enrichment providers tried in order, comma-separated: clearbit (legacy keys), website (keyless) (CHIMERA_ENRICHMENT_PROVIDERS)."
  type        = string
  default     = "clearbit,website"

  validation {
    condition     = can(regex("^(clearbit|website)(,(clearbit|website))*$", var.enrichment_providers))
    error_message = "enrichment_providers names clearbit and/or website, comma-separated."
  }
}

variable "gemini_vertexai" {
  description = "Call Gemini through Vertex AI in this project and region (service-account credentials, no API key) instead of the Gemini API (CHIMERA_GEMINI_VERTEXAI); an empty gemini_url then means https://REGION-aiplatform.googleapis.com."
  type        = bool
  default     = false
}

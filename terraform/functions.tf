# The seven Cloud Functions (gen2) and where their code comes from.
#
# Bundles: terraform/build_bundles.py writes build/<bundle>.zip (shared/ + the function's folder
# at its repo path + its requirements.txt at the root + a generated root main.py re-exporting the
# entry points). The three orchestrator functions share one bundle and differ by entry point.
# Objects are named by content hash, so a changed bundle redeploys exactly the functions using it.

locals {
  # invoked_by: "tasks"    - Cloud Tasks, with the OIDC token of the tasks service account;
  #             "intake"   - the members in var.intake_invokers, over authenticated HTTPS;
  #             "eventarc" - the Pub/Sub trigger on the intake topic.
  # What each function's service account may do follows from what the function uses (iam.tf,
  # secrets.tf; tests/unit/test_terraform.py asserts the exact role set of each account):
  # enqueues_to: the queues the function creates tasks on (queue-level enqueuer grants, and
  #              actAs on the tasks account, whose OIDC token each task carries);
  # uses_state:  it reads and writes runs (Firestore user, on Chimera's database only);
  # asks_model:  it calls Gemini (the API key's secret, or Vertex AI when gemini_vertexai).
  # Vendor secrets: secrets.tf names each one's only reader.
  # env: the function's own settings, on top of local.environment.
  # Scaling: a queue's target must absorb its max_concurrent_dispatches
  # (max_instances * concurrency >= max_concurrent_dispatches), else Cloud Run answers 429 and
  # the task burns an attempt. Python serves concurrent requests on threads: cpu must be >= 1.
  functions = {
    "orchestrator" = {
      description     = "Chimera: decides each run's next step and dispatches it (queue orchestrator)."
      bundle          = "orchestrator"
      entry_point     = "handle_task"
      invoked_by      = "tasks"
      enqueues_to     = ["orchestrator", "tool-clearbit", "tool-jira", "tool-sendgrid", "tool-slack"]
      uses_state      = true
      asks_model      = true
      env             = { CHIMERA_REQUIRE_IDENTITY = tostring(var.verify_task_identity) }
      timeout_seconds = var.function_timeout
      memory          = "512Mi"
      cpu             = "1"
      max_instances   = 10
      concurrency     = 10
    }
    "orchestrator-intake" = {
      description = "Chimera: authenticated HTTP intake (POST /runs; operators: GET /runs, actions)."
      bundle      = "orchestrator"
      entry_point = "intake_http"
      invoked_by  = "intake"
      enqueues_to = ["orchestrator"]
      uses_state  = true
      asks_model  = false
      env = {
        CHIMERA_INTAKE_REQUIRE_IDENTITY = tostring(var.intake_require_identity)
        CHIMERA_INTAKE_AUDIENCE         = var.intake_audience
        CHIMERA_INTAKE_OPERATORS        = join(",", var.intake_operators)
      }
      timeout_seconds = var.function_timeout
      memory          = "512Mi"
      cpu             = "1"
      max_instances   = 5
      concurrency     = 10
    }
    "orchestrator-pubsub" = {
      description     = "Chimera: starts a run for each message on the intake topic."
      bundle          = "orchestrator"
      entry_point     = "intake_pubsub"
      invoked_by      = "eventarc"
      enqueues_to     = ["orchestrator"]
      uses_state      = true
      asks_model      = false
      env             = {}
      timeout_seconds = var.function_timeout
      memory          = "512Mi"
      cpu             = "1"
      max_instances   = 5
      concurrency     = 10
    }
    "tool-clearbit" = {
      description     = "Chimera tool: enriches the client's company with Clearbit (queue tool-clearbit)."
      bundle          = "tool-clearbit"
      entry_point     = "run_tool"
      invoked_by      = "tasks"
      enqueues_to     = ["orchestrator"]
      uses_state      = true
      asks_model      = false
      env             = { CHIMERA_REQUIRE_IDENTITY = tostring(var.verify_task_identity) }
      timeout_seconds = var.function_timeout
      memory          = "512Mi"
      cpu             = "1"
      max_instances   = 5
      concurrency     = 4
    }
    "tool-jira" = {
      description = "Chimera tool: creates the client's Jira project (queue tool-jira)."
      bundle      = "tool-jira"
      entry_point = "run_tool"
      invoked_by  = "tasks"
      enqueues_to = ["orchestrator"]
      uses_state  = true
      asks_model  = false
      env = {
        CHIMERA_REQUIRE_IDENTITY = tostring(var.verify_task_identity)
        CHIMERA_JIRA_USER        = var.jira_user
      }
      timeout_seconds = var.function_timeout
      memory          = "512Mi"
      cpu             = "1"
      max_instances   = 3
      concurrency     = 4
    }
    "tool-sendgrid" = {
      description     = "Chimera tool: drafts (Gemini) and sends the welcome email (queue tool-sendgrid)."
      bundle          = "tool-sendgrid"
      entry_point     = "run_tool"
      invoked_by      = "tasks"
      enqueues_to     = ["orchestrator"]
      uses_state      = true
      asks_model      = true
      env             = { CHIMERA_REQUIRE_IDENTITY = tostring(var.verify_task_identity) }
      timeout_seconds = var.function_timeout
      memory          = "512Mi"
      cpu             = "1"
      max_instances   = 5
      concurrency     = 4
    }
    "tool-slack" = {
      description     = "Chimera tool: posts to the client's Slack channel (queue tool-slack)."
      bundle          = "tool-slack"
      entry_point     = "run_tool"
      invoked_by      = "tasks"
      enqueues_to     = ["orchestrator"]
      uses_state      = true
      asks_model      = false
      env             = { CHIMERA_REQUIRE_IDENTITY = tostring(var.verify_task_identity) }
      timeout_seconds = var.function_timeout
      memory          = "512Mi"
      cpu             = "1"
      max_instances   = 3
      concurrency     = 4
    }
  }

  scaling = {
    for name, f in local.functions : name => {
      memory        = coalesce(try(var.function_overrides[name].memory, null), f.memory)
      cpu           = coalesce(try(var.function_overrides[name].cpu, null), f.cpu)
      min_instances = coalesce(try(var.function_overrides[name].min_instances, null), 0)
      max_instances = coalesce(try(var.function_overrides[name].max_instances, null), f.max_instances)
      concurrency   = coalesce(try(var.function_overrides[name].concurrency, null), f.concurrency)
    }
  }

  # Concurrent dispatches each function must absorb, from the queues it serves.
  queue_load = {
    for name, f in local.functions : name => sum(concat([0], [
      for q in local.queues : q.max_concurrent_dispatches if q.target == name
    ]))
  }

  # Cloud Tasks targets <functions_url>/<function name>.
  functions_url = "https://${var.region}-${var.project_id}.cloudfunctions.net"

  # Gemini's documented base URL for the mode; Vertex AI's regional endpoint serves the
  # location the functions name (CHIMERA_GEMINI_LOCATION below), as Settings.check requires.
  gemini_url = var.gemini_url != "" ? var.gemini_url : (
    var.gemini_vertexai ? "https://${var.region}-aiplatform.googleapis.com" : "https://generativelanguage.googleapis.com"
  )

  # Every function's settings (names: shared/settings.py, CHIMERA_ + field name). Secrets are
  # added per function from Secret Manager (secrets.tf), and a function's own `env` on top.
  fixed_environment = {
    CHIMERA_BACKEND                = "gcp"
    CHIMERA_STATE_URL              = "firestore://${var.project_id}/${var.firestore_database}"
    CHIMERA_GCP_PROJECT            = var.project_id
    CHIMERA_GCP_LOCATION           = var.region
    CHIMERA_FUNCTIONS_URL          = local.functions_url
    CHIMERA_TASKS_SERVICE_ACCOUNT  = google_service_account.tasks.email
    CHIMERA_LOG_FORMAT             = "json"
    CHIMERA_TELEMETRY_EXPORTER     = "gcp"
    CHIMERA_VENDOR_CONNECT_TIMEOUT = tostring(var.vendor_connect_timeout)
    CHIMERA_VENDOR_READ_TIMEOUT    = tostring(var.vendor_read_timeout)
    CHIMERA_DISPATCH_DEADLINE      = tostring(var.dispatch_deadline)
    CHIMERA_FUNCTION_TIMEOUT       = tostring(var.function_timeout)
    CHIMERA_CLEARBIT_URL           = var.clearbit_url
    CHIMERA_JIRA_URL               = var.jira_url
    CHIMERA_SENDGRID_URL           = var.sendgrid_url
    CHIMERA_SLACK_URL              = var.slack_url
    CHIMERA_GEMINI_URL             = local.gemini_url
    CHIMERA_ENRICHMENT_PROVIDERS   = var.enrichment_providers
    CHIMERA_GEMINI_VERTEXAI        = tostring(var.gemini_vertexai)
    CHIMERA_GEMINI_LOCATION        = var.region
  }
  # The fixed values win over var.extra_environment.
  environment = merge(var.extra_environment, local.fixed_environment)

  bundles     = toset([for f in local.functions : f.bundle])
  bundle_path = { for b in local.bundles : b => "${path.module}/${var.bundle_dir}/${b}.zip" }
}

resource "google_storage_bucket" "bundles" {
  project  = var.project_id
  name     = "${var.project_id}-chimera-bundles"
  location = var.region

  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = false

  versioning {
    enabled = true
  }

  # Keep replaced bundles a month, for rollbacks and audits, then let them go.
  lifecycle_rule {
    condition {
      days_since_noncurrent_time = 30
      with_state                 = "ARCHIVED"
    }
    action {
      type = "Delete"
    }
  }

  depends_on = [google_project_service.api]
}

resource "google_storage_bucket_object" "bundle" {
  for_each = local.bundles

  bucket       = google_storage_bucket.bundles.name
  name         = "${each.key}/${filemd5(local.bundle_path[each.key])}.zip"
  source       = local.bundle_path[each.key]
  content_type = "application/zip"
}

# Images Cloud Build makes from the bundles; our own repository so the build service account
# needs write access to this one repository only.
resource "google_artifact_registry_repository" "functions" {
  project       = var.project_id
  location      = var.region
  repository_id = "chimera-functions"
  description   = "Images built by Cloud Functions from the Chimera bundles."
  format        = "DOCKER"

  cleanup_policy_dry_run = false

  cleanup_policies {
    id     = "keep-recent"
    action = "KEEP"
    most_recent_versions {
      keep_count = 5
    }
  }

  cleanup_policies {
    id     = "delete-old"
    action = "DELETE"
    condition {
      older_than = "2592000s" # 30 days
    }
  }

  depends_on = [google_project_service.api]
}

resource "google_cloudfunctions2_function" "function" {
  for_each = local.functions

  project     = var.project_id
  location    = var.region
  name        = each.key
  description = each.value.description

  build_config {
    runtime           = "python311"
    entry_point       = each.value.entry_point
    service_account   = google_service_account.build.id
    docker_repository = google_artifact_registry_repository.functions.id

    source {
      storage_source {
        bucket = google_storage_bucket.bundles.name
        object = google_storage_bucket_object.bundle[each.value.bundle].name
      }
    }
  }

  service_config {
    service_account_email            = google_service_account.function[each.key].email
    available_memory                 = local.scaling[each.key].memory
    available_cpu                    = local.scaling[each.key].cpu
    min_instance_count               = local.scaling[each.key].min_instances
    max_instance_count               = local.scaling[each.key].max_instances
    max_instance_request_concurrency = local.scaling[each.key].concurrency
    timeout_seconds                  = each.value.timeout_seconds
    ingress_settings                 = each.value.invoked_by == "intake" ? var.intake_ingress : var.task_targets_ingress
    all_traffic_on_latest_revision   = true
    vpc_connector                    = var.vpc_connector
    vpc_connector_egress_settings    = var.vpc_connector == null ? null : var.vpc_connector_egress
    # THREADS sizes the Functions Framework's gunicorn pool to the requests Cloud Run sends.
    environment_variables = merge(local.environment, each.value.env, {
      THREADS = tostring(local.scaling[each.key].concurrency)
    })

    dynamic "secret_environment_variables" {
      for_each = { for key, read in local.secret_reads : key => read if read.function == each.key }
      content {
        key        = secret_environment_variables.value.env
        project_id = var.project_id
        secret     = google_secret_manager_secret.vendor[secret_environment_variables.value.secret].secret_id
        version    = var.secret_version
      }
    }
  }

  dynamic "event_trigger" {
    for_each = each.value.invoked_by == "eventarc" ? [google_pubsub_topic.intake.id] : []
    content {
      trigger_region        = var.region
      event_type            = "google.cloud.pubsub.topic.v1.messagePublished"
      pubsub_topic          = event_trigger.value
      retry_policy          = "RETRY_POLICY_RETRY"
      service_account_email = google_service_account.intake_trigger.email
    }
  }

  lifecycle {
    precondition {
      condition     = var.vendor_connect_timeout + var.vendor_read_timeout < var.dispatch_deadline && var.dispatch_deadline < each.value.timeout_seconds
      error_message = "Timeouts must chain: vendor connect+read < dispatch_deadline < function timeout."
    }
    precondition {
      condition     = local.scaling[each.key].max_instances * local.scaling[each.key].concurrency >= local.queue_load[each.key]
      error_message = "${each.key}: max_instances * concurrency must cover its queue's max_concurrent_dispatches."
    }
    precondition {
      condition     = local.scaling[each.key].concurrency == 1 || tonumber(local.scaling[each.key].cpu) >= 1
      error_message = "${each.key}: concurrency above 1 needs cpu >= 1."
    }
  }

  # A function that starts before its secret bindings exist fails to deploy.
  depends_on = [
    google_project_service.api,
    google_secret_manager_secret_iam_member.reader,
    google_project_iam_member.build,
    google_project_iam_member.build_staged_source_reader,
    google_artifact_registry_repository_iam_member.build_writer,
    google_storage_bucket_iam_member.build_reader,
    google_firestore_database.state,
  ]
}

# Identities and least-privilege grants. Nothing here is public: every member is a named
# service account or one of var.intake_invokers / var.intake_publishers (validated). A function's
# account holds only what local.functions says it uses (enqueues_to, uses_state, asks_model) and
# its own vendor's secrets (secrets.tf); tests/unit/test_terraform.py pins each account's roles.
#
#   chimera-<function>       runtime identity of each function (one each, never shared)
#   chimera-tasks            the OIDC identity Cloud Tasks attaches; the only invoker of the
#                            orchestrator and the tools
#   chimera-intake-trigger   the identity Eventarc uses to call orchestrator-pubsub
#   chimera-build            the identity Cloud Build uses to build the function images

resource "google_service_account" "function" {
  for_each = local.functions

  project      = var.project_id
  account_id   = "chimera-${each.key}"
  display_name = "Chimera ${each.key}"
  description  = "Runtime identity of the ${each.key} function."

  depends_on = [google_project_service.api]
}

resource "google_service_account" "tasks" {
  project      = var.project_id
  account_id   = "chimera-tasks"
  display_name = "Chimera Cloud Tasks invoker"
  description  = "Cloud Tasks signs each task's OIDC token as this account; it may only invoke the orchestrator and the tools."

  depends_on = [google_project_service.api]
}

resource "google_service_account" "intake_trigger" {
  project      = var.project_id
  account_id   = "chimera-intake-trigger"
  display_name = "Chimera intake trigger"
  description  = "Eventarc delivers intake messages to orchestrator-pubsub as this account."

  depends_on = [google_project_service.api]
}

resource "google_service_account" "build" {
  project      = var.project_id
  account_id   = "chimera-build"
  display_name = "Chimera function builds"
  description  = "Cloud Build builds the function images as this account."

  depends_on = [google_project_service.api]
}

# --- Who may invoke which function (roles/run.invoker on the gen2 function's Cloud Run service) -

resource "google_cloud_run_v2_service_iam_member" "tasks_invoker" {
  for_each = { for name, f in local.functions : name => f if f.invoked_by == "tasks" }

  project  = var.project_id
  location = var.region
  name     = google_cloudfunctions2_function.function[each.key].name
  role     = "roles/run.invoker"
  member   = google_service_account.tasks.member
}

resource "google_cloud_run_v2_service_iam_member" "intake_invoker" {
  for_each = toset(var.intake_invokers)

  project  = var.project_id
  location = var.region
  name     = google_cloudfunctions2_function.function["orchestrator-intake"].name
  role     = "roles/run.invoker"
  member   = each.value
}

resource "google_cloud_run_v2_service_iam_member" "trigger_invoker" {
  for_each = { for name, f in local.functions : name => f if f.invoked_by == "eventarc" }

  project  = var.project_id
  location = var.region
  name     = google_cloudfunctions2_function.function[each.key].name
  role     = "roles/run.invoker"
  member   = google_service_account.intake_trigger.member
}

# --- Enqueueing: queue-level enqueuer, and actAs on the tasks account to attach its OIDC token -

locals {
  enqueue_grants = {
    for pair in flatten([
      for name, f in local.functions : [for queue in f.enqueues_to : { function = name, queue = queue }]
    ]) : "${pair.function}/${pair.queue}" => pair
  }
}

resource "google_cloud_tasks_queue_iam_member" "enqueuer" {
  for_each = local.enqueue_grants

  project  = var.project_id
  location = var.region
  name     = google_cloud_tasks_queue.queue[each.value.queue].name
  role     = "roles/cloudtasks.enqueuer"
  member   = google_service_account.function[each.value.function].member
}

resource "google_service_account_iam_member" "tasks_act_as" {
  for_each = { for name, f in local.functions : name => f if length(f.enqueues_to) > 0 }

  service_account_id = google_service_account.tasks.name
  role               = "roles/iam.serviceAccountUser"
  member             = google_service_account.function[each.key].member
}

# --- Firestore: read/write on Chimera's database only, for the functions that keep state -------

resource "google_project_iam_member" "datastore_user" {
  for_each = { for name, f in local.functions : name => f if f.uses_state }

  project = var.project_id
  role    = "roles/datastore.user"
  member  = google_service_account.function[each.key].member

  condition {
    title       = "chimera-database-only"
    description = "Only the Firestore database that holds Chimera's runs."
    expression  = "resource.name == \"projects/${var.project_id}/databases/${var.firestore_database}\""
  }
}

# --- Builds ------------------------------------------------------------------------------------

resource "google_project_iam_member" "build" {
  for_each = toset(["roles/logging.logWriter"])

  project = var.project_id
  role    = each.value
  member  = google_service_account.build.member
}

resource "google_artifact_registry_repository_iam_member" "build_writer" {
  project    = var.project_id
  location   = var.region
  repository = google_artifact_registry_repository.functions.name
  role       = "roles/artifactregistry.writer"
  member     = google_service_account.build.member
}

resource "google_storage_bucket_iam_member" "build_reader" {
  bucket = google_storage_bucket.bundles.name
  role   = "roles/storage.objectViewer"
  member = google_service_account.build.member
}

# Cloud Functions stages each deployment's source in its own gcf-v2-sources-* bucket.
resource "google_project_iam_member" "build_staged_source_reader" {
  project = var.project_id
  role    = "roles/storage.objectViewer"
  member  = google_service_account.build.member

  condition {
    title       = "gcf-staged-sources-only"
    description = "Only the buckets where Cloud Functions stages sources."
    expression  = "resource.name.startsWith(\"projects/_/buckets/gcf-v2-sources-\")"
  }
}

# --- Vertex AI: only the functions that ask the model, only when Gemini runs on Vertex ---------

resource "google_project_iam_member" "vertex_user" {
  for_each = { for name, f in local.functions : name => f if f.asks_model && var.gemini_vertexai }

  project = var.project_id
  role    = "roles/aiplatform.user"
  member  = google_service_account.function[each.key].member
}

# --- Telemetry: every function writes its traces and metrics (shared/telemetry.py, exporter gcp) -
# Cloud Trace and Cloud Monitoring take writes per project: there is no narrower resource to grant
# on, and these two roles only write (no read of traces, metrics or anything else).

locals {
  telemetry_roles = ["roles/cloudtrace.agent", "roles/monitoring.metricWriter"]
  telemetry_grants = {
    for pair in setproduct(keys(local.functions), local.telemetry_roles) :
    "${pair[0]}/${pair[1]}" => { function = pair[0], role = pair[1] }
  }
}

resource "google_project_iam_member" "telemetry_writer" {
  for_each = local.telemetry_grants

  project = var.project_id
  role    = each.value.role
  member  = google_service_account.function[each.value.function].member
}

output "intake_url" {
  description = "Base URL of the authenticated HTTP intake (POST <url>/runs, GET <url>/runs/{id})."
  value       = google_cloudfunctions2_function.function["orchestrator-intake"].url
}

output "intake_topic" {
  description = "Pub/Sub topic ID that starts runs."
  value       = google_pubsub_topic.intake.id
}

output "intake_dead_letter_subscription" {
  description = "Pull subscription holding intake messages that could not be delivered."
  value       = google_pubsub_subscription.intake_dead_letter.id
}

output "function_urls" {
  description = "URL of every function, by name."
  value       = { for name, f in google_cloudfunctions2_function.function : name => f.url }
}

output "functions_url" {
  description = "Base URL Cloud Tasks appends a function name to (CHIMERA_FUNCTIONS_URL)."
  value       = local.functions_url
}

output "queue_names" {
  description = "Cloud Tasks queue resource names, by queue."
  value       = { for name, q in google_cloud_tasks_queue.queue : name => q.id }
}

output "service_accounts" {
  description = "Service account emails: one per function, plus the tasks, trigger and build identities."
  value = merge(
    { for name, sa in google_service_account.function : name => sa.email },
    {
      tasks          = google_service_account.tasks.email
      intake-trigger = google_service_account.intake_trigger.email
      build          = google_service_account.build.email
    },
  )
}

output "secret_ids" {
  description = "Secret Manager secrets to fill with `gcloud secrets versions add`, by vendor key."
  value       = { for name, s in google_secret_manager_secret.vendor : name => s.secret_id }
}

output "firestore_database" {
  description = "Firestore database holding the runs (collection runs, subcollections steps and events)."
  value       = google_firestore_database.state.name
}

output "bundle_bucket" {
  description = "Bucket holding the function source bundles."
  value       = google_storage_bucket.bundles.name
}

output "intake_dead_letter_policy" {
  description = "What configure_intake_dead_letter.sh applies to the Eventarc subscription of orchestrator-pubsub."
  value = {
    project               = var.project_id
    location              = var.region
    trigger               = google_cloudfunctions2_function.function["orchestrator-pubsub"].event_trigger[0].trigger
    dead_letter_topic     = google_pubsub_topic.intake_dead_letter.id
    max_delivery_attempts = var.intake_max_delivery_attempts
    min_retry_delay       = "${var.intake_min_retry_delay}s"
    max_retry_delay       = "${var.intake_max_retry_delay}s"
    pubsub_service_agent  = local.pubsub_service_agent
  }

  precondition {
    condition     = var.intake_min_retry_delay <= var.intake_max_retry_delay
    error_message = "intake_min_retry_delay must not exceed intake_max_retry_delay."
  }
}

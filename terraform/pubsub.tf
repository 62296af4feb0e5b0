# Runs start from messages on the intake topic, delivered by an Eventarc trigger (declared on the
# orchestrator-pubsub function, functions.tf) with retries. A message the function keeps
# rejecting goes to the dead-letter topic, whose subscription keeps it for inspection.
#
# Eventarc creates and owns the trigger's subscription, so Terraform cannot set its dead-letter
# and retry policy; configure_intake_dead_letter.sh applies them (from `terraform output -json
# intake_dead_letter_policy`) after every apply: cloudbuild.yaml runs it.

locals {
  pubsub_service_agent = "serviceAccount:service-${data.google_project.this.number}@gcp-sa-pubsub.iam.gserviceaccount.com"
}

resource "google_pubsub_topic" "intake" {
  project      = var.project_id
  name         = var.intake_topic
  kms_key_name = var.pubsub_kms_key

  # Lets an operator replay recent requests with a seek after an outage.
  message_retention_duration = "86400s"

  depends_on = [google_project_service.api]
}

resource "google_pubsub_topic" "intake_dead_letter" {
  project      = var.project_id
  name         = "${var.intake_topic}-dead-letter"
  kms_key_name = var.pubsub_kms_key

  depends_on = [google_project_service.api]
}

# Without a subscription, dead letters would be dropped.
resource "google_pubsub_subscription" "intake_dead_letter" {
  project = var.project_id
  name    = "${var.intake_topic}-dead-letter"
  topic   = google_pubsub_topic.intake_dead_letter.id

  message_retention_duration = "604800s"
  ack_deadline_seconds       = 60

  expiration_policy {
    ttl = "" # never expires
  }
}

resource "google_pubsub_topic_iam_member" "intake_publisher" {
  for_each = toset(var.intake_publishers)

  project = var.project_id
  topic   = google_pubsub_topic.intake.name
  role    = "roles/pubsub.publisher"
  member  = each.value
}

# Pub/Sub forwards undeliverable messages as its own service agent.
resource "google_pubsub_topic_iam_member" "dead_letter_publisher" {
  project = var.project_id
  topic   = google_pubsub_topic.intake_dead_letter.name
  role    = "roles/pubsub.publisher"
  member  = local.pubsub_service_agent
}

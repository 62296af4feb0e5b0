# Vendor credentials. Terraform creates each secret empty and never sees a value: versions are
# added out of band (`gcloud secrets versions add`, docs/deploy.md) so no key lands in state.
# `readers` are the only functions whose service accounts may access the secret, and the only
# ones that get it as an environment variable.
locals {
  secrets = {
    "clearbit-key" = {
      env     = "CHIMERA_CLEARBIT_KEY"
      readers = ["tool-clearbit"]
    }
    "jira-token" = {
      env     = "CHIMERA_JIRA_TOKEN"
      readers = ["tool-jira"]
    }
    "sendgrid-key" = {
      env     = "CHIMERA_SENDGRID_KEY"
      readers = ["tool-sendgrid"]
    }
    "slack-token" = {
      env     = "CHIMERA_SLACK_TOKEN"
      readers = ["tool-slack"]
    }
    # The functions that ask the model (local.functions' asks_model): the orchestrator plans
    # with Gemini, tool-sendgrid drafts the welcome email with it. On Vertex AI no key is used.
    "gemini-api-key" = {
      env                = "CHIMERA_GEMINI_API_KEY"
      readers            = ["orchestrator", "tool-sendgrid"]
      unused_with_vertex = true
    }
  }

  # One accessor binding per (secret, reader), keyed "<function>/<secret>"; none for a secret
  # the configuration does not use.
  secret_reads = {
    for pair in flatten([
      for secret, s in local.secrets : [
        for function in s.readers : { function = function, secret = secret, env = s.env }
      ] if !(var.gemini_vertexai && try(s.unused_with_vertex, false))
    ]) : "${pair.function}/${pair.secret}" => pair
  }
}

resource "google_secret_manager_secret" "vendor" {
  for_each = local.secrets

  project   = var.project_id
  secret_id = "chimera-${each.key}"

  replication {
    auto {}
  }

  depends_on = [google_project_service.api]
}

# Secret-level, never project-level: a function reads its own credentials and nobody else's.
resource "google_secret_manager_secret_iam_member" "reader" {
  for_each = local.secret_reads

  project   = var.project_id
  secret_id = google_secret_manager_secret.vendor[each.value.secret].secret_id
  role      = "roles/secretmanager.secretAccessor"
  member    = google_service_account.function[each.value.function].member
}

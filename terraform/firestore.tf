# Run state: collection `runs`, one document per run, subcollections `steps` and `events`.
resource "google_firestore_database" "state" {
  project     = var.project_id
  name        = var.firestore_database
  location_id = var.firestore_location
  type        = "FIRESTORE_NATIVE"

  point_in_time_recovery_enablement = "POINT_IN_TIME_RECOVERY_ENABLED"
  delete_protection_state           = "DELETE_PROTECTION_ENABLED"
  # `terraform destroy` forgets the database instead of deleting the audit trail.
  deletion_policy = "ABANDON"

  depends_on = [google_project_service.api]
}

# `chimera runs list --status parked`: runs of one status, newest first.
resource "google_firestore_index" "runs_by_status" {
  project    = var.project_id
  database   = google_firestore_database.state.name
  collection = "runs"

  fields {
    field_path = "status"
    order      = "ASCENDING"
  }
  fields {
    field_path = "created_at"
    order      = "DESCENDING"
  }
}

# `chimera runs list --attention FLAG`: runs carrying a flag, newest first; with --status too.
resource "google_firestore_index" "runs_by_attention" {
  project    = var.project_id
  database   = google_firestore_database.state.name
  collection = "runs"

  fields {
    field_path   = "attention"
    array_config = "CONTAINS"
  }
  fields {
    field_path = "created_at"
    order      = "DESCENDING"
  }
}

resource "google_firestore_index" "runs_by_status_and_attention" {
  project    = var.project_id
  database   = google_firestore_database.state.name
  collection = "runs"

  fields {
    field_path = "status"
    order      = "ASCENDING"
  }
  fields {
    field_path   = "attention"
    array_config = "CONTAINS"
  }
  fields {
    field_path = "created_at"
    order      = "DESCENDING"
  }
}

# Nested maps that no query filters on: not indexing them keeps writes cheap and far from
# the per-document index-entry limit as plans, outputs and event details grow.
resource "google_firestore_field" "unindexed" {
  for_each = {
    "runs.plan"     = ["runs", "plan"]
    "runs.steps"    = ["runs", "steps"]
    "runs.request"  = ["runs", "request"]
    "steps.output"  = ["steps", "output"]
    "events.detail" = ["events", "detail"]
  }
  project    = var.project_id
  database   = google_firestore_database.state.name
  collection = each.value[0]
  field      = each.value[1]

  index_config {}
}

# Retention (CHIMERA_RETENTION_DAYS): a finished run's document and every document under it get
# `expire_at` (its last change + the retention), and Firestore's TTL deletes each once it is
# past, usually within a day. Every collection group carries the policy because a deleted
# document's subcollections stay; parked and waiting runs never have the field. Not indexed:
# no query reads it, and an index on an ever-growing timestamp is a write hotspot.
resource "google_firestore_field" "expire_at" {
  for_each = {
    "runs"   = "runs"
    "steps"  = "steps"
    "events" = "events"
  }
  project    = var.project_id
  database   = google_firestore_database.state.name
  collection = each.value
  field      = "expire_at"

  index_config {}
  ttl_config {}
}

# `chimera runs prune`: finished runs by status, oldest change first.
resource "google_firestore_index" "runs_by_status_and_updated" {
  project    = var.project_id
  database   = google_firestore_database.state.name
  collection = "runs"

  fields {
    field_path = "status"
    order      = "ASCENDING"
  }
  fields {
    field_path = "updated_at"
    order      = "ASCENDING"
  }
}

# The console's search (shared/firestore_queries.py): runs by a business key or company word,
# newest first.
resource "google_firestore_index" "runs_by_search_key" {
  project    = var.project_id
  database   = google_firestore_database.state.name
  collection = "runs"

  fields {
    field_path   = "search_keys"
    array_config = "CONTAINS"
  }
  fields {
    field_path = "created_at"
    order      = "DESCENDING"
  }
}

# The console's tool filter: runs whose current step is a tool, newest first; with a status too.
resource "google_firestore_index" "runs_by_current_tool" {
  project    = var.project_id
  database   = google_firestore_database.state.name
  collection = "runs"

  fields {
    field_path   = "current_tools"
    array_config = "CONTAINS"
  }
  fields {
    field_path = "created_at"
    order      = "DESCENDING"
  }
}

resource "google_firestore_index" "runs_by_status_and_current_tool" {
  project    = var.project_id
  database   = google_firestore_database.state.name
  collection = "runs"

  fields {
    field_path = "status"
    order      = "ASCENDING"
  }
  fields {
    field_path   = "current_tools"
    array_config = "CONTAINS"
  }
  fields {
    field_path = "created_at"
    order      = "DESCENDING"
  }
}

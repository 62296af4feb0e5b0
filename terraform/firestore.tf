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

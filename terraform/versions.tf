# Provider and state. The GCS backend is configured at `terraform init -backend-config=...`
# (see cloudbuild.yaml and docs/deploy.md), so one configuration serves every environment.
terraform {
  required_version = ">= 1.6"

  required_providers {
    google = {
      source  = "hashicorp/google"
      version = "~> 6.0"
    }
  }

  backend "gcs" {}
}

provider "google" {
  project               = var.project_id
  region                = var.region
  user_project_override = true
  billing_project       = var.project_id

  default_labels = merge(var.labels, {
    app = "chimera"
    env = var.environment
  })
}

data "google_project" "this" {
  project_id = var.project_id
}

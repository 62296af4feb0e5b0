# The Cloud Tasks queues between the functions. The numbers mirror shared/queues.py (QUEUES);
# tests/unit/test_terraform.py compares the two, so change both together.
# Backoffs are in seconds; `target` is the function that serves the queue's tasks.
locals {
  queues = {
    # Decisions are cheap and idempotent: retry fast, many at once.
    "orchestrator" = {
      target                    = "orchestrator"
      max_attempts              = 100
      min_backoff               = 0.1
      max_backoff               = 10
      max_doublings             = 4
      max_dispatches_per_second = 500
      max_concurrent_dispatches = 100
    }
    "tool-clearbit" = {
      target                    = "tool-clearbit"
      max_attempts              = 40
      min_backoff               = 1
      max_backoff               = 60
      max_doublings             = 5
      max_dispatches_per_second = 50
      max_concurrent_dispatches = 20
    }
    "tool-jira" = {
      target                    = "tool-jira"
      max_attempts              = 40
      min_backoff               = 1
      max_backoff               = 60
      max_doublings             = 5
      max_dispatches_per_second = 10
      max_concurrent_dispatches = 10
    }
    "tool-sendgrid" = {
      target                    = "tool-sendgrid"
      max_attempts              = 40
      min_backoff               = 1
      max_backoff               = 60
      max_doublings             = 5
      max_dispatches_per_second = 50
      max_concurrent_dispatches = 20
    }
    # Slack allows about one message per second per channel; its 429s carry Retry-After.
    "tool-slack" = {
      target                    = "tool-slack"
      max_attempts              = 40
      min_backoff               = 1
      max_backoff               = 60
      max_doublings             = 5
      max_dispatches_per_second = 20
      max_concurrent_dispatches = 10
    }
  }
}

resource "google_cloud_tasks_queue" "queue" {
  for_each = local.queues

  project  = var.project_id
  location = var.region
  name     = each.key

  rate_limits {
    max_dispatches_per_second = each.value.max_dispatches_per_second
    max_concurrent_dispatches = each.value.max_concurrent_dispatches
  }

  # The queue is the one layer that retries (see STYLE.md); vendor SDK retries are off.
  retry_config {
    max_attempts  = each.value.max_attempts
    min_backoff   = format("%gs", each.value.min_backoff)
    max_backoff   = format("%gs", each.value.max_backoff)
    max_doublings = each.value.max_doublings
  }

  stackdriver_logging_config {
    sampling_ratio = var.tasks_log_sampling_ratio
  }

  depends_on = [google_project_service.api]
}

# Metrics from the functions' JSON logs (CHIMERA_LOG_FORMAT=json: one JSON object per line,
# which Cloud Logging stores as jsonPayload) and the alerts on them.
#
# What the code logs (shared/logs.py puts these fields at the top level of each JSON line):
#   - once per finished step, from a tool function: `latency_ms` and `tool` (log context);
#   - once per run parked for a human, from the orchestrator: `outcome` = "parked" (+ run_id).

locals {
  chimera_services = "resource.type=\"cloud_run_revision\" AND resource.labels.service_name=(${join(" OR ", [for name in keys(local.functions) : "\"${name}\""])})"
}

resource "google_logging_metric" "step_latency" {
  project     = var.project_id
  name        = "chimera/step_latency"
  description = "Latency of each Chimera step, by tool, from the latency_ms field of the step log."
  filter      = "${local.chimera_services} AND jsonPayload.latency_ms:* AND jsonPayload.tool:*"

  metric_descriptor {
    metric_kind  = "DELTA"
    value_type   = "DISTRIBUTION"
    unit         = "ms"
    display_name = "Chimera step latency"

    labels {
      key         = "tool"
      value_type  = "STRING"
      description = "The tool the step called."
    }
  }

  value_extractor = "EXTRACT(jsonPayload.latency_ms)"
  label_extractors = {
    tool = "EXTRACT(jsonPayload.tool)"
  }

  # 1 ms to about 12 minutes, about 40% per bucket.
  bucket_options {
    exponential_buckets {
      num_finite_buckets = 40
      growth_factor      = 1.4
      scale              = 1
    }
  }

  depends_on = [google_project_service.api]
}

resource "google_logging_metric" "parked_runs" {
  project     = var.project_id
  name        = "chimera/parked_runs"
  description = "Runs Chimera parked for a human (it could not go on by itself)."
  filter      = "resource.type=\"cloud_run_revision\" AND resource.labels.service_name=\"orchestrator\" AND jsonPayload.outcome=\"parked\""

  metric_descriptor {
    metric_kind  = "DELTA"
    value_type   = "INT64"
    unit         = "1"
    display_name = "Chimera parked runs"
  }

  depends_on = [google_project_service.api]
}

resource "google_monitoring_alert_policy" "step_latency_p99" {
  project      = var.project_id
  display_name = "Chimera step latency p99 (${var.environment})"
  combiner     = "OR"

  conditions {
    display_name = "p99 step latency above ${var.step_latency_p99_threshold_ms} ms"

    condition_threshold {
      filter          = "metric.type=\"logging.googleapis.com/user/${google_logging_metric.step_latency.name}\" AND resource.type=\"cloud_run_revision\""
      comparison      = "COMPARISON_GT"
      threshold_value = var.step_latency_p99_threshold_ms
      duration        = "600s"

      aggregations {
        alignment_period     = "300s"
        per_series_aligner   = "ALIGN_DELTA"
        cross_series_reducer = "REDUCE_PERCENTILE_99"
        group_by_fields      = ["metric.label.tool"]
      }

      trigger {
        count = 1
      }
    }
  }

  documentation {
    mime_type = "text/markdown"
    content   = "A Chimera tool's p99 step latency is close to the dispatch deadline (${var.dispatch_deadline}s): tasks will start to time out and retry. Check the vendor's status and the tool function's logs (label tool)."
  }

  alert_strategy {
    auto_close = "86400s"
  }

  notification_channels = var.notification_channels
}

resource "google_monitoring_alert_policy" "queue_backlog" {
  project      = var.project_id
  display_name = "Chimera queue backlog (${var.environment})"
  combiner     = "OR"

  conditions {
    display_name = "Queue depth above ${var.queue_backlog_threshold} tasks"

    condition_threshold {
      filter          = "metric.type=\"cloudtasks.googleapis.com/queue/depth\" AND resource.type=\"cloud_tasks_queue\" AND resource.label.queue_id=one_of(${join(", ", [for name in keys(local.queues) : "\"${name}\""])})"
      comparison      = "COMPARISON_GT"
      threshold_value = var.queue_backlog_threshold
      duration        = "600s"

      aggregations {
        alignment_period     = "60s"
        per_series_aligner   = "ALIGN_MAX"
        cross_series_reducer = "REDUCE_MAX"
        group_by_fields      = ["resource.label.queue_id"]
      }

      trigger {
        count = 1
      }
    }
  }

  documentation {
    mime_type = "text/markdown"
    content   = "A Chimera queue is backing up: its target function is failing (tasks retrying), throttled by the queue's rate limits, or a vendor is down. See the queue in Cloud Tasks and the target function's logs."
  }

  alert_strategy {
    auto_close = "86400s"
  }

  notification_channels = var.notification_channels

  depends_on = [google_project_service.api]
}

resource "google_monitoring_alert_policy" "parked_runs" {
  project      = var.project_id
  display_name = "Chimera run parked (${var.environment})"
  combiner     = "OR"

  conditions {
    display_name = "A run was parked"

    condition_threshold {
      filter          = "metric.type=\"logging.googleapis.com/user/${google_logging_metric.parked_runs.name}\" AND resource.type=\"cloud_run_revision\""
      comparison      = "COMPARISON_GT"
      threshold_value = 0
      duration        = "0s"

      aggregations {
        alignment_period     = "300s"
        per_series_aligner   = "ALIGN_DELTA"
        cross_series_reducer = "REDUCE_SUM"
      }

      trigger {
        count = 1
      }
    }
  }

  documentation {
    mime_type = "text/markdown"
    content   = "A Chimera run is parked and waits for a person. Find it in Firestore (collection runs, status parked) and read its events subcollection."
  }

  alert_strategy {
    auto_close = "86400s"
  }

  notification_channels = var.notification_channels
}
